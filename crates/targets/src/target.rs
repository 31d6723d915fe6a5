//! One target as the balancer sees it, and its live state.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use trellis_config::OutlierDetection;

use crate::health::{CheckMode, HealthMachine, HealthView, ProbeResult, TargetState, Transition};
use crate::outlier::{ejection_budget, Ejections};

/// Live state of a target group that outlives any one snapshot.
#[derive(Debug, Default)]
pub struct GroupStats {
    /// Registered targets, set when a snapshot is built; bounds how many may be ejected at once.
    members: AtomicUsize,
    ejected: AtomicUsize,
    /// Set while requests are routed to a group with no routable target, so the change is logged once.
    failing_open: AtomicBool,
    /// Retries made and requests seen lately, for `[target_group.retry]`'s budget.
    pub retry_budget: crate::RetryBudget,
    /// Requests waiting for a concurrency slot (`[target_group.concurrency]`).
    pub queue: Queue,
}

/// The requests of a group waiting for a target with fewer than `max_per_target` in flight.
#[derive(Debug, Default)]
pub struct Queue {
    waiting: AtomicU32,
    /// Signalled when a request to one of the group's targets finishes while some wait; a signal with no
    /// one waiting yet is kept for the next to wait, so none is lost between a look and the wait.
    freed: tokio::sync::Notify,
}

/// A place in a group's queue, given up when dropped.
#[derive(Debug)]
pub struct Waiting<'a>(&'a Queue);

impl Queue {
    /// A place in the queue when fewer than `capacity` requests wait.
    pub fn enter(&self, capacity: u32) -> Option<Waiting<'_>> {
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < capacity).then_some(n + 1)
            })
            .ok()
            .map(|_| Waiting(self))
    }

    /// Completes when a request to the group has finished since the last wake-up.
    pub async fn freed(&self) {
        self.freed.notified().await
    }

    pub fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }

    fn slot_freed(&self) {
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.freed.notify_one();
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl GroupStats {
    pub fn set_members(&self, members: usize) {
        self.members.store(members, Ordering::Relaxed);
    }

    pub fn ejected(&self) -> usize {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Records whether the group is failing open; `true` when that changed (log it then, once).
    #[inline]
    pub fn note_failing_open(&self, failing_open: bool) -> bool {
        self.failing_open.load(Ordering::Relaxed) != failing_open
            && self.failing_open.swap(failing_open, Ordering::Relaxed) != failing_open
    }

    fn take_ejection_slot(&self, max_ejection_percent: u8) -> bool {
        let budget = ejection_budget(self.members.load(Ordering::Relaxed), max_ejection_percent);
        self.ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < budget).then_some(n + 1)
            })
            .is_ok()
    }
}

/// Live state of a target that outlives any one routing snapshot: kept in the [`crate::TargetRegistry`]
/// keyed by (target group, address), so in-flight counts and health survive a reload.
#[derive(Debug)]
pub struct TargetStats {
    in_flight: AtomicU32,
    /// Requests finished (response body ended or dropped), for the scaler's request rate. On the same
    /// cache line as `in_flight`, which the same request writes anyway.
    completed: AtomicU64,
    /// Health state allows traffic and the target is not ejected: the only thing the balancer reads.
    routable: AtomicBool,
    /// When `routable` last became true, in nanoseconds on [`clock`]; for slow start.
    routable_since: AtomicU64,
    /// Failed requests in a row, for passive ejection. Kept apart from `health` so that a success costs
    /// one relaxed load, not a lock.
    failures_in_a_row: AtomicU32,
    group: Arc<GroupStats>,
    health: Mutex<Health>,
}

#[derive(Debug)]
struct Health {
    machine: HealthMachine,
    ejections: Ejections,
}

/// A target's health and ejection, for status pages.
#[derive(Debug, Clone)]
pub struct TargetView {
    pub health: HealthView,
    pub ejected_until: Option<Instant>,
    pub ejections: u32,
    pub in_flight: u32,
    /// Requests finished so far.
    pub completed: u64,
}

