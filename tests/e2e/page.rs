//! The status page (`GET /` on the admin listener) in a real browser: headless Chromium loads it from a
//! running trellis, and the DOM it has rendered from `/v1/status` must show every target group and every
//! target with its state. A screenshot is kept as a test artifact.
//!
//! Chromium is found on `PATH` (`apt-get install chromium`). Without it the browser tests print a notice
//! and pass, except under CI (`CI` set), where they fail.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::client::{self, get};
use crate::support::config::{
    admin_with_token, checked_target_group, fixed, forward_to, listener, rule, service, targets,
};
use crate::support::process::ChildGuard;
use crate::support::servers::closed_port_addr;
use crate::support::{free_port, Echo, Trellis};

/// Probes every 200ms: two passes make a target healthy, two failures unhealthy.
const CHECK: &str = "path = \"/healthz\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\n\
                     healthy_threshold = 2\nunhealthy_threshold = 2";

const WAIT: Duration = Duration::from_secs(10);

/// Chromium is killed (with every process it started) if it has not exited by then.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

/// Virtual time given to the page before the DOM is dumped: the page polls at once and every 2 s, so it
/// renders three polls (virtual time waits for the network, so no poll is cut short).
const VIRTUAL_TIME_MS: u32 = 5000;

#[tokio::test]
async fn the_admin_listener_serves_the_page_at_its_root() {
    let port = free_port();
    let config = service("web", &["*"]) + &listener(port, &fixed(200, "ok"));
    let trellis = Trellis::start(&config, &[port]).await;
    let url = format!("http://127.0.0.1:{}/", admin_port(&trellis));
    let c = reqwest::Client::new();
    let resp = c.get(&url).send().await.expect("GET /");
    assert_eq!(resp.status(), 200);
    let header = |resp: &reqwest::Response, name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header(&resp, "content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(header(&resp, "cache-control").as_deref(), Some("no-cache"));
    let length = header(&resp, "content-length");
    let body = resp.text().await.expect("page body");
    assert!(body.starts_with("<!doctype html>"), "{body:.200}");
    assert!(
        body.contains("fetch(\"v1/status\""),
        "the page polls the status"
    );
    // Self-contained: nothing is loaded from anywhere else.
    for external in ["http://", "https://", "//fonts.", "<link", "src=\""] {
        assert!(!body.contains(external), "the page refers to {external:?}");
    }

    let head = c.head(&url).send().await.expect("HEAD /");
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "content-length"), length);
    assert_eq!(head.bytes().await.expect("HEAD body").len(), 0);
    let (status, reply) = trellis.admin(reqwest::Method::POST, "/", None).await;
    assert_eq!(status, 405, "{reply}");
}

#[tokio::test]
async fn the_page_shows_every_target_group_and_target_with_its_state() {
    let Some(chromium) = chromium() else {
        return;
    };
    let (a, b, c) = (
        Echo::start("a").await,
        Echo::start("b").await,
        Echo::start("c").await,
    );
    let dead = closed_port_addr();
    let port = free_port();
    let config = service("web", &["*"])
        + &listener(port, &forward_to("app"))
        + &rule(
            "mixed",
            10,
            r#"{ path = { prefix = "/mixed" } }"#,
            &forward_to("mixed"),
        )
        + &checked_target_group("app", &targets(&[a.addr(), b.addr()]), CHECK, "")
        + &checked_target_group("mixed", &targets(&[c.addr(), dead.clone()]), CHECK, "");
    let trellis = Trellis::start(&config, &[port]).await;
    let expected: BTreeMap<&str, BTreeMap<String, &str>> = BTreeMap::from([
        (
            "app",
            BTreeMap::from([(a.addr(), "healthy"), (b.addr(), "healthy")]),
        ),
        (
            "mixed",
            BTreeMap::from([(c.addr(), "healthy"), (dead.clone(), "unhealthy")]),
        ),
    ]);
    for (group, members) in &expected {
        for (address, state) in members {
            trellis.wait_state(group, address, state, WAIT).await;
        }
    }
    // Some traffic, a few of it 5xx (for the rates the page shows where trellis counts them), never
    // two 5xx in a row: that would eject the healthy target of "mixed" and make the group fail open.
    let http = client::http1();
    for path in ["/", "/mixed", "/", "/mixed?status=503"].repeat(3) {
        let status = get(&http, port, path).await.status;
        assert_eq!(status, if path.ends_with("503") { 503 } else { 200 });
    }

    let shot = artifacts_dir().join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let url = format!("http://127.0.0.1:{}/", admin_port(&trellis));
    let dom = render(&chromium, &url, Some(&shot)).await;
    let main = main_of(&dom);

    let shown = rendered_targets(&dom);
    let shown_map: BTreeMap<&str, BTreeMap<String, &str>> = shown
        .iter()
        .map(|(group, rows)| {
            let rows = rows.iter().map(|(a, s)| (a.clone(), s.as_str())).collect();
            (group.as_str(), rows)
        })
        .collect();
    assert_eq!(shown_map, expected, "what the page shows\n{main}");
    let row_count: usize = shown.iter().map(|(_, rows)| rows.len()).sum();
    assert_eq!((shown.len(), row_count), (2, 4), "each shown once\n{main}");
    let status = trellis.status().await;
    assert!(
        status["target_groups"]
            .as_array()
            .is_some_and(|groups| groups.iter().all(|g| g["failing_open"] == false)),
        "{status:#}"
    );
    assert!(!main.contains("data-failing-open"), "{main}");
    let dead_row = row_html(&dom, &dead);
    assert!(dead_row.contains("connect refused"), "{dead_row}");
    assert_eq!(
        attr(tag_with_id(&dom, "conn"), "data-connection"),
        Some("ok"),
        "the page says it is connected\n{main}"
    );
    let sha = status["config"]["sha256"]
        .as_str()
        .map(|s| s[..12].to_owned())
        .expect("config sha256 in /v1/status");
    assert!(dom.contains(&sha), "the header shows the config's sha256");
    for label in ["<dt>loaded</dt>", "<dt>changed</dt>"] {
        assert!(dom.contains(label), "the header has no {label}");
    }
    // Latency over the last poll interval, in the summary and per group (a dash here: the traffic came
    // before the page, and virtual time leaves none between its polls; deploy/loadtest/page-check.py
    // checks the figures in real time under load).
    assert!(
        dom.contains("id=\"latency-p50\""),
        "no latency tile\n{main}"
    );
    assert!(dom.contains("data-latency"), "no latency per group\n{main}");

    let png =
        std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", shot.display()));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let dimension =
        |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    assert_eq!((dimension(16), dimension(20)), (1400, 1000), "IHDR size");
    // A blank 1400x1000 page compresses to a few kilobytes; a rendered one is far larger.
    assert!(png.len() > 40_000, "screenshot of {} bytes", png.len());
    eprintln!("status page screenshot: {}", shot.display());
}

