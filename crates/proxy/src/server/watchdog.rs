//! Per-connection timing: how long a client may take to send a request head, how long a keep-alive
//! connection may sit idle, how long a write to the client may wait (`send_timeout`: a client that
//! stops reading), and how long a closing connection may linger.
//!
//! hyper's own `header_read_timeout` starts whenever it waits for a head — including while a
//! keep-alive connection is idle — so it cannot tell "slow head" (cut off after `header_timeout`) from
//! "idle between requests" (closed after `idle_timeout`). This watchdog can: the I/O wrapper notes the
//! first bytes of a new head, the service notes when a request starts and ends.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use trellis_config::Limits;

use crate::watched_io::IoEvents;

/// Shared by the connection's I/O, its service and its driver. Times are milliseconds since `base`.
#[derive(Debug)]
pub struct ConnState {
    base: Instant,
    in_flight: AtomicU32,
    /// 0: no head in progress; otherwise 1 + ms when its first bytes arrived.
    head_started: AtomicU64,
    /// ms when the connection last finished a request (or was accepted).
    last_active: AtomicU64,
    /// HTTP/2 has no request heads on the wire between frames, so the head timer does not apply.
    http2: AtomicBool,
    /// Set when a request starts or finishes, so the driver re-arms its timer.
    changed: AtomicBool,
    /// 0: no write to the client waiting; else 1 + ms since a write began to wait.
    write_stalled: AtomicU64,
    /// 0: no response body is waiting to be asked for its next frame; else 1 + ms since one has been.
    /// An HTTP/2 client that grants no flow-control window stalls a stream without any write waiting.
    body_stalled: AtomicU64,
    /// 0: open; else 1 + ms when the connection began to close gracefully.
    closing: AtomicU64,
    /// Parking an idle HTTP/1 connection (see `park`): 0 no, 1 asked for, 2 done (its HTTP machinery
    /// was handed an end of input and let go of the socket).
    park: std::sync::atomic::AtomicU8,
}

/// What the watchdog decided at a wake-up.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Sleep until this instant and ask again.
    Wait(Instant),
    /// A request head did not arrive in time: close now.
    HeadTimeout,
    /// Nothing in flight for `idle_timeout`: close gracefully.
    Idle,
    /// The client took nothing written to it for `send_timeout`, or a closing connection with nothing in
    /// flight outlived `header_timeout` (an HTTP/2 client that never answers the closing PING): close
    /// now, cancelling whatever is in flight.
    Abort,
}

impl ConnState {
    pub fn new() -> Self {
        // The head timer runs from accept: a client that connects and never sends a full head is cut off.
        ConnState {
            base: Instant::now(),
            in_flight: AtomicU32::new(0),
            head_started: AtomicU64::new(1),
            last_active: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            changed: AtomicBool::new(false),
            write_stalled: AtomicU64::new(0),
            body_stalled: AtomicU64::new(0),
            closing: AtomicU64::new(0),
            park: std::sync::atomic::AtomicU8::new(0),
        }
    }

    /// Since when nothing has happened on an idle connection (no request in flight, no head begun, not
    /// closing): `None` while it is busy.
    pub fn idle_since(&self) -> Option<Instant> {
        let idle = self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
            && self.closing.load(Ordering::Relaxed) == 0;
        idle.then(|| self.at(self.last_active.load(Ordering::Relaxed)))
    }

    /// The driver asks the connection to park at its next read, if it is still idle then.
    pub fn request_park(&self) {
        self.park.store(1, Ordering::Relaxed);
    }

    pub fn park_requested(&self) -> bool {
        self.park.load(Ordering::Relaxed) == 1
    }

    /// The end of input was handed to the HTTP machinery: the socket is ours again.
    pub fn parked(&self) {
        self.park.store(2, Ordering::Relaxed);
    }

    pub fn is_parked(&self) -> bool {
        self.park.load(Ordering::Relaxed) == 2
    }

