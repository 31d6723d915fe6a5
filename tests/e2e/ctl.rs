//! The admin-API commands (`trellis status`, `reload`, `targets register|deregister`, `scale`,
//! `instances protect|unprotect`) against a running trellis: what an operator sees on the terminal, and
//! the exit status a script sees.

use std::process::Output;
use std::time::Duration;

use crate::support::config::{
    admin_with_token, checked_target_group, forward_to, listener, rule, service, target_group,
    targets,
};
use crate::support::servers::{closed_port_addr, Tracking};
use crate::support::trellis::bin;
use crate::support::{eventually, free_port, Echo, Trellis};

/// Runs `trellis ARGS...` to completion.
async fn ctl(args: &[&str]) -> Output {
    tokio::process::Command::new(bin())
        .args(args)
        .output()
        .await
        .expect("run trellis")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts exit status 0 and returns stdout.
fn succeeded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

/// Asserts exit status 1 and returns stderr.
fn failed(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
    stderr(out)
}

/// One service on `port` forwarding to group `web` with `addrs` (health checks off), one rule.
fn one_group(port: u16, addrs: &[String]) -> String {
    one_group_with(port, addrs, "")
}

/// Like [`one_group`], with `more_rules` after the first rule of the listener.
fn one_group_with(port: u16, addrs: &[String], more_rules: &str) -> String {
    [
        service("shop", &["*"]),
        listener(port, &forward_to("web")),
        rule("api", 10, API, &forward_to("web")),
        more_rules.to_owned(),
        target_group("web", &targets(addrs)),
    ]
    .concat()
}

const API: &str = r#"{ path = { prefix = "/api" } }"#;

fn admin_of(trellis: &Trellis) -> String {
    format!(
        "127.0.0.1:{}",
        trellis.admin_port.expect("harness admin port")
    )
}

/// The whitespace-separated cells of the first line of `text` that mentions `needle`.
fn row<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
        .split_whitespace()
        .collect()
}

#[tokio::test]
async fn status_prints_the_listeners_and_every_target_with_its_state() {
    let echo = Echo::start("blue").await;
    let port = free_port();
    let trellis = Trellis::start(&one_group(port, &[echo.addr()]), &[port]).await;
    let state = trellis.target("web", &echo.addr()).await["state"]
        .as_str()
        .expect("state")
        .to_owned();

    let text = succeeded(&ctl(&["status", "--admin", &admin_of(&trellis)]).await);
    assert!(text.starts_with("trellis "), "{text}");
    let header = text.lines().next().unwrap();
    for part in ["config ", "loaded ", "targets changed "] {
        assert!(header.contains(part), "no {part:?} in {header:?}");
    }
    assert_eq!(
        row(&text, "SERVICE"),
        ["SERVICE", "HOSTS", "LISTENER", "PROTOCOL", "ADDRESS", "RULES"]
    );
    let listener_address = format!("127.0.0.1:{port}");
    assert_eq!(
        row(&text, &listener_address),
        ["shop", "*", "web", "http", listener_address.as_str(), "1"]
    );
    assert_eq!(
        row(&text, "TARGET GROUP")[..4],
        ["TARGET", "GROUP", "TARGET", "SOURCE"]
    );
    let target = row(&text, &echo.addr());
    assert_eq!(
        target[..5],
        ["web", &echo.addr(), "file", "1", &state],
        "{text}"
    );
}

#[tokio::test]
async fn status_json_is_the_admin_apis_json() {
    let echo = Echo::start("blue").await;
    let port = free_port();
    let trellis = Trellis::start(&one_group(port, &[echo.addr()]), &[port]).await;
    let admin = format!("http://{}/", admin_of(&trellis));

    let text = succeeded(&ctl(&["status", "--json", "--admin", &admin]).await);
    let status: serde_json::Value = serde_json::from_str(&text).expect("status --json is JSON");
    assert_eq!(status["target_groups"][0]["name"], "web");
    assert_eq!(
        status["target_groups"][0]["targets"][0]["address"],
        echo.addr()
    );
    assert!(text.contains("\n  \""), "pretty-printed:\n{text}");
}

