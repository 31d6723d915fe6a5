//! After a WebSocket `101`, both sides become one byte stream until either closes, the target is
//! closed (its drain deadline), nothing moves for `tunnel_idle_timeout`, or the client takes nothing
//! that is written to it for `send_timeout`.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use trellis_targets::InFlight;

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
        let mut client = Watched {
            io: TokioIo::new(client),
            activity: activity.clone(),
            client: true,
        };
        let mut target = Watched {
            io: TokioIo::new(target),
            activity: activity.clone(),
            client: false,
        };
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

/// One side of the tunnel, reporting what moves.
struct Watched<T> {
    io: T,
    activity: Arc<Activity>,
    client: bool,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.moved();
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.io).poll_write(cx, buf);
        if this.client {
            match &res {
                Poll::Pending => {
                    if this.activity.client_stalled.load(Ordering::Relaxed) == 0 {
                        let now = 1 + this.activity.now_ms();
                        this.activity.client_stalled.store(now, Ordering::Relaxed);
                    }
                }
                Poll::Ready(_) => this.activity.client_stalled.store(0, Ordering::Relaxed),
            }
        }
        res
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
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
