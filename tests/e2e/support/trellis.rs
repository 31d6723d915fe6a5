//! `Trellis`: the real binary running a test's configuration.

use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use super::process::ChildGuard;
use super::{accepts, free_port, POLL};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_trellis")
}

/// Runs `trellis check -c PATH` to completion.
pub fn check(path: &std::path::Path) -> std::process::Output {
    Command::new(bin())
        .args(["check", "-c"])
        .arg(path)
        .output()
        .expect("run trellis check")
}

/// How long a start may take before the test gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Command-line knobs of `trellis run`.
#[derive(Debug, Clone)]
pub struct Options {
    pub workers: usize,
    /// `--shutdown-grace`, when set.
    pub shutdown_grace: Option<&'static str>,
    /// `--state-dir` (default: a fresh directory of this instance's own).
    pub state_dir: Option<PathBuf>,
    /// Environment variables for the daemon, on top of the test's own.
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 2,
            shutdown_grace: None,
            state_dir: None,
            env: Vec::new(),
        }
    }
}

impl Options {
    /// One worker: the balancers' counters are then exactly reproducible.
    pub fn single_worker() -> Self {
        Options {
            workers: 1,
            ..Options::default()
        }
    }
}

/// A running `trellis run -c <tempdir>/trellis.toml`.
pub struct Trellis {
    /// The admin listener's port, when the harness chose it.
    pub admin_port: Option<u16>,
    child: ChildGuard,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Trellis {
    /// Starts trellis with `--workers 2` and waits until every port in `ports` accepts connections.
    pub async fn start(config: &str, ports: &[u16]) -> Trellis {
        Trellis::start_with(config, ports, Options::default()).await
    }

    /// Starts trellis and waits until every port in `ports` accepts connections; panics with trellis's
    /// output if it exits first or is not ready within 10s.
    ///
    /// Unless the configuration has its own `[admin]` table, an admin listener on a free loopback port
    /// is prepended so that tests running in parallel do not fight over the default admin port.
    pub async fn start_with(config: &str, ports: &[u16], opts: Options) -> Trellis {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("trellis.toml");
        let (text, admin_port) = if config.contains("[admin]") {
            (config.to_owned(), None)
        } else {
            let port = free_port();
            (
                format!("[admin]\nlisten = \"127.0.0.1:{port}\"\n\n{config}"),
                Some(port),
            )
        };
        std::fs::write(&path, text).expect("write config");

        let mut cmd = Command::new(bin());
        cmd.arg("run")
            .arg("-c")
            .arg(&path)
            // Never the machine's /var/lib/trellis: tests run in parallel and must not share state.
            .arg("--state-dir")
            .arg(
                opts.state_dir
                    .clone()
                    .unwrap_or_else(|| dir.path().join("state")),
            )
            .arg("--workers")
            .arg(opts.workers.to_string());
        if let Some(grace) = opts.shutdown_grace {
            cmd.arg("--shutdown-grace").arg(grace);
        }
        cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
        let mut trellis = Trellis {
            admin_port,
            child: ChildGuard::spawn("trellis", cmd),
            config: path,
            _dir: dir,
        };
        let mut ready: Vec<u16> = ports.to_vec();
        ready.extend(admin_port);
        trellis.wait_ready(&ready).await;
        trellis
    }

    async fn wait_ready(&mut self, ports: &[u16]) {
        let deadline = Instant::now() + READY_TIMEOUT;
        for &port in ports {
            loop {
                if let Some(status) = self.child.try_exit() {
                    panic!(
                        "trellis exited before listening on {port}: {status}\nconfig:\n{}\n{}",
                        self.config_text(),
                        self.child.report()
                    );
                }
                if accepts(port).await {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "trellis not accepting on port {port} after {READY_TIMEOUT:?}\nconfig:\n{}",
                    self.config_text()
                );
                tokio::time::sleep(POLL).await;
            }
        }
    }

    /// The configuration file trellis runs from.
    pub fn config_path(&self) -> &std::path::Path {
        &self.config
    }

    /// Replaces the configuration file (with the same `[admin]` header the harness added at start);
    /// nothing is reloaded until the test says so.
    pub fn write_config(&self, config: &str) {
        let text = match self.admin_port {
            Some(port) => format!("[admin]\nlisten = \"127.0.0.1:{port}\"\n\n{config}"),
            None => config.to_owned(),
        };
        std::fs::write(&self.config, text).expect("write config");
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    fn config_text(&self) -> String {
        std::fs::read_to_string(&self.config).unwrap_or_default()
    }

    pub fn signal(&self, signal: libc::c_int) {
        self.child.signal(signal);
    }

    /// Waits for trellis to exit; panics with its output if it is still running after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.child.wait_exit(timeout).await {
            Some(status) => status,
            None => panic!(
                "trellis still running {timeout:?} later\n{}",
                self.child.report()
            ),
        }
    }

