//! `trellis echo` as a backend process.

use std::process::Command;
use std::time::Duration;

use super::eventually;
use super::process::ChildGuard;
use super::trellis::bin;

/// A running `trellis echo --listen 127.0.0.1:0 --name NAME`.
pub struct Echo {
    pub port: u16,
    child: ChildGuard,
}

impl Echo {
    /// Spawns the echo backend on a kernel-chosen port and waits for its `echo listening on ADDR` line.
    pub async fn start(name: &str) -> Echo {
        Echo::start_on(name, 0).await
    }

    /// Like [`Echo::start`] on a given port (0: kernel-chosen), e.g. to bring a killed backend back.
    pub async fn start_on(name: &str, port: u16) -> Echo {
        let listen = format!("127.0.0.1:{port}");
        let args = ["echo", "--listen", &listen, "--name", name].map(str::to_owned);
        Echo::start_args(&format!("echo {name}"), &args).await
    }

    /// Runs `trellis ARGS...`, an `echo` command line as written elsewhere (e.g. a compose service's
    /// command), and waits for its `echo listening on ADDR` line.
    pub async fn start_args(label: &str, args: &[String]) -> Echo {
        let mut cmd = Command::new(bin());
        cmd.args(args);
        let mut child = ChildGuard::spawn(label.to_owned(), cmd);
        let port = eventually(
            Duration::from_secs(10),
            "the echo backend's `echo listening on` line",
            || {
                if let Some(status) = child.try_exit() {
                    panic!("{label} exited early: {status}\n{}", child.report());
                }
                let line = child
                    .stdout
                    .text()
                    .lines()
                    .find_map(|l| l.strip_prefix("echo listening on ").map(str::to_owned));
                let port = line.map(|addr| {
                    addr.trim()
                        .rsplit_once(':')
                        .and_then(|(_, p)| p.parse::<u16>().ok())
                        .unwrap_or_else(|| panic!("cannot parse echo address {addr:?}"))
                });
                async move { port }
            },
        )
        .await;
        assert_ne!(port, 0, "echo reported port 0");
        Echo { port, child }
    }

    /// `127.0.0.1:PORT`, as written in a target group.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the backend dies mid-whatever, as a crashed process does.
    pub async fn kill(mut self) {
        self.child.signal(libc::SIGKILL);
        assert!(
            self.child.wait_exit(Duration::from_secs(5)).await.is_some(),
            "echo survived SIGKILL"
        );
    }
}