#[tokio::test]
async fn status_finds_the_admin_api_through_the_configuration() {
    let echo = Echo::start("blue").await;
    let port = free_port();
    let trellis = Trellis::start(&one_group(port, &[echo.addr()]), &[port]).await;
    let config = trellis.config_path().to_str().expect("utf-8 path");

    let text = succeeded(&ctl(&["status", "-c", config]).await);
    assert_eq!(row(&text, &echo.addr())[..2], ["web", &echo.addr()]);
}

#[tokio::test]
async fn status_without_a_daemon_says_where_it_looked() {
    let closed = closed_port_addr();
    let err = failed(&ctl(&["status", "--admin", &closed]).await);
    assert!(
        err.contains(&format!(
            "cannot reach the admin API at http://{closed}: connection refused — is trellis running?"
        )),
        "{err}"
    );
}

#[tokio::test]
async fn the_token_comes_from_the_configuration_or_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let wrong_file = dir.path().join("wrong-token");
    std::fs::write(&wrong_file, "guess").unwrap();
    let (admin_port, port) = (free_port(), free_port());
    let (admin_table, token_file) =
        admin_with_token(dir.path(), &format!("127.0.0.1:{admin_port}"));
    let config = admin_table + &one_group(port, &["127.0.0.1:1".to_owned()]);
    let trellis = Trellis::start(&config, &[port, admin_port]).await;
    let admin = format!("127.0.0.1:{admin_port}");
    let config = trellis.config_path().to_str().expect("utf-8 path");
    let token = token_file.to_str().unwrap();

    succeeded(&ctl(&["status", "-c", config]).await);
    succeeded(&ctl(&["status", "--admin", &admin, "--token-file", token]).await);
    let err = failed(&ctl(&["status", "--admin", &admin]).await);
    assert!(
        err.contains("Bearer") && err.contains("--token-file"),
        "{err}"
    );
    let wrong = wrong_file.to_str().unwrap();
    let err = failed(&ctl(&["status", "-c", config, "--token-file", wrong]).await);
    assert!(err.contains("Bearer"), "{err}");
}

#[tokio::test]
async fn reload_prints_the_summary_or_every_error() {
    let echo = Echo::start("blue").await;
    let port = free_port();
    let config = one_group(port, &[echo.addr()]);
    let trellis = Trellis::start(&config, &[port]).await;
    let admin = admin_of(&trellis);

    trellis.write_config(&config.replace("/api", "/v2"));
    let text = succeeded(&ctl(&["reload", "--admin", &admin]).await);
    let sha = trellis.status().await["config"]["sha256"]
        .as_str()
        .expect("sha256")
        .to_owned();
    assert!(text.starts_with("reloaded: "), "{text}");
    assert!(text.contains(&format!("(sha256 {})", &sha[..12])), "{text}");

    // Two mistakes: a duplicate rule priority and a weight out of range.
    let again = rule("again", 10, API, &forward_to("web"));
    let broken = one_group_with(port, &[echo.addr()], &again)
        + "[[target_group]]\nname = \"heavy\"\ntargets = [{ address = \"127.0.0.1:1\", weight = 5000 }]\n";
    trellis.write_config(&broken);
    // `-c` with the broken file: its [admin] table still says where the daemon listens.
    let config = trellis.config_path().to_str().expect("utf-8 path");
    let err = failed(&ctl(&["reload", "-c", config]).await);
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines[0].starts_with("trellis: reload refused: "), "{err}");
    assert!(lines.len() >= 3, "{err}");
    assert!(
        lines[1..].iter().all(|l| l.contains("trellis.toml:")),
        "{err}"
    );
    assert_eq!(trellis.status().await["config"]["sha256"], sha.as_str());
}

