//! `trellis check` (and `run` refusing what `check` refuses): exit codes and located diagnostics.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::config::{
    checked_target_group, fixed, forward_to, listener, rule, service, target_group, targets,
};
use crate::support::free_port;
use crate::support::process::ChildGuard;
use crate::support::trellis::{bin, check};

/// Writes `text` as `trellis.toml` in a fresh directory.
fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("trellis.toml");
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// 1-based number of the `nth` (0-based) line equal to `line` after trimming.
fn line_number(config: &str, line: &str, nth: usize) -> usize {
    config
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == line)
        .nth(nth)
        .map(|(i, _)| i + 1)
        .unwrap_or_else(|| panic!("no {nth}th line {line:?} in:\n{config}"))
}

/// A file with two independent errors: a duplicate rule priority and a forward to an undefined group.
fn two_errors() -> String {
    [
        service("shop", &["*"]),
        listener(8080, &forward_to("missing-group")),
        rule(
            "first",
            10,
            r#"{ path = { prefix = "/a" } }"#,
            &fixed(200, "a"),
        ),
        rule(
            "second",
            10,
            r#"{ path = { prefix = "/b" } }"#,
            &fixed(200, "b"),
        ),
        target_group("web", "[\"127.0.0.1:9001\"]"),
    ]
    .concat()
}

#[tokio::test]
async fn check_accepts_a_valid_file_with_a_one_line_summary() {
    let echo_addr = "127.0.0.1:9001".to_owned();
    let cfg = [
        service("shop", &["shop.internal", "*.shop.internal"]),
        listener(8080, &forward_to("web")),
        rule(
            "gone",
            20,
            r#"{ path = { exact = "/old" } }"#,
            &fixed(410, "gone\n"),
        ),
        target_group("web", &targets(&[echo_addr])),
    ]
    .concat();
    let (_dir, path) = write_config(&cfg);
    let out = check(&path);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected a one-line summary, got: {stdout:?}"
    );
}

#[tokio::test]
async fn check_reports_every_error_with_file_line_and_key_path() {
    let cfg = two_errors();
    let (_dir, path) = write_config(&cfg);
    let out = check(&path);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stderr: {stderr}\nstdout: {}",
        text(&out.stdout)
    );

    let file = path.display().to_string();
    let priority_line = line_number(&cfg, "priority = 10", 1);
    let prefix = format!("{file}:{priority_line}: service[0].listener[0].rule[1].priority:");
    let duplicate = stderr
        .lines()
        .find(|l| l.contains("service[0].listener[0].rule[1].priority"));
    let duplicate =
        duplicate.unwrap_or_else(|| panic!("no duplicate-priority error in:\n{stderr}"));
    assert!(
        duplicate.starts_with(&prefix),
        "want {prefix:?}..., got {duplicate:?}"
    );
    assert!(
        duplicate.contains("is already used by rule"),
        "{duplicate:?}"
    );

    let missing = stderr.lines().find(|l| l.contains("missing-group"));
    let missing =
        missing.unwrap_or_else(|| panic!("the undefined target group is not reported:\n{stderr}"));
    let action_line = line_number(
        &cfg,
        "default_action = { forward = [{ target_group = \"missing-group\" }] }",
        0,
    );
    let want = format!("{file}:{action_line}: service[0].listener[0].default_action");
    assert!(
        missing.starts_with(&want),
        "want {want:?}..., got {missing:?}"
    );
}

#[tokio::test]
async fn check_suggests_the_key_a_one_letter_typo_meant() {
    let cfg = [
        service("shop", &["*"]),
        listener(8080, &forward_to("web")),
        checked_target_group("web", "[\"127.0.0.1:9001\"]", "healty_threshold = 3", ""),
    ]
    .concat();
    let (_dir, path) = write_config(&cfg);
    let out = check(&path);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let line = line_number(&cfg, "healty_threshold = 3", 0);
    let want = format!(
        "{}:{line}: target_group[0].health_check.healty_threshold: unknown key `healty_threshold` \
         (did you mean `healthy_threshold`?), expected one of ",
        path.display()
    );
    let error = stderr.lines().find(|l| l.contains("healty_threshold"));
    let error = error.unwrap_or_else(|| panic!("the typo is not reported:\n{stderr}"));
    assert!(error.starts_with(&want), "want {want:?}..., got {error:?}");
    // The allowed keys are still listed, the near miss among them.
    assert!(error.contains("`unhealthy_threshold`"), "{error:?}");
}

#[tokio::test]
async fn check_locates_a_syntax_error_by_line_and_column() {
    // A value that is no TOML value: the parser stops at `@`, line 3, column 9 (`é` is one column, two bytes).
    let cfg = "[admin]\nlisten = \"127.0.0.1:9901\"\n  \"é\" = @2\n";
    let (_dir, path) = write_config(cfg);
    let out = check(&path);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let located = format!("{}:3:", path.display());
    let error = stderr.lines().find(|l| l.starts_with(&located));
    let error = error.unwrap_or_else(|| panic!("no error on line 3:\n{stderr}"));
    let column = error[located.len()..]
        .split(':')
        .next()
        .and_then(|c| c.parse::<usize>().ok());
    assert_eq!(column, Some(9), "want {located}9: ..., got {error:?}");
}

#[tokio::test]
async fn check_fails_on_a_missing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("absent.toml");
    let out = check(&path);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("absent.toml"),
        "the error names the file: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_an_invalid_file_and_serves_nothing() {
    // Same errors as above, but the listener port is one this test owns, to see nothing binds it.
    let port = free_port();
    let cfg = two_errors().replace("port = 8080", &format!("port = {port}"));
    let (_dir, path) = write_config(&cfg);
    let mut cmd = Command::new(bin());
    cmd.args(["run", "--workers", "1", "-c"]).arg(&path);
    let mut run = ChildGuard::spawn("trellis run", cmd);
    let status = run
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| {
            panic!(
                "trellis run kept running on an invalid file\n{}",
                run.report()
            )
        });
    assert_ne!(status.code(), Some(0), "{}", run.report());
    let stderr = run.stderr.text();
    assert!(
        stderr.contains("is already used by rule"),
        "errors on stderr: {stderr}"
    );
    assert!(
        !crate::support::accepts(port).await,
        "port {port} is served despite the invalid file"
    );
}

#[tokio::test]
async fn the_example_configuration_is_valid_and_runs_its_own_pools() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/example.toml");
    let out = check(&example);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("2 scaling groups"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test]
async fn log_format_json_writes_one_object_per_line() {
    let port = free_port();
    let admin = free_port();
    let (dir, path) = write_config(&format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n{}{}",
        service("s", &["*"]),
        listener(port, &fixed(200, "ok")),
    ));
    let mut cmd = Command::new(bin());
    cmd.args(["--log-format", "json", "run", "-c"])
        .arg(&path)
        .arg("--state-dir")
        .arg(dir.path().join("state"));
    let mut child = ChildGuard::spawn("trellis json", cmd);
    crate::support::eventually(Duration::from_secs(10), "the listening line", || {
        let done = child.stderr.text().contains("\"listening\"");
        async move { done.then_some(()) }
    })
    .await;
    child.signal(libc::SIGTERM);
    child.wait_exit(Duration::from_secs(10)).await;
    let stderr = child.stderr.text();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{stderr}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
}
