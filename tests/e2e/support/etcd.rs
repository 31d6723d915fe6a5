//! A real etcd cluster on loopback for fleet tests: `etcd` from Debian's etcd-server, each member on free
//! ports with a data directory of its own, killed when the test ends.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::process::ChildGuard;
use super::{eventually, free_port, tools};

pub struct Etcd {
    /// Client URLs, one per member.
    pub endpoints: Vec<String>,
    _members: Vec<ChildGuard>,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts a cluster of `members` and waits until it answers. `None` (the test is skipped) when etcd
    /// is not installed, except under CI, where that fails.
    pub async fn start(members: usize) -> Option<Etcd> {
        let etcd = tools::required(&["etcd"], "etcd-server", "fleet mode")?;
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<(u16, u16)> = (0..members).map(|_| (free_port(), free_port())).collect();
        let cluster: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut guards = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let data: PathBuf = dir.path().join(format!("m{i}"));
            let mut cmd = Command::new(&etcd);
            cmd.arg("--name")
                .arg(format!("m{i}"))
                .arg("--data-dir")
                .arg(&data)
                .arg("--listen-client-urls")
                .arg(format!("http://127.0.0.1:{client}"))
                .arg("--advertise-client-urls")
                .arg(format!("http://127.0.0.1:{client}"))
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
            guards.push(ChildGuard::spawn(format!("etcd m{i}"), cmd));
        }
        let endpoints: Vec<String> = ports
            .iter()
            .map(|(client, _)| format!("http://127.0.0.1:{client}"))
            .collect();
        let health = format!("{}/health", endpoints[0]);
        eventually(Duration::from_secs(20), "etcd to answer /health", || {
            let health = health.clone();
            async move {
                let resp = reqwest::get(&health).await.ok()?;
                let text = resp.text().await.ok()?;
                text.contains("\"health\":\"true\"").then_some(())
            }
        })
        .await;
        Some(Etcd {
            endpoints,
            _members: guards,
            _dir: dir,
        })
    }

    /// `--endpoints` as the CLI takes them.
    pub fn endpoints_arg(&self) -> String {
        self.endpoints.join(",")
    }
}