#[tokio::test]
async fn without_the_token_the_page_asks_for_it_and_shows_nothing() {
    let Some(chromium) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, port) = (free_port(), free_port());
    let echo = Echo::start("a").await;
    let (admin_table, _) = admin_with_token(dir.path(), &format!("127.0.0.1:{admin}"));
    let config = format!(
        "{admin_table}{}{}{}",
        service("web", &["*"]),
        listener(port, &forward_to("app")),
        checked_target_group("app", &targets(&[echo.addr()]), CHECK, ""),
    );
    let _trellis = Trellis::start(&config, &[port, admin]).await;
    let url = format!("http://127.0.0.1:{admin}/");
    let c = reqwest::Client::new();
    let status = |path: &str| {
        let req = c.get(format!("{url}{path}"));
        async move { req.send().await.expect("admin request").status().as_u16() }
    };
    assert_eq!(status("").await, 200, "the page itself needs no token");
    assert_eq!(status("v1/status").await, 401, "its data does");

    let dom = render(&chromium, &url, None).await;
    let prompt = tag_with_id(&dom, "auth");
    assert!(
        attr(prompt, "hidden").is_none(),
        "the token prompt is shown: {prompt}"
    );
    let says = dom
        .split_once(r#"<p id="auth-text">"#)
        .and_then(|(_, rest)| rest.split_once("</p>"))
        .map_or("", |(text, _)| text);
    assert!(says.contains("requires a bearer token"), "{says:?}");
    assert_eq!(
        attr(tag_with_id(&dom, "conn"), "data-connection"),
        Some("error")
    );
    assert!(rendered_targets(&dom).is_empty(), "no data shown");
    assert!(!dom.contains(&echo.addr()), "{}", main_of(&dom));
}

/// The admin port the harness chose.
fn admin_port(trellis: &Trellis) -> u16 {
    trellis
        .admin_port
        .expect("the harness chose the admin port")
}

/// The Chromium binary on `PATH`; `None` (after saying so) when there is none, unless under CI.
fn chromium() -> Option<PathBuf> {
    crate::support::tools::required(
        &[
            "chromium",
            "chromium-browser",
            "google-chrome",
            "google-chrome-stable",
        ],
        "chromium",
        "the status page in a browser",
    )
}

