//! The process provider with real child processes.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use trellis_config::ProcessLaunch;
use trellis_scaler::ProcessProvider;

fn provider(command: &[&str], log_dir: Option<PathBuf>) -> ProcessProvider {
    let launch = ProcessLaunch {
        command: command.iter().map(|s| s.to_string()).collect(),
        ports: Some((41000, 41999)),
        env: BTreeMap::from([
            ("GREETING".to_string(), "hi".to_string()),
            ("LISTEN".to_string(), "127.0.0.1:{port}/{id}".to_string()),
        ]),
        workdir: None,
        log_dir,
        stop_signal: libc::SIGTERM,
        stop_timeout: Duration::from_secs(10),
    };
    ProcessProvider::new(launch, "pool", PathBuf::from("/bin/true"))
}

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Live (not zombie) processes whose process group is `pgid`.
fn group_members(pgid: i32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s[s.rfind(')')? + 2..]
                        .split_whitespace()
                        .nth(2)?
                        .parse::<i32>()
                        .ok()
                })
                == Some(pgid)
        })
        .filter(|&pid| alive(pid))
        .count()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn placeholders_env_and_output_reach_the_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = provider(
        &[
            "sh",
            "-c",
            "echo \"$GREETING {id} {group} {port} $TRELLIS_INSTANCE_ID $LISTEN\"; exec sleep 30",
        ],
        Some(dir.path().to_path_buf()),
    );
    let instance = p.launch("i-7", &HashSet::new()).expect("launch");
    let port = instance.port;
    assert!((41000..=41999).contains(&port));
    let log = dir.path().join("i-7.log");
    wait_until("the output line", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains('\n'))
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        format!("hi i-7 pool {port} i-7 127.0.0.1:{port}/i-7\n")
    );
    assert_eq!(
        instance.stop(libc::SIGTERM, Duration::from_secs(5)).await,
        "killed by signal 15"
    );
}

#[tokio::test]
async fn ports_already_taken_are_skipped() {
    let p = provider(&["sleep", "30"], None);
    let first = p.launch("a", &HashSet::new()).unwrap();
    let second = p.launch("b", &HashSet::from([first.port])).unwrap();
    assert_ne!(first.port, second.port);
    first.stop(libc::SIGKILL, Duration::from_secs(1)).await;
    second.stop(libc::SIGKILL, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn an_exit_is_noticed_with_its_status() {
    let p = provider(&["sh", "-c", "exit 3"], None);
    let mut instance = p.launch("x", &HashSet::new()).unwrap();
    let mut how = None;
    wait_until("the exit", || {
        how = instance.exited();
        how.is_some()
    })
    .await;
    assert_eq!(how.as_deref(), Some("exited with status 3"));
}

#[tokio::test]
async fn a_child_ignoring_its_stop_signal_is_killed_after_the_timeout_with_its_whole_group() {
    // The shell ignores SIGTERM; its child `sleep` is in the same process group.
    let p = provider(&["sh", "-c", "trap '' TERM; sleep 30 & wait"], None);
    let instance = p.launch("stubborn", &HashSet::new()).unwrap();
    let pgid = instance.pid();
    // Let the shell start its child, so that the group has two members.
    wait_until("the shell's child", || group_members(pgid) == 2).await;
    let started = Instant::now();
    let how = instance
        .stop(libc::SIGTERM, Duration::from_millis(300))
        .await;
    assert!(how.contains("SIGKILL after"), "{how}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Nothing of the group is left. SIGKILL is delivered at once but a killed
    // process takes a moment to finish exiting, so wait for that (bounded).
    wait_until(&format!("the processes of group {pgid} to exit"), || {
        group_members(pgid) == 0
    })
    .await;
}

#[tokio::test]
async fn cpu_time_is_read_from_proc() {
    let p = provider(
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 30",
        ],
        None,
    );
    let instance = p.launch("busy", &HashSet::new()).unwrap();
    wait_until("some CPU time", || {
        instance.cpu_ticks().is_some_and(|t| t > 0)
    })
    .await;
    instance.stop(libc::SIGKILL, Duration::from_secs(1)).await;
}
