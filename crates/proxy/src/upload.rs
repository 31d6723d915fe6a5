//! A request body's progress from the client to the target, shared between the body (which the
//! upstream connection owns), the exchange (which times it) and the access log entry.
//!
//! It tells whose fault a slow or broken exchange is. While the target waits for body bytes the client
//! has not sent, the client is slow: after `body_timeout` that is a `408`. Once the body is all sent,
//! the target has `response_timeout` to answer: after it, a `504` that counts against the target. A
//! body the client broke (a malformed chunk, a connection cut mid-upload) is a `400`, never the
//! target's failure.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

pub struct Upload {
    /// What the millisecond fields count from.
    base: Instant,
    bytes: AtomicU64,
    /// 0 while the target is not waiting on the client; else 1 + ms since `base` when it started to.
    waiting_since: AtomicU64,
    /// ms since `base` of the last body bytes handed to the target (or of the start).
    last_frame: AtomicU64,
    /// When the whole body had been handed to the target.
    ended: OnceLock<Instant>,
    /// The client's body broke: malformed framing, or the connection ended before it was complete.
    failed: AtomicBool,
}

/// Who an expired deadline is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overdue {
    /// The client has not sent the body the target waits for.
    Client,
    /// The target has not answered (or stopped reading the body).
    Target,
}

impl Upload {
    pub fn new() -> Self {
        Upload {
            base: Instant::now(),
            bytes: AtomicU64::new(0),
            waiting_since: AtomicU64::new(0),
            last_frame: AtomicU64::new(0),
            ended: OnceLock::new(),
            failed: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// The target asked for more and the client has none yet.
    #[inline]
    pub fn waiting(&self) {
        if self.waiting_since.load(Ordering::Relaxed) == 0 {
            self.waiting_since
                .store(1 + self.now_ms(), Ordering::Relaxed);
        }
    }

    /// `bytes` more went to the target.
    #[inline]
    pub fn sent(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.waiting_since.store(0, Ordering::Relaxed);
        self.last_frame.store(self.now_ms(), Ordering::Relaxed);
    }

    pub fn end(&self) {
        self.waiting_since.store(0, Ordering::Relaxed);
        let _ = self.ended.set(Instant::now());
    }

    pub fn fail(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn ended(&self) -> Option<Instant> {
        self.ended.get().copied()
    }

    /// The next deadline of the exchange, and whose it is.
    pub fn deadline(
        &self,
        response_timeout: Duration,
        body_timeout: Duration,
    ) -> (Instant, Overdue) {
        if let Some(ended) = self.ended() {
            return (ended + response_timeout, Overdue::Target);
        }
        let ms = |ms: u64| self.base + Duration::from_millis(ms);
        match self.waiting_since.load(Ordering::Relaxed) {
            0 => (
                ms(self.last_frame.load(Ordering::Relaxed)) + response_timeout,
                Overdue::Target,
            ),
            since => (ms(since - 1) + body_timeout, Overdue::Client),
        }
    }
}

impl Default for Upload {
    fn default() -> Self {
        Upload::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESPONSE: Duration = Duration::from_secs(5);
    const BODY: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_slow_client_is_overdue_after_body_timeout_not_response_timeout() {
        let u = Upload::new();
        let start = Instant::now();
        u.sent(10);
        u.waiting();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(u.deadline(RESPONSE, BODY), (start + BODY, Overdue::Client));
        // More bytes: the client is forgiven until it makes the target wait again.
        u.sent(10);
        let (at, who) = u.deadline(RESPONSE, BODY);
        assert_eq!(
            (at, who),
            (start + Duration::from_secs(30) + RESPONSE, Overdue::Target)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_response_timeout_starts_when_the_body_is_sent() {
        let u = Upload::new();
        tokio::time::advance(Duration::from_secs(100)).await;
        u.end();
        let ended = Instant::now();
        assert_eq!(
            u.deadline(RESPONSE, BODY),
            (ended + RESPONSE, Overdue::Target)
        );
    }
}
