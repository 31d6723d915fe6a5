//! Child processes whose output is kept and shown when a test fails, and which never outlive a test.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Everything a child wrote on one stream so far, collected by a reader thread.
#[derive(Clone, Default)]
pub struct Captured {
    bytes: Arc<Mutex<Vec<u8>>>,
    /// Set when the stream reached its end (the child and everything it spawned closed it).
    closed: Arc<AtomicBool>,
}

impl Captured {
    fn attach(mut source: impl Read + Send + 'static) -> Self {
        let captured = Captured::default();
        let (sink, closed) = (captured.bytes.clone(), captured.closed.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = source.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
            closed.store(true, Ordering::SeqCst);
        });
        captured
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// After the child exited: gives the reader thread up to 1s to take the last bytes.
    fn drain(&self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while !self.closed.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// A running child: SIGKILLed and reaped on drop unless it was already waited for. When the test is
/// panicking, its captured stdout and stderr are printed so the failure shows what the process said.
pub struct ChildGuard {
    label: String,
    child: Child,
    status: Option<ExitStatus>,
    pub stdout: Captured,
    pub stderr: Captured,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout and stderr captured and stdin closed.
    pub fn spawn(label: impl Into<String>, mut cmd: Command) -> Self {
        let label = label.into();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {label}: {e}"));
        let stdout = Captured::attach(child.stdout.take().expect("piped stdout"));
        let stderr = Captured::attach(child.stderr.take().expect("piped stderr"));
        ChildGuard {
            label,
            child,
            status: None,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the child has exited (reaping it), without blocking.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
            if self.status.is_some() {
                self.stdout.drain();
                self.stderr.drain();
            }
        }
        self.status
    }

    /// Waits (polling, without blocking the runtime) up to `timeout` for the child to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(super::POLL).await;
        }
    }

    /// Sends `signal` to the child (no-op once it has been reaped).
    pub fn signal(&self, signal: libc::c_int) {
        if self.status.is_some() {
            return;
        }
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own unreaped child.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// The captured output, for panic messages.
    pub fn report(&self) -> String {
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.label,
            self.stdout.text(),
            self.label,
            self.stderr.text()
        )
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.report());
        }
    }
}