/// What a run of failed requests did to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ejection {
    /// Out of rotation for `time`; then call [`TargetStats::end_ejection`] with `serial`.
    Ejected { time: Duration, serial: u64 },
    /// Would have been ejected, but `max_ejection_percent` of the group already is.
    OverBudget,
}

impl TargetStats {
    pub(crate) fn new(group: Arc<GroupStats>, now: Instant) -> Self {
        TargetStats {
            in_flight: AtomicU32::new(0),
            completed: AtomicU64::new(0),
            routable: AtomicBool::new(false),
            routable_since: AtomicU64::new(0),
            failures_in_a_row: AtomicU32::new(0),
            group,
            health: Mutex::new(Health {
                machine: HealthMachine::new(now),
                ejections: Ejections::default(),
            }),
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests finished so far (a counter: rates come from differences).
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    #[inline]
    pub fn is_routable(&self) -> bool {
        self.routable.load(Ordering::Relaxed)
    }

    pub fn group(&self) -> &GroupStats {
        &self.group
    }

    pub fn view(&self) -> TargetView {
        let h = self.lock();
        TargetView {
            health: h.machine.view(),
            ejected_until: h.ejections.ejected_until(),
            ejections: h.ejections.count(),
            in_flight: self.in_flight(),
            completed: self.completed(),
        }
    }

    /// Applies the group's check settings (at start and on every reload).
    pub fn configure(&self, mode: CheckMode, now: Instant) -> Option<Transition> {
        self.update(|h| h.machine.configure(mode, now))
    }

    /// Counts one active probe. A target that its probes saw go down and come back (a transition to
    /// `healthy`) also ends its ejection, as Envoy does: the probes have just shown it recovered. One whose
    /// probes kept passing while it failed requests stays ejected until its time is up.
    pub fn observe(&self, probe: ProbeResult, now: Instant) -> Option<Transition> {
        self.update(|h| {
            let transition = h.machine.observe(probe, now);
            if transition
                .as_ref()
                .is_some_and(|t| t.to == TargetState::Healthy)
            {
                self.return_from_ejection(h, now);
            }
            transition
        })
    }

    /// Deregistered: takes no new requests from now on.
    pub fn drain(&self, reason: &str, now: Instant) -> Option<Transition> {
        self.update(|h| h.machine.drain(reason, now))
    }

    /// Registered again while draining: back to `initial`.
    pub fn undrain(&self, now: Instant) -> Option<Transition> {
        self.update(|h| h.machine.undrain(now))
    }

    /// A request to the target succeeded (as far as passive ejection cares).
    #[inline]
    pub fn record_success(&self) {
        if self.failures_in_a_row.load(Ordering::Relaxed) != 0 {
            self.failures_in_a_row.store(0, Ordering::Relaxed);
        }
    }

    /// A request to the target failed (connect error, reset, timeout or 5xx). After
    /// `consecutive_failures` in a row the target is ejected, unless too much of its group already is.
    pub fn record_failure(&self, cfg: &OutlierDetection, now: Instant) -> Option<Ejection> {
        let failures = self.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if !cfg.enabled || failures < cfg.consecutive_failures {
            return None;
        }
        let mut h = self.lock();
        if h.ejections.ejected_until().is_some() {
            return None;
        }
        self.failures_in_a_row.store(0, Ordering::Relaxed);
        if !self.group.take_ejection_slot(cfg.max_ejection_percent) {
            return Some(Ejection::OverBudget);
        }
        let time = h.ejections.eject(cfg, now);
        self.set_routable(&h);
        Some(Ejection::Ejected {
            time,
            serial: h.ejections.serial(),
        })
    }

    /// Ends ejection number `serial` (when its time is up); `false` when that one is already over.
    pub fn end_ejection(&self, serial: u64, now: Instant) -> bool {
        let mut h = self.lock();
        if h.ejections.serial() != serial {
            return false;
        }
        let ended = self.return_from_ejection(&mut h, now);
        self.set_routable(&h);
        ended
    }

    fn return_from_ejection(&self, h: &mut Health, now: Instant) -> bool {
        if !h.ejections.end(now) {
            return false;
        }
        self.group.ejected.fetch_sub(1, Ordering::AcqRel);
        self.failures_in_a_row.store(0, Ordering::Relaxed);
        true
    }

    fn update(&self, change: impl FnOnce(&mut Health) -> Option<Transition>) -> Option<Transition> {
        let mut h = self.lock();
        let transition = change(&mut h);
        self.set_routable(&h);
        transition
    }

    fn set_routable(&self, h: &Health) {
        let routable = h.machine.state().routes() && h.ejections.ejected_until().is_none();
        if !self.routable.swap(routable, Ordering::Relaxed) && routable {
            // New, recovered or back from ejection: slow start runs from here.
            self.routable_since
                .store(clock::nanos(Instant::now()), Ordering::Relaxed);
        }
    }

    /// Makes the target look routable for long (its slow start long over), for tests of the balancer.
    #[cfg(test)]
    pub(crate) fn routable_for_long(&self) {
        self.routable_since.store(0, Ordering::Relaxed);
    }

    /// The share of its weight the target gets now under a slow start of `window`: from
    /// [`clock::RAMP_FLOOR`] when it became routable, linearly to 1 at the end of the window.
    pub fn ramp(&self, now: Instant, window: Duration) -> f64 {
        let since = self.routable_since.load(Ordering::Relaxed);
        clock::ramp(since, clock::nanos(now), window)
    }

    fn lock(&self) -> MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A target in one snapshot: address and weight are fixed for the snapshot's life.
#[derive(Debug, Clone)]
pub struct Target {
    pub address: SocketAddr,
    pub weight: u16,
    pub stats: Arc<TargetStats>,
}

impl Target {
    /// Counts a request as in flight until the returned guard is dropped (when its response body ends).
    pub fn begin(&self) -> InFlight {
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.stats.clone())
    }

    /// [`Self::begin`] if fewer than `max` requests are in flight to the target.
    pub fn try_begin(&self, max: u32) -> Option<InFlight> {
        self.stats
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| InFlight(self.stats.clone()))
    }
}

/// Held for as long as a request to a target is in flight.
#[derive(Debug)]
pub struct InFlight(Arc<TargetStats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.completed.fetch_add(1, Ordering::Relaxed);
        self.0.group.queue.slot_freed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outlier(consecutive_failures: u32) -> OutlierDetection {
        OutlierDetection {
            enabled: true,
            consecutive_failures,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }

    fn healthy(group: &Arc<GroupStats>, now: Instant) -> TargetStats {
        let t = TargetStats::new(group.clone(), now);
        let mode = CheckMode::Checked {
            healthy: 2,
            unhealthy: 2,
        };
        t.configure(mode, now);
        t.observe(ProbeResult::pass("status 200"), now);
        assert!(t.is_routable());
        t
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_the_count() {
        let now = Instant::now();
        let group = Arc::new(GroupStats::default());
        group.set_members(4);
        let t = healthy(&group, now);
        let cfg = outlier(3);
        assert_eq!(t.record_failure(&cfg, now), None);
        assert_eq!(t.record_failure(&cfg, now), None);
        t.record_success();
        assert_eq!(t.record_failure(&cfg, now), None);
        assert_eq!(t.record_failure(&cfg, now), None);
        assert_eq!(
            t.record_failure(&cfg, now),
            Some(Ejection::Ejected {
                time: Duration::from_secs(30),
                serial: 1
            })
        );
        assert!(!t.is_routable());
        assert_eq!(group.ejected(), 1);
        // Still healthy by its probes; only the ejection keeps it out.
        assert_eq!(t.view().health.state, TargetState::Healthy);
        assert!(t.end_ejection(1, now));
        assert!(t.is_routable());
        assert_eq!(group.ejected(), 0);
        assert!(!t.end_ejection(1, now));
    }

    #[test]
    fn never_more_than_max_ejection_percent_of_a_group() {
        let now = Instant::now();
        let group = Arc::new(GroupStats::default());
        group.set_members(3);
        let cfg = outlier(1);
        let a = healthy(&group, now);
        let b = healthy(&group, now);
        assert!(matches!(
            a.record_failure(&cfg, now),
            Some(Ejection::Ejected { .. })
        ));
        assert_eq!(b.record_failure(&cfg, now), Some(Ejection::OverBudget));
        assert!(b.is_routable());
        a.end_ejection(1, now);
        assert!(matches!(
            b.record_failure(&cfg, now),
            Some(Ejection::Ejected { .. })
        ));
    }

    #[test]
    fn disabled_detection_never_ejects() {
        let now = Instant::now();
        let group = Arc::new(GroupStats::default());
        group.set_members(10);
        let t = healthy(&group, now);
        let cfg = OutlierDetection {
            enabled: false,
            ..outlier(1)
        };
        for _ in 0..10 {
            assert_eq!(t.record_failure(&cfg, now), None);
        }
        assert!(t.is_routable());
    }

    #[test]
    fn an_unhealthy_target_stays_out_after_its_ejection_ends() {
        let now = Instant::now();
        let group = Arc::new(GroupStats::default());
        group.set_members(2);
        let t = healthy(&group, now);
        t.record_failure(&outlier(1), now);
        t.observe(ProbeResult::fail("status 500 not in 200"), now);
        t.observe(ProbeResult::fail("status 500 not in 200"), now);
        t.end_ejection(1, now);
        assert!(!t.is_routable());
    }

    #[test]
    fn recovering_by_probes_ends_the_ejection_and_a_stale_timer_cannot_end_the_next() {
        let now = Instant::now();
        let group = Arc::new(GroupStats::default());
        group.set_members(2);
        let t = healthy(&group, now);
        let cfg = outlier(1);
        t.record_failure(&cfg, now);
        let fail = || ProbeResult::fail("connect refused");
        t.observe(fail(), now);
        t.observe(fail(), now);
        assert_eq!(t.view().health.state, TargetState::Unhealthy);
        t.observe(ProbeResult::pass("status 200"), now);
        t.observe(ProbeResult::pass("status 200"), now);
        assert!(t.is_routable(), "healthy again: ejection over");
        assert_eq!(group.ejected(), 0);
        // Ejected again; the first ejection's timer fires now and must not end this one.
        assert!(matches!(
            t.record_failure(&cfg, now),
            Some(Ejection::Ejected { serial: 2, .. })
        ));
        assert!(!t.end_ejection(1, now));
        assert!(!t.is_routable());
        assert!(t.end_ejection(2, now));
        assert!(t.is_routable());
    }
}

/// Time for slow start: nanoseconds since the first use, so an instant fits an atomic.
pub mod clock {
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    /// A target's share right after it became routable: small, not nothing, so that it is seen to work.
    pub const RAMP_FLOOR: f64 = 0.05;

    pub fn nanos(at: Instant) -> u64 {
        static BASE: OnceLock<Instant> = OnceLock::new();
        // 1 + so that 0 can mean "never".
        1 + at
            .saturating_duration_since(*BASE.get_or_init(Instant::now))
            .as_nanos() as u64
    }

    /// The ramp at `now` of a target routable since `since` (both from [`nanos`]; 0: unknown, full).
    pub fn ramp(since: u64, now: u64, window: Duration) -> f64 {
        let window = window.as_nanos() as u64;
        if since == 0 || window == 0 {
            return 1.0;
        }
        let elapsed = now.saturating_sub(since);
        if elapsed >= window {
            return 1.0;
        }
        (elapsed as f64 / window as f64).max(RAMP_FLOOR)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_ramp_is_linear_from_the_floor_to_full() {
            let w = Duration::from_secs(10);
            let s = 1_000;
            assert_eq!(ramp(s, s, w), RAMP_FLOOR);
            assert_eq!(ramp(s, s + 2_500_000_000, w), 0.25);
            assert_eq!(ramp(s, s + 5_000_000_000, w), 0.5);
            assert_eq!(ramp(s, s + 10_000_000_000, w), 1.0);
            assert_eq!(ramp(s, s + 99_000_000_000, w), 1.0);
            assert_eq!(ramp(0, s, w), 1.0, "never routable: no ramp to apply");
            assert_eq!(ramp(s, s, Duration::ZERO), 1.0, "off");
        }
    }
}
