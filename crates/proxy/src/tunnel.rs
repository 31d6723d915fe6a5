//! After a WebSocket `101`, both sides become one byte stream until either closes, the target is
//! closed (its drain deadline), nothing moves for `tunnel_idle_timeout`, or the client takes nothing
//! that is written to it for `send_timeout`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use trellis_targets::InFlight;

use crate::watched_io::{IoEvents, WatchedIo};

/// The limits a tunnel lives under.
#[derive(Clone, Copy)]
pub struct TunnelLimits {
    pub idle: Duration,
    pub send: Duration,
}

pub async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    target: hyper::upgrade::OnUpgrade,
    in_flight: InFlight,
    closed: CancellationToken,
    limits: TunnelLimits,
) {
    if let (Ok(client), Ok(target)) = tokio::join!(client, target) {
        let activity = Arc::new(Activity::new());
        let mut client = WatchedIo::new(TokioIo::new(client), ClientSide(activity.clone()));
        let mut target = WatchedIo::new(TokioIo::new(target), TargetSide(activity.clone()));
        let copy = tokio::io::copy_bidirectional(&mut client, &mut target);
        tokio::pin!(copy);
        loop {
            tokio::select! {
                _ = &mut copy => break,
                _ = closed.cancelled() => break,
                _ = tokio::time::sleep_until(activity.deadline(limits)) => {
                    if activity.deadline(limits) <= Instant::now() {
                        break;
                    }
                }
            }
        }
    }
    drop(in_flight);
}

/// When bytes last moved, and since when a write to the client has been waiting.
struct Activity {
    base: Instant,
    /// ms since `base`.
    last: AtomicU64,
    /// 0: no write to the client waiting; else 1 + ms since `base` when one began to wait.
    client_stalled: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            base: Instant::now(),
            last: AtomicU64::new(0),
            client_stalled: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn moved(&self) {
        self.last.store(self.now_ms(), Ordering::Relaxed);
    }

    /// The earlier of the idle deadline and, while the client does not read, the send deadline.
    fn deadline(&self, limits: TunnelLimits) -> Instant {
        let at = |ms: u64| self.base + Duration::from_millis(ms);
        let idle = at(self.last.load(Ordering::Relaxed)) + limits.idle;
        match self.client_stalled.load(Ordering::Relaxed) {
            0 => idle,
            since => idle.min(at(since - 1) + limits.send),
        }
    }
}

/// The client's side: bytes moving either way are activity; a write waiting is the client not reading.
struct ClientSide(Arc<Activity>);

/// The target's side: only activity.
struct TargetSide(Arc<Activity>);

impl IoEvents for ClientSide {
    fn read(&self) {
        self.0.moved();
    }

    fn write_blocked(&self) {
        let a = &self.0;
        if a.client_stalled.load(Ordering::Relaxed) == 0 {
            a.client_stalled.store(1 + a.now_ms(), Ordering::Relaxed);
        }
    }

    fn wrote(&self) {
        self.0.client_stalled.store(0, Ordering::Relaxed);
    }
}

impl IoEvents for TargetSide {
    fn read(&self) {
        self.0.moved();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: TunnelLimits = TunnelLimits {
        idle: Duration::from_secs(3600),
        send: Duration::from_secs(60),
    };

    #[tokio::test(start_paused = true)]
    async fn idle_then_send_deadlines() {
        let a = Activity::new();
        let start = Instant::now();
        assert_eq!(a.deadline(LIMITS), start + LIMITS.idle);
        tokio::time::advance(Duration::from_secs(10)).await;
        a.moved();
        assert_eq!(
            a.deadline(LIMITS),
            start + Duration::from_secs(10) + LIMITS.idle
        );
        a.client_stalled.store(1 + a.now_ms(), Ordering::Relaxed);
        assert_eq!(
            a.deadline(LIMITS),
            start + Duration::from_secs(10) + LIMITS.send
        );
    }
}
