//! Shared fixtures for the diagnostics tests: a valid base file and helpers to break it.
#![allow(dead_code)] // each test file uses a different subset

use std::path::Path;

pub const BASE: &str = r#"[[service]]
name = "s"
hosts = ["*"]
  [[service.listener]]
  name = "l"
  protocol = "http"
  port = 8080
  default_action = { forward = [{ target_group = "tg" }] }
    [[service.listener.rule]]
    name = "api"
    priority = 10
    match = { path = { prefix = "/api/" } }
    action = { forward = [{ target_group = "tg" }] }

[[target_group]]
name = "tg"
targets = ["127.0.0.1:9001"]
  [target_group.health_check]
  interval = "10s"
"#;

/// BASE with textual replacements, then `extra` appended.
pub fn doc(replace: &[(&str, &str)], extra: &str) -> String {
    let mut text = BASE.to_string();
    for (from, to) in replace {
        assert!(text.contains(from), "BASE has no {from:?}");
        text = text.replacen(from, to, 1);
    }
    text + extra
}

pub fn errors(text: &str) -> Vec<String> {
    match trellis_config::parse(text, Path::new("config.toml")) {
        Ok(_) => Vec::new(),
        Err(trellis_config::ConfigError::Invalid(d)) => d.iter().map(ToString::to_string).collect(),
        Err(e) => panic!("unexpected {e}"),
    }
}

/// 1-based line of the first line containing `needle` (searching from the `nth` occurrence).
pub fn line_of(text: &str, needle: &str, nth: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .nth(nth)
        .map(|(i, _)| i + 1)
        .expect("needle present")
}

/// Asserts a diagnostic at the line of `needle` for `key` whose message contains `msg`.
#[track_caller]
pub fn expect(text: &str, needle: &str, key: &str, msg: &str) {
    expect_nth(text, needle, 0, key, msg);
}

#[track_caller]
pub fn expect_nth(text: &str, needle: &str, nth: usize, key: &str, msg: &str) {
    let prefix = format!("config.toml:{}: {key}: ", line_of(text, needle, nth));
    let errs = errors(text);
    assert!(
        errs.iter()
            .any(|e| e.starts_with(&prefix) && e[prefix.len()..].contains(msg)),
        "no `{prefix}…{msg}…` in:\n{}\n--- file ---\n{text}",
        errs.join("\n")
    );
}

pub const SCALING: &str = r#"
[[scaling_group]]
name = "pool"
target_group = "tg"
min = 1
max = 8
desired = 2
  [scaling_group.launch]
  provider = "process"
  command = ["{self}", "echo", "--listen", "127.0.0.1:{port}"]
  ports = "20000-20999"
  [[scaling_group.policy]]
  name = "rps"
  type = "target_tracking"
  metric = "request_count_per_target"
  target = 500.0
"#;