    /// Back to serving. With `pending` bytes (a part of the next head, read before the connection
    /// parked), that head has begun: its timeout runs, and the connection does not park again before
    /// it is complete.
    pub fn unpark(&self, pending: bool) {
        self.park.store(0, Ordering::Relaxed);
        if pending {
            self.on_read();
        }
    }

    /// A write to the client could not proceed.
    fn on_write_blocked(&self) {
        if self.write_stalled.load(Ordering::Relaxed) == 0 {
            self.write_stalled
                .store(1 + self.now_ms(), Ordering::Relaxed);
        }
    }

    /// A write to the client proceeded.
    #[inline]
    fn on_write_progress(&self) {
        if self.write_stalled.load(Ordering::Relaxed) != 0 {
            self.write_stalled.store(0, Ordering::Relaxed);
        }
    }

    /// A response body handed out a frame and has more to come: until it is asked for the next one,
    /// the client is not taking what is sent.
    #[inline]
    pub fn body_yielded(&self) {
        if self.body_stalled.load(Ordering::Relaxed) == 0 {
            self.body_stalled
                .store(1 + self.now_ms(), Ordering::Relaxed);
        }
    }

    /// A response body was asked for more (or is done).
    #[inline]
    pub fn body_polled(&self) {
        if self.body_stalled.load(Ordering::Relaxed) != 0 {
            self.body_stalled.store(0, Ordering::Relaxed);
        }
    }

    /// The connection has been asked to close gracefully.
    pub fn closing(&self) {
        self.closing.store(1 + self.now_ms(), Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    /// Bytes arrived from the client.
    fn on_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started
                .store(1 + self.now_ms(), Ordering::Relaxed);
        }
    }

    /// A whole request head was parsed.
    pub fn request_started(&self, http2: bool) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
        if http2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        // While a request is in flight the driver must look at least every send_timeout (a client may
        // stop reading): bring its timer forward if it is set later.
        self.changed.store(true, Ordering::Relaxed);
    }

    /// The response went out, body and all (or the request was abandoned).
    pub fn request_finished(&self) {
        self.last_active.store(self.now_ms(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.changed.store(true, Ordering::Relaxed);
    }

    /// Whether a request started or finished since the last call.
    pub fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::Relaxed)
    }

    pub fn verdict(&self, limits: &Limits) -> Verdict {
        let now = self.now_ms();
        // Deadlines that hold whatever else is going on.
        let mut hard = u64::MAX;
        let send_ms = limits.send_timeout.as_millis() as u64;
        for stalled in [&self.write_stalled, &self.body_stalled] {
            let since = stalled.load(Ordering::Relaxed);
            if since != 0 {
                hard = hard.min(since - 1 + send_ms);
            }
        }
        let closing = self.closing.load(Ordering::Relaxed);
        if closing != 0 && self.in_flight.load(Ordering::Relaxed) == 0 {
            let since = (closing - 1).max(self.last_active.load(Ordering::Relaxed));
            hard = hard.min(since + limits.header_timeout.as_millis() as u64);
        }
        if now >= hard {
            return Verdict::Abort;
        }
        match self.soft_verdict(limits, now) {
            Verdict::Wait(at) => Verdict::Wait(at.min(self.at(hard))),
            // A closing connection is not closed again; it waits for its hard deadline.
            Verdict::Idle if closing != 0 => Verdict::Wait(self.at(hard)),
            v => v,
        }
    }

    fn soft_verdict(&self, limits: &Limits, now: u64) -> Verdict {
        let head = self.head_started.load(Ordering::Relaxed);
        if head != 0 && !self.http2.load(Ordering::Relaxed) {
            let deadline = head - 1 + limits.header_timeout.as_millis() as u64;
            return if now >= deadline {
                Verdict::HeadTimeout
            } else {
                Verdict::Wait(self.at(deadline))
            };
        }
        let idle_ms = limits.idle_timeout.as_millis() as u64;
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            // Wake often enough to see a write stall begin within a send_timeout of it.
            let check = idle_ms.min(limits.send_timeout.as_millis() as u64);
            return Verdict::Wait(self.at(now + check));
        }
        let deadline = self.last_active.load(Ordering::Relaxed) + idle_ms;
        if now >= deadline {
            Verdict::Idle
        } else {
            Verdict::Wait(self.at(deadline))
        }
    }
}

