//! systemd integration: the notify protocol spoken to a real `NOTIFY_SOCKET` (a datagram socket the test
//! binds, as systemd does), and `deploy/systemd/trellis.service` checked by `systemd-analyze verify`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::config::{forward_to, listener, service, target_group, targets};
use crate::support::{accepts, eventually, free_port, tools, Echo, Options, Trellis};

const WAIT: Duration = Duration::from_secs(10);

/// The service manager's end: every datagram trellis sends, one message each.
struct NotifySocket {
    socket: tokio::net::UnixDatagram,
    /// What `NOTIFY_SOCKET` says: a path, or `@name` for Linux's abstract namespace.
    address: String,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let socket = tokio::net::UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket {
            socket,
            address: path.display().to_string(),
            _dir: dir,
        }
    }

    /// A socket in the abstract namespace (`NOTIFY_SOCKET=@...`), which systemd uses too.
    fn bind_abstract() -> NotifySocket {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("trellis-test-notify-{}-{}", std::process::id(), free_port());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).expect("name");
        let socket = std::os::unix::net::UnixDatagram::bind_addr(&addr).expect("bind");
        socket.set_nonblocking(true).expect("nonblocking");
        NotifySocket {
            socket: tokio::net::UnixDatagram::from_std(socket).expect("tokio socket"),
            address: format!("@{name}"),
            _dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The next message, as its lines.
    async fn next(&self, what: &str) -> Vec<String> {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(WAIT, self.socket.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no notification within {WAIT:?} while waiting for {what}"))
            .expect("recv");
        String::from_utf8(buf[..n].to_vec())
            .expect("UTF-8")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The next message that is not a watchdog ping (those come at any time when enabled).
    async fn next_event(&self, what: &str) -> Vec<String> {
        loop {
            let message = self.next(what).await;
            if message != ["WATCHDOG=1"] {
                return message;
            }
        }
    }
}

fn status_of(message: &[String]) -> &str {
    message
        .iter()
        .find_map(|line| line.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("no STATUS= in {message:?}"))
}

/// A configuration with its own `[admin]` table, so that starting trellis waits for nothing: the test
/// itself waits for READY=1.
fn config(port: u16, admin: u16, backend: &Echo) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n{}",
        [
            service("shop", &["*"]),
            listener(port, &forward_to("web")),
            target_group("web", &targets(&[backend.addr()])),
        ]
        .concat()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_reloading_watchdog_and_stopping_reach_the_notify_socket() {
    let backend = Echo::start("web").await;
    let (port, admin) = (free_port(), free_port());
    let notify = NotifySocket::bind();
    let opts = Options {
        env: vec![
            ("NOTIFY_SOCKET".into(), notify.address.clone()),
            // 400 ms: pings every 200 ms.
            ("WATCHDOG_USEC".into(), "400000".into()),
        ],
        ..Options::default()
    };
    let mut trellis = Trellis::start_with(&config(port, admin, &backend), &[], opts).await;

    // READY=1 comes first, and only once the proxy and admin ports are bound: they accept at once.
    let ready = notify.next_event("READY=1").await;
    assert_eq!(ready[0], "READY=1", "{ready:?}");
    assert!(accepts(port).await, "READY=1 before the listener was bound");
    assert!(
        accepts(admin).await,
        "READY=1 before the admin API was bound"
    );
    let status = status_of(&ready);
    assert!(
        status.starts_with("serving 1 service, 1 listener, 0 rules, 1 target group (1 target)"),
        "{status}"
    );

    // The watchdog: pings keep coming while the daemon runs.
    let mut pings = 0;
    while pings < 3 {
        if notify.next("WATCHDOG=1").await == ["WATCHDOG=1"] {
            pings += 1;
        }
    }

    // SIGHUP: RELOADING=1 (with the monotonic time systemd 253+ matches it by), then READY=1.
    trellis.signal(libc::SIGHUP);
    let reloading = notify.next_event("RELOADING=1").await;
    assert_eq!(reloading[0], "RELOADING=1", "{reloading:?}");
    let now = monotonic_usec();
    let sent: u64 = reloading
        .iter()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"))
        .parse()
        .expect("MONOTONIC_USEC is a number");
    assert!(
        sent <= now,
        "MONOTONIC_USEC {sent} is in the future ({now})"
    );
    let ready = notify.next_event("READY=1 after the reload").await;
    assert_eq!(ready[0], "READY=1", "{ready:?}");
    assert!(!status_of(&ready).contains("failed"), "{ready:?}");

    // A bad file, through the admin API this time: the reload fails, trellis is ready again on the
    // previous configuration, and says so.
    std::fs::write(trellis.config_path(), "this is not toml").expect("write");
    let reply = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{admin}/v1/reload"))
        .header("content-type", "application/json")
        .send()
        .await
        .expect("POST /v1/reload");
    assert_eq!(reply.status(), 422);
    assert_eq!(notify.next_event("RELOADING=1").await[0], "RELOADING=1");
    let ready = notify.next_event("READY=1 after the bad reload").await;
    assert_eq!(ready[0], "READY=1", "{ready:?}");
    assert!(
        status_of(&ready).contains("the last reload failed"),
        "{ready:?}"
    );

    // SIGTERM: STOPPING=1, then a clean exit.
    trellis.signal(libc::SIGTERM);
    let stopping = notify.next_event("STOPPING=1").await;
    assert_eq!(stopping[0], "STOPPING=1", "{stopping:?}");
    assert!(trellis.wait_exit(WAIT).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abstract_notify_socket_works_and_no_watchdog_without_watchdog_usec() {
    let backend = Echo::start("web").await;
    let (port, admin) = (free_port(), free_port());
    let notify = NotifySocket::bind_abstract();
    let opts = Options {
        env: vec![("NOTIFY_SOCKET".into(), notify.address.clone())],
        ..Options::default()
    };
    let mut trellis = Trellis::start_with(&config(port, admin, &backend), &[], opts).await;
    assert_eq!(notify.next("READY=1").await[0], "READY=1");
    trellis.signal(libc::SIGTERM);
    // The very next message is STOPPING=1: no WATCHDOG=1 was sent in between.
    assert_eq!(notify.next("STOPPING=1").await[0], "STOPPING=1");
    assert!(trellis.wait_exit(WAIT).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_group_instances_do_not_inherit_the_notify_variables() {
    let port = free_port();
    let notify = NotifySocket::bind();
    let opts = Options {
        env: vec![
            ("NOTIFY_SOCKET".into(), notify.address.clone()),
            ("WATCHDOG_USEC".into(), "60000000".into()),
        ],
        ..Options::default()
    };
    let trellis = Trellis::start_with(&crate::scaling::config(port, 1, 1), &[port], opts).await;
    let group = eventually(WAIT * 3, "one instance in service", || async {
        let g = trellis.status().await["scaling_groups"][0].clone();
        (g["in_service"] == 1).then_some(g)
    })
    .await;
    let pids = crate::scaling::pids(&group);
    assert_eq!(pids.len(), 1, "{group}");
    let environ = std::fs::read(format!("/proc/{}/environ", pids[0])).expect("environ");
    let names: Vec<String> = environ
        .split(|&b| b == 0)
        .filter_map(|var| var.split(|&b| b == b'=').next())
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n == "TRELLIS_INSTANCE_ID"),
        "{names:?}"
    );
    for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        assert!(!names.iter().any(|n| n == name), "the instance has {name}");
    }
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// `deploy/systemd/trellis.service` as systemd itself reads it. `systemd-analyze verify` also checks that
/// the programs it runs exist and that `man:` documentation is installed, so the copy it reads runs
/// the binary under test, and the manual pages `trellis man` generates are put on `MANPATH`.
#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let Some(analyze) = tools::required(
        &["systemd-analyze"],
        "systemd",
        "the unit file with systemd-analyze",
    ) else {
        return;
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let unit = std::fs::read_to_string(repo.join("deploy/systemd/trellis.service")).expect("unit");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/trellis run"),
        "{unit}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("trellis.service");
    let bin = crate::support::trellis::bin();
    std::fs::write(&copy, unit.replace("/usr/local/bin/trellis", bin)).expect("write");

    let man_dir = dir.path().join("man");
    let mut verify = Command::new(analyze);
    verify.arg("verify");
    if tools::find(&["man"]).is_some() {
        std::fs::create_dir_all(man_dir.join("man1")).expect("mkdir");
        let out = Command::new(bin)
            .args(["man", "--out-dir"])
            .arg(man_dir.join("man1"))
            .output()
            .expect("trellis man");
        assert!(out.status.success(), "{out:?}");
        verify.env("MANPATH", &man_dir);
    } else {
        verify.arg("--man=no");
    }
    let out = verify.arg(&copy).output().expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}