    pub fn stderr(&self) -> String {
        self.child.stderr.text()
    }

    /// What trellis wrote on stdout so far: the access log, when its destination is `stdout`.
    pub fn stdout(&self) -> String {
        self.child.stdout.text()
    }

    /// The access log's JSON lines written to stdout (the default destination) so far.
    pub fn access_log_lines(&self) -> Vec<serde_json::Value> {
        self.stdout()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// trellis with service `shop` (any host) forwarding everything to target group `web`, whose
    /// `targets = ...` value and extra lines are given; and the listener's port.
    pub async fn shop_to_web(web_targets: &str, tg_extra: &str) -> (Trellis, u16) {
        use super::config::{forward_to, listener, service, target_group_with};
        let port = super::free_port();
        let cfg = [
            service("shop", &["*"]),
            listener(port, &forward_to("web")),
            target_group_with("web", web_targets, tg_extra),
        ]
        .concat();
        (Trellis::start(&cfg, &[port]).await, port)
    }
}

/// The admin API of a running trellis.
impl Trellis {
    pub fn admin_url(&self, path: &str) -> String {
        let port = self
            .admin_port
            .expect("the harness chose the admin port (no [admin] in the test's config)");
        format!("http://127.0.0.1:{port}{path}")
    }

    /// `GET /v1/status` as JSON.
    pub async fn status(&self) -> serde_json::Value {
        let resp = reqwest::get(self.admin_url("/v1/status"))
            .await
            .expect("GET /v1/status");
        assert_eq!(resp.status(), 200, "GET /v1/status");
        let body = resp.bytes().await.expect("status body");
        serde_json::from_slice(&body).expect("status is JSON")
    }

    /// `method path` on the admin API with an optional JSON body: (status, JSON reply). Every write
    /// goes as `application/json`, body or not, as the admin API requires.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let write = !matches!(method, reqwest::Method::GET | reqwest::Method::HEAD);
        let mut req = reqwest::Client::new().request(method, self.admin_url(path));
        if write || body.is_some() {
            req = req.header("content-type", "application/json");
        }
        if let Some(body) = body {
            req = req.body(body.to_string());
        }
        let resp = req.send().await.expect("admin API request");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("admin API body");
        let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        });
        (status, value)
    }

    /// `POST /v1/reload`: (status, JSON reply).
    pub async fn reload(&self) -> (u16, serde_json::Value) {
        self.admin(reqwest::Method::POST, "/v1/reload", None).await
    }

    /// `POST /v1/target-groups/GROUP/targets`.
    pub async fn register(
        &self,
        group: &str,
        address: &str,
        weight: u16,
    ) -> (u16, serde_json::Value) {
        let body = serde_json::json!({"address": address, "weight": weight});
        let path = format!("/v1/target-groups/{group}/targets");
        self.admin(reqwest::Method::POST, &path, Some(body)).await
    }

    /// `DELETE /v1/target-groups/GROUP/targets/ADDRESS`.
    pub async fn deregister(&self, group: &str, address: &str) -> (u16, serde_json::Value) {
        let path = format!("/v1/target-groups/{group}/targets/{address}");
        self.admin(reqwest::Method::DELETE, &path, None).await
    }

    /// The addresses listed for a group in `/v1/status` (any state).
    pub async fn group_targets(&self, group: &str) -> Vec<String> {
        let status = self.status().await;
        targets_of(&status, group)
            .filter_map(|t| t["address"].as_str().map(str::to_owned))
            .collect()
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.admin_url("/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// The value of one sample in `/metrics` (labels written as Prometheus prints them, sorted).
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        self.metrics().await.lines().find_map(|line| {
            let value = line.strip_prefix(sample)?.strip_prefix(' ')?;
            value.trim().parse().ok()
        })
    }

    /// One target's entry in `/v1/status`.
    pub async fn target(&self, group: &str, address: &str) -> serde_json::Value {
        let status = self.status().await;
        let found = targets_of(&status, group)
            .find(|t| t["address"] == address)
            .cloned();
        found.unwrap_or_else(|| panic!("no target {address} in group {group}: {status:#}"))
    }

    /// Polls `/v1/status` until the target is in `state`; returns its entry.
    pub async fn wait_state(
        &self,
        group: &str,
        address: &str,
        state: &str,
        timeout: Duration,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let target = self.target(group, address).await;
            if target["state"] == state {
                return target;
            }
            assert!(
                Instant::now() < deadline,
                "{group}/{address} not {state} after {timeout:?}: {target:#}"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The target entries of `group` in a `/v1/status` reply.
fn targets_of<'a>(
    status: &'a serde_json::Value,
    group: &'a str,
) -> impl Iterator<Item = &'a serde_json::Value> {
    status["target_groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(move |g| g["name"] == group)
        .flat_map(|g| g["targets"].as_array().into_iter().flatten())
}
