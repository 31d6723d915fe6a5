//! A real etcd cluster on loopback for fleet tests: `etcd` from Debian's etcd-server, each member on free
//! ports with a data directory of its own, killed when the test ends.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::process::ChildGuard;
use super::{eventually, free_port, tools};

/// TLS for the members' client URLs: their certificate and key, and the CA clients must be signed by.
pub struct EtcdTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

pub struct Etcd {
    /// Client URLs, one per member.
    pub endpoints: Vec<String>,
    /// Plain-HTTP `/health` of each member (its metrics listener), also when clients need TLS.
    health: Vec<String>,
    /// The command line of each member, to start it again on its data directory.
    commands: Vec<Vec<std::ffi::OsString>>,
    binary: PathBuf,
    members: Vec<Option<ChildGuard>>,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts a cluster of `members` and waits until it answers. `None` (the test is skipped) when etcd
    /// is not installed, except under CI, where that fails.
    pub async fn start(members: usize) -> Option<Etcd> {
        Etcd::start_with(members, None).await
    }

    /// As [`Self::start`], with clients served over TLS and required to present a certificate.
    pub async fn start_with(members: usize, tls: Option<&EtcdTls>) -> Option<Etcd> {
        let etcd = tools::required(&["etcd"], "etcd-server", "fleet mode")?;
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<(u16, u16, u16)> = (0..members)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let cluster: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer, _))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut commands = Vec::new();
        for (i, (client, peer, metrics)) in ports.iter().enumerate() {
            let data: PathBuf = dir.path().join(format!("m{i}"));
            let mut cmd = Command::new(&etcd);
            cmd.arg("--name")
                .arg(format!("m{i}"))
                .arg("--data-dir")
                .arg(&data)
                .arg("--listen-client-urls")
                .arg(format!("{scheme}://127.0.0.1:{client}"))
                .arg("--advertise-client-urls")
                .arg(format!("{scheme}://127.0.0.1:{client}"))
                .arg("--listen-metrics-urls")
                .arg(format!("http://127.0.0.1:{metrics}"))
                .arg("--listen-peer-urls")
                .arg(format!("http://127.0.0.1:{peer}"))
                .arg("--initial-advertise-peer-urls")
                .arg(format!("http://127.0.0.1:{peer}"))
                .arg("--initial-cluster")
                .arg(cluster.join(","))
                .arg("--initial-cluster-state")
                .arg("new")
                .arg("--log-level")
                .arg("error");
            if let Some(tls) = tls {
                cmd.arg("--cert-file")
                    .arg(&tls.cert)
                    .arg("--key-file")
                    .arg(&tls.key)
                    .arg("--trusted-ca-file")
                    .arg(&tls.client_ca)
                    .arg("--client-cert-auth");
            }
            commands.push(cmd.get_args().map(ToOwned::to_owned).collect());
        }
        let endpoints: Vec<String> = ports
            .iter()
            .map(|(client, _, _)| format!("{scheme}://127.0.0.1:{client}"))
            .collect();
        let health = ports
            .iter()
            .map(|(_, _, metrics)| format!("http://127.0.0.1:{metrics}/health"))
            .collect();
        let mut cluster = Etcd {
            endpoints,
            health,
            commands,
            binary: etcd,
            members: (0..members).map(|_| None).collect(),
            _dir: dir,
        };
        for i in 0..members {
            cluster.start_member(i);
        }
        cluster.wait_healthy().await;
        Some(cluster)
    }

    fn start_member(&mut self, i: usize) {
        let mut cmd = Command::new(&self.binary);
        cmd.args(&self.commands[i]);
        self.members[i] = Some(ChildGuard::spawn(format!("etcd m{i}"), cmd));
    }

    /// Waits until the cluster answers `/health` (a quorum is up).
    pub async fn wait_healthy(&self) {
        let health = self.health[0].clone();
        eventually(Duration::from_secs(20), "etcd to answer /health", || {
            let health = health.clone();
            async move {
                let resp = reqwest::get(&health).await.ok()?;
                let text = resp.text().await.ok()?;
                text.contains("\"health\":\"true\"").then_some(())
            }
        })
        .await;
    }

    /// Waits until a member still running answers `/health` as healthy: after a member was killed,
    /// the others have a leader again (an election can take seconds on a loaded machine).
    pub async fn wait_healthy_after_kill(&self) {
        let alive: Vec<String> = self
            .members
            .iter()
            .zip(&self.health)
            .filter(|(m, _)| m.is_some())
            .map(|(_, h)| h.clone())
            .collect();
        eventually(
            Duration::from_secs(20),
            "the etcd members left to have a leader",
            || {
                let alive = alive.clone();
                async move {
                    for health in alive {
                        let Ok(resp) = reqwest::get(&health).await else {
                            continue;
                        };
                        if resp
                            .text()
                            .await
                            .is_ok_and(|t| t.contains("\"health\":\"true\""))
                        {
                            return Some(());
                        }
                    }
                    None
                }
            },
        )
        .await;
    }

    /// Kills every member (SIGKILL): the store is gone, its data stays.
    pub fn stop(&mut self) {
        for member in &mut self.members {
            member.take();
        }
    }

    /// Starts every stopped member again on its data, and waits until the cluster answers.
    pub async fn restart(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].is_none() {
                self.start_member(i);
            }
        }
        self.wait_healthy().await;
    }

    /// Replaces the cluster with a new, empty one on the same addresses (as restoring an old backup, or
    /// rebuilding a lost cluster, does): its revisions start again from 1.
    pub async fn reset(&mut self) {
        self.stop();
        for i in 0..self.members.len() {
            let _ = std::fs::remove_dir_all(self._dir.path().join(format!("m{i}")));
        }
        self.restart().await;
    }

    /// Writes `value` at `key` behind trellis's back (etcd's JSON gateway), as `etcdctl put` would.
    pub async fn put(&self, key: &str, value: &str) {
        let body =
            serde_json::json!({"key": base64(key.as_bytes()), "value": base64(value.as_bytes())});
        let resp = reqwest::Client::new()
            .post(format!("{}/v3/kv/put", self.endpoints[0]))
            .body(body.to_string())
            .send()
            .await
            .expect("etcd put");
        assert!(resp.status().is_success(), "etcd put: {}", resp.status());
    }

    /// `--endpoints` as the CLI takes them.
    pub fn endpoints_arg(&self) -> String {
        self.endpoints.join(",")
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Etcd {
    /// Kills member `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        self.members[i].take();
    }

    /// The current revision of the cluster.
    pub async fn revision(&self) -> i64 {
        let body = serde_json::json!({"key": base64(b"\0")});
        let text = reqwest::Client::new()
            .post(format!("{}/v3/kv/range", self.endpoints[0]))
            .body(body.to_string())
            .send()
            .await
            .expect("etcd range")
            .text()
            .await
            .expect("etcd range body");
        let resp: serde_json::Value = serde_json::from_str(&text).expect("etcd range JSON");
        resp["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .expect("a revision")
    }

    /// Compacts the history up to `revision`: watches from before it can no longer be replayed.
    pub async fn compact(&self, revision: i64) {
        let body = serde_json::json!({"revision": revision.to_string(), "physical": true});
        let resp = reqwest::Client::new()
            .post(format!("{}/v3/kv/compaction", self.endpoints[0]))
            .body(body.to_string())
            .send()
            .await
            .expect("etcd compaction");
        assert!(
            resp.status().is_success(),
            "etcd compaction: {}",
            resp.status()
        );
    }
}
