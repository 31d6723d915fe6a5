//! Watching a process's resident memory while a test streams through it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

/// `VmRSS` of `pid` in KiB, from /proc; `None` once the process is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Samples a process's RSS every 20ms in the background and keeps the peak.
pub struct RssWatch {
    pid: u32,
    peak: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl RssWatch {
    pub fn start(pid: u32) -> RssWatch {
        let peak = Arc::new(AtomicU64::new(rss_kib(pid).unwrap_or(0)));
        let task = {
            let peak = peak.clone();
            tokio::spawn(async move {
                while let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        RssWatch { pid, peak, task }
    }

    /// Asserts the peak so far, and the current RSS, are below `limit_mib`.
    pub fn assert_below_mib(&self, limit_mib: u64) {
        let now = rss_kib(self.pid).unwrap_or(0);
        let peak = self.peak.load(Ordering::Relaxed).max(now);
        assert!(
            peak < limit_mib * 1024,
            "trellis RSS peaked at {} MiB (now {} MiB), limit {limit_mib} MiB",
            peak / 1024,
            now / 1024
        );
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