/// The client socket reports to its connection's state.
impl IoEvents for Arc<ConnState> {
    #[inline]
    fn read(&self) {
        self.on_read();
    }

    #[inline]
    fn write_blocked(&self) {
        self.on_write_blocked();
    }

    #[inline]
    fn wrote(&self) {
        self.on_write_progress();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 65536,
            ..Limits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_new_connection_gets_the_head_timeout() {
        let s = ConnState::new();
        assert!(matches!(s.verdict(&limits()), Verdict::Wait(_)));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(s.verdict(&limits()), Verdict::HeadTimeout);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keep_alive_waits_for_the_idle_timeout_not_the_head_timeout() {
        let s = ConnState::new();
        s.request_started(false);
        s.request_finished();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(matches!(s.verdict(&limits()), Verdict::Wait(_)));
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(s.verdict(&limits()), Verdict::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn first_bytes_of_a_new_head_start_the_head_timer() {
        let s = ConnState::new();
        s.request_started(false);
        s.request_finished();
        tokio::time::advance(Duration::from_secs(5)).await;
        s.on_read();
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(matches!(s.verdict(&limits()), Verdict::Wait(_)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(s.verdict(&limits()), Verdict::HeadTimeout);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_request_in_flight_is_never_idle() {
        let s = ConnState::new();
        s.request_started(false);
        s.on_read(); // body bytes
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(matches!(s.verdict(&limits()), Verdict::Wait(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_cut_off_after_send_timeout() {
        let s = ConnState::new();
        s.request_started(false);
        tokio::time::advance(Duration::from_secs(5)).await;
        s.on_write_blocked();
        tokio::time::advance(Duration::from_secs(59)).await;
        s.on_write_blocked(); // still blocked: the stall keeps its start
        assert!(matches!(s.verdict(&limits()), Verdict::Wait(_)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(s.verdict(&limits()), Verdict::Abort);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_frame_nobody_asks_for_is_a_send_stall_too() {
        let s = ConnState::new();
        s.request_started(true);
        s.body_yielded();
        tokio::time::advance(Duration::from_secs(30)).await;
        s.body_polled();
        s.body_yielded();
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(matches!(s.verdict(&limits()), Verdict::Wait(_)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(s.verdict(&limits()), Verdict::Abort);
    }

    #[tokio::test(start_paused = true)]
    async fn write_progress_resets_the_send_deadline() {
        let s = ConnState::new();
        s.request_started(false);
        s.on_write_blocked();
        tokio::time::advance(Duration::from_secs(50)).await;
        s.on_write_progress();
        s.on_write_blocked();
        tokio::time::advance(Duration::from_secs(50)).await;
        assert!(matches!(s.verdict(&limits()), Verdict::Wait(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_closing_connection_lingers_at_most_header_timeout_once_nothing_is_in_flight() {
        let s = ConnState::new();
        s.request_started(true);
        s.closing();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(
            matches!(s.verdict(&limits()), Verdict::Wait(_)),
            "a request in flight finishes"
        );
        s.request_finished();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(matches!(s.verdict(&limits()), Verdict::Wait(_)));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(s.verdict(&limits()), Verdict::Abort);
    }

    #[tokio::test(start_paused = true)]
    async fn http2_connections_only_idle_out() {
        let s = ConnState::new();
        s.request_started(true);
        s.request_finished();
        s.on_read(); // a PING or WINDOW_UPDATE
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(matches!(s.verdict(&limits()), Verdict::Wait(_)));
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(s.verdict(&limits()), Verdict::Idle);
    }
}