/// `target/test-artifacts` (of the target directory the binary under test was built in), created.
fn artifacts_dir() -> PathBuf {
    let bin = Path::new(crate::support::trellis::bin());
    let target = bin
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// Kills Chromium's whole process group (the browser, its renderers and helpers) when dropped.
struct Browser(ChildGuard);

impl Drop for Browser {
    fn drop(&mut self) {
        let group = libc::pid_t::try_from(self.0.pid()).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions; the group is the one Chromium leads.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
}

/// Loads `url` in headless Chromium with a fresh profile, lets the page run for [`VIRTUAL_TIME_MS`] of
/// virtual time, and returns the DOM it has then; writes a 1400x1000 screenshot to `screenshot` if given.
async fn render(chromium: &Path, url: &str, screenshot: Option<&Path>) -> String {
    let profile = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox", // the tests run as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1400,1000",
    ])
    .arg(format!("--virtual-time-budget={VIRTUAL_TIME_MS}"))
    .arg(format!("--user-data-dir={}", profile.path().display()));
    if let Some(path) = screenshot {
        cmd.arg(format!("--screenshot={}", path.display()));
    }
    cmd.arg("--dump-dom").arg(url);
    // Its own process group, so that a timeout kills every process it started.
    cmd.process_group(0);
    let mut browser = Browser(ChildGuard::spawn("chromium", cmd));
    match browser.0.wait_exit(CHROMIUM_TIMEOUT).await {
        None => panic!(
            "chromium did not finish within {CHROMIUM_TIMEOUT:?}\n{}",
            browser.0.report()
        ),
        Some(status) if !status.success() => {
            panic!("chromium failed: {status}\n{}", browser.0.report())
        }
        Some(_) => browser.0.stdout.text(),
    }
}

/// The page's rendered content: what is inside `<main id="app">` (not the script's source).
fn main_of(dom: &str) -> &str {
    dom.split_once(r#"<main id="app""#)
        .and_then(|(_, rest)| rest.split_once("</main>"))
        .map(|(main, _)| main)
        .unwrap_or_else(|| panic!("no <main id=\"app\"> in the DOM\n{dom}"))
}

/// The opening tag (its text between `<` and `>`) of the element with `id="ID"`.
fn tag_with_id<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!(" id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element with id {id:?}\n{dom}"));
    let start = dom[..at].rfind('<').map_or(0, |i| i + 1);
    let end = dom[at..].find('>').map_or(dom.len(), |i| at + i);
    &dom[start..end]
}

/// The value of attribute `name` in an opening tag's text (`""` for a bare attribute like `hidden`).
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    if let Some((_, rest)) = tag.split_once(&format!(" {name}=\"")) {
        return rest.split_once('"').map(|(value, _)| value);
    }
    tag.split_whitespace()
        .any(|word| word == name)
        .then_some("")
}

/// Every target group the page shows (`data-target-group`), in page order, with its target rows
/// (`data-target`, `data-state`).
fn rendered_targets(dom: &str) -> Vec<(String, Vec<(String, String)>)> {
    main_of(dom)
        .split(" data-target-group=\"")
        .skip(1)
        .map(|chunk| {
            let (name, rest) = chunk.split_once('"').expect("a closed attribute");
            let rows = rest
                .split("<tr ")
                .skip(1)
                .filter_map(|row| {
                    let tag = format!(" {}", row.split('>').next()?);
                    Some((
                        attr(&tag, "data-target")?.to_owned(),
                        attr(&tag, "data-state")?.to_owned(),
                    ))
                })
                .collect();
            (name.to_owned(), rows)
        })
        .collect()
}

/// The HTML of the row of target `address`.
fn row_html<'a>(dom: &'a str, address: &str) -> &'a str {
    let main = main_of(dom);
    let start = main
        .find(&format!(" data-target=\"{address}\""))
        .unwrap_or_else(|| panic!("no row for {address}\n{main}"));
    let row = &main[start..];
    row.split_once("</tr>").map_or(row, |(row, _)| row)
}

#[tokio::test]
async fn a_fleet_node_shows_its_fleet_in_the_header() {
    let Some(chromium) = chromium() else {
        return;
    };
    let Some(etcd) = crate::support::etcd::Etcd::start(1).await else {
        return;
    };
    let endpoints: Vec<String> = etcd.endpoints.iter().map(|e| format!("{e:?}")).collect();
    let node_file = format!(
        "[fleet]\nendpoints = [{}]\nprefix = \"/trellis/page\"\nnode = \"node-a\"\nbind = \"127.0.0.11\"\n",
        endpoints.join(", ")
    );
    let trellis = Trellis::start(&node_file, &[]).await;
    crate::support::eventually(
        std::time::Duration::from_secs(10),
        "the node in its own list of nodes",
        || async {
            let status = trellis.status().await;
            (status["fleet"]["nodes"][0]["node"] == "node-a").then_some(())
        },
    )
    .await;
    let url = format!("http://127.0.0.1:{}/", admin_port(&trellis));
    let dom = render(&chromium, &url, None).await;
    assert!(dom.contains("id=\"fleet-node\""), "{dom:.3000}");
    assert!(dom.contains(">1 node<"), "the fleet's nodes: {dom:.3000}");
    let header = dom
        .split("id=\"fleet-node\"")
        .nth(1)
        .expect("the fleet item");
    assert!(
        header.starts_with(" class=\"mono\">node-a<"),
        "{header:.200}"
    );
    assert!(
        dom.contains("id=\"fleet-store\" style=\"color:var(--green)\">connected<"),
        "{dom:.3000}"
    );
}