#[tokio::test]
async fn targets_register_and_deregister_say_what_became_of_the_target() {
    let echo = Echo::start("blue").await;
    let port = free_port();
    let config = [
        service("shop", &["*"]),
        listener(port, &forward_to("pool")),
        target_group("pool", "[]\nderegistration_delay = \"1s\""),
    ]
    .concat();
    let trellis = Trellis::start(&config, &[port]).await;
    let admin = admin_of(&trellis);
    let addr = echo.addr();

    let text = succeeded(
        &ctl(&[
            "targets", "register", "pool", &addr, "--weight", "3", "--admin", &admin,
        ])
        .await,
    );
    assert!(
        text.starts_with(&format!("{addr} registered in pool with weight 3: ")),
        "{text}"
    );
    let status = succeeded(&ctl(&["status", "--admin", &admin]).await);
    assert_eq!(
        row(&status, &addr)[..4],
        ["pool", &addr, "api", "3"],
        "{status}"
    );

    // Registering again without --weight keeps the weight; with it, changes it.
    let text = succeeded(&ctl(&["targets", "register", "pool", &addr, "--admin", &admin]).await);
    assert!(
        text.starts_with(&format!("{addr} updated in pool with weight 3: ")),
        "{text}"
    );
    let text = succeeded(
        &ctl(&[
            "targets", "register", "pool", &addr, "--weight", "1", "--admin", &admin,
        ])
        .await,
    );
    assert!(
        text.starts_with(&format!("{addr} updated in pool with weight 1: ")),
        "{text}"
    );

    let text = succeeded(&ctl(&["targets", "deregister", "pool", &addr, "--admin", &admin]).await);
    assert_eq!(text, format!("{addr} deregistered from pool: draining\n"));

    let err = failed(&ctl(&["targets", "register", "nope", &addr, "--admin", &admin]).await);
    assert!(err.contains("no target group named \"nope\""), "{err}");
    let err = failed(
        &ctl(&[
            "targets",
            "deregister",
            "pool",
            "127.0.0.1:1",
            "--admin",
            &admin,
        ])
        .await,
    );
    assert!(err.contains("not registered"), "{err}");
    // Refused before any request is sent: the usage error of every command line tool.
    let out = ctl(&["targets", "register", "pool", "[::1]:1", "--weight", "1000"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("1000"), "{}", stderr(&out));
}

/// A scaling group `web` (min 1, max 2, no policy: only the operator moves desired) of `trellis echo`
/// processes in target group `pool`, behind a listener on `port`.
fn scaled_pool(port: u16) -> String {
    // 40 ports, probably free (the provider checks each one before use).
    let (lo, hi) = crate::support::instance_ports();
    [
        service("web", &["*"]),
        listener(port, &forward_to("pool")),
        checked_target_group(
            "pool",
            "[]",
            "path = \"/healthz\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nhealthy_threshold = 1",
            "deregistration_delay = \"1s\"",
        ),
        format!(
            "[[scaling_group]]\nname = \"web\"\ntarget_group = \"pool\"\nmin = 1\nmax = 2\ndesired = 1\n\
             evaluation_period = \"500ms\"\nscale_in_window = \"1500ms\"\ncooldown = \"1s\"\ninstance_warmup = \"500ms\"\n\
             [scaling_group.launch]\nprovider = \"process\"\n\
             command = [\"{{self}}\", \"echo\", \"--listen\", \"127.0.0.1:{{port}}\", \"--name\", \"{{id}}\", \"--workers\", \"1\"]\n\
             ports = \"{lo}-{hi}\"\nstop_timeout = \"2s\"\n"
        ),
    ]
    .concat()
}

#[tokio::test]
async fn scale_and_instance_protection_say_what_the_daemon_did() {
    let port = free_port();
    let trellis = Trellis::start(&scaled_pool(port), &[port]).await;
    let admin = admin_of(&trellis);
    eventually(Duration::from_secs(30), "web-1 in service", || async {
        let group = &trellis.status().await["scaling_groups"][0];
        (group["in_service"] == 1 && group["instances"][0]["id"] == "web-1").then_some(())
    })
    .await;

    let text = succeeded(&ctl(&["scale", "web", "5", "--admin", &admin]).await);
    assert_eq!(
        text,
        "web: desired 2 (min 1, max 2) (asked for 5, clamped)\n"
    );
    let text = succeeded(&ctl(&["scale", "web", "2", "--admin", &admin]).await);
    assert_eq!(text, "web: desired 2 (min 1, max 2)\n");

    let text = succeeded(&ctl(&["instances", "protect", "web", "web-1", "--admin", &admin]).await);
    assert_eq!(text, "instance web-1 of web is protected from scale-in\n");
    let status = succeeded(&ctl(&["status", "--admin", &admin]).await);
    assert!(
        status.contains("\nSCALING GROUP web → target group pool: min 1, desired 2, max 2 ("),
        "{status}"
    );
    assert_eq!(
        row(&status, "INSTANCE"),
        ["INSTANCE", "ADDRESS", "LIFECYCLE", "AGE", "PID"]
    );
    let instance = row(&status, "web-1 ");
    assert!(instance.contains(&"(protected)"), "{status}");
    assert_eq!(
        row(&status, "desired 1 → 2")[1..],
        ["scale", "desired", "1", "→", "2:", "set", "by", "an", "operator"],
        "{status}"
    );
    let text =
        succeeded(&ctl(&["instances", "unprotect", "web", "web-1", "--admin", &admin]).await);
    assert_eq!(text, "instance web-1 of web is no longer protected\n");

    // The daemon's refusals, in its words, exit 1.
    let err = failed(&ctl(&["scale", "nope", "1", "--admin", &admin]).await);
    assert!(
        err.contains("no running scaling group named \"nope\""),
        "{err}"
    );
    let err = failed(&ctl(&["instances", "protect", "web", "web-99", "--admin", &admin]).await);
    assert!(err.contains("has no instance \"web-99\""), "{err}");
    // Refused before any request is sent.
    let out = ctl(&["scale", "web", "-1", "--admin", &admin]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[tokio::test]
async fn healthcheck_exits_zero_only_when_the_admin_api_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (admin_port, port) = (free_port(), free_port());
    let (admin_table, _) = admin_with_token(dir.path(), &format!("127.0.0.1:{admin_port}"));
    let config = admin_table + &one_group(port, &["127.0.0.1:1".to_owned()]);
    let trellis = Trellis::start(&config, &[port, admin_port]).await;
    let config = trellis.config_path().to_str().expect("utf-8 path");
    let admin = format!("127.0.0.1:{admin_port}");

    // The address and the token from the configuration, as a container's HEALTHCHECK would have them.
    let out = ctl(&["healthcheck", "-c", config]).await;
    assert_eq!(succeeded(&out), "");
    assert_eq!(stderr(&out), "");
    // Without the token the admin API refuses, and healthcheck says why.
    let err = failed(&ctl(&["healthcheck", "--admin", &admin]).await);
    assert!(err.contains("--token-file"), "{err}");
    // Nothing listening: unhealthy, at once.
    let closed = closed_port_addr();
    let err = failed(&ctl(&["healthcheck", "--admin", &closed, "--timeout", "1s"]).await);
    assert!(err.contains("connection refused"), "{err}");
}

#[tokio::test]
async fn a_server_that_is_not_trellis_on_the_admin_address_is_named_as_such() {
    // Plain HTTP answering `200 hello` to anything.
    let other = Tracking::start("other").await;
    let hint = "pass -c FILE (the configuration of the running trellis) or --admin URL";

    let err = failed(&ctl(&["status", "--admin", &other.addr()]).await);
    let want = format!(
        "trellis: {} answered but is not a trellis admin API (HTTP 200 OK: hello); it is the \
         --admin address: {hint}",
        other.addr()
    );
    assert_eq!(err.trim_end(), want);
    assert!(other.arrived() >= 1, "the request never reached the server");

    // A health check does not pass on any 200 (only on the admin API's, or `trellis echo`'s `ok`: the
    // compose files check echo backends with it).
    let err = failed(&ctl(&["healthcheck", "--admin", &other.addr()]).await);
    assert!(
        err.contains(&format!(
            "{} answered but is not a trellis admin API (HTTP 200 OK: hello)",
            other.addr()
        )),
        "{err}"
    );

    // The address from a configuration's [admin] table: the message names the file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trellis.toml");
    std::fs::write(&path, format!("[admin]\nlisten = \"{}\"\n", other.addr())).unwrap();
    let config = path.to_str().expect("utf-8 path");
    for args in [
        &["reload", "-c", config][..],
        &["targets", "register", "web", "127.0.0.1:1", "-c", config][..],
        &["scale", "web", "2", "-c", config][..],
    ] {
        let err = failed(&ctl(args).await);
        assert!(
            err.contains(&format!(
                "answered but is not a trellis admin API (HTTP 200 OK: hello); it is admin.listen \
                 of {config}: {hint}"
            )),
            "{args:?}: {err}"
        );
    }
}
