//! Target health as Lattice shows it: the state machine that turns probe results into states.
//!
//! Plain data driven by `now` and probe outcomes, so every transition is tested without sockets or clocks.

use std::time::Instant;

/// Lattice's target states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetState {
    /// Registered, no check passed yet: takes no traffic (unless the whole group fails open).
    Initial,
    Healthy,
    Unhealthy,
    /// Deregistered: no new requests, in-flight ones finish.
    Draining,
    /// Health checks are off for the group: routed as healthy.
    Unavailable,
    /// No rule or default action forwards to the group.
    Unused,
}

impl TargetState {
    pub const ALL: [TargetState; 6] = [
        TargetState::Initial,
        TargetState::Healthy,
        TargetState::Unhealthy,
        TargetState::Draining,
        TargetState::Unavailable,
        TargetState::Unused,
    ];
}

impl TargetState {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Initial => "initial",
            TargetState::Healthy => "healthy",
            TargetState::Unhealthy => "unhealthy",
            TargetState::Draining => "draining",
            TargetState::Unavailable => "unavailable",
            TargetState::Unused => "unused",
        }
    }

    /// Whether the state lets the target take new requests.
    pub fn routes(self) -> bool {
        matches!(self, TargetState::Healthy | TargetState::Unavailable)
    }
}

impl std::fmt::Display for TargetState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the target's group is set up, which decides whether probes drive its state at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckMode {
    /// No rule or default action forwards to the group: not probed.
    Unused,
    /// `health_check.enabled = false`.
    Disabled,
    /// Probed; the thresholds are consecutive probe counts (1..=10).
    Checked { healthy: u32, unhealthy: u32 },
}

/// One probe's verdict and what it saw: `status 200`, `connect refused`, `timeout after 5s`, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub passed: bool,
    pub detail: String,
}

impl ProbeResult {
    pub fn pass(detail: impl Into<String>) -> Self {
        ProbeResult {
            passed: true,
            detail: detail.into(),
        }
    }

    pub fn fail(detail: impl Into<String>) -> Self {
        ProbeResult {
            passed: false,
            detail: detail.into(),
        }
    }
}

/// A change of state, to be logged once and counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: TargetState,
    pub to: TargetState,
    pub reason: String,
}

/// What a target's health looks like right now (for status pages).
#[derive(Debug, Clone)]
pub struct HealthView {
    pub state: TargetState,
    pub reason: String,
    pub since: Instant,
    pub last_probe: Option<(ProbeResult, Instant)>,
    pub consecutive_passes: u32,
    pub consecutive_failures: u32,
}

#[derive(Debug, Clone)]
pub struct HealthMachine {
    mode: CheckMode,
    state: TargetState,
    reason: String,
    since: Instant,
    passes: u32,
    failures: u32,
    last_probe: Option<(ProbeResult, Instant)>,
}

const WAITING: &str = "waiting for the first health check to pass";

impl HealthMachine {
    /// A newly registered target: `initial` until the group's mode is applied with [`Self::configure`].
    pub fn new(now: Instant) -> Self {
        HealthMachine {
            mode: CheckMode::Checked {
                healthy: 1,
                unhealthy: 1,
            },
            state: TargetState::Initial,
            reason: WAITING.to_string(),
            since: now,
            passes: 0,
            failures: 0,
            last_probe: None,
        }
    }

    pub fn state(&self) -> TargetState {
        self.state
    }

    pub fn view(&self) -> HealthView {
        HealthView {
            state: self.state,
            reason: self.reason.clone(),
            since: self.since,
            last_probe: self.last_probe.clone(),
            consecutive_passes: self.passes,
            consecutive_failures: self.failures,
        }
    }

    /// Applies the group's (possibly reloaded) check settings. Checked targets keep their state across a
    /// change of thresholds; a target coming from `unused` or `unavailable` starts over as `initial`.
    pub fn configure(&mut self, mode: CheckMode, now: Instant) -> Option<Transition> {
        self.mode = mode;
        if self.state == TargetState::Draining {
            return None;
        }
        match mode {
            CheckMode::Unused => self.enter(
                TargetState::Unused,
                "no rule or default action forwards to this target group",
                now,
            ),
            CheckMode::Disabled => {
                self.enter(TargetState::Unavailable, "health checks are disabled", now)
            }
            CheckMode::Checked { .. } => match self.state {
                TargetState::Unused | TargetState::Unavailable => {
                    self.enter(TargetState::Initial, WAITING, now)
                }
                _ => None,
            },
        }
    }

    /// Counts one probe. From `initial` one pass makes the target healthy; otherwise it takes the
    /// thresholds' number of consecutive results to flip.
    pub fn observe(&mut self, probe: ProbeResult, now: Instant) -> Option<Transition> {
        let CheckMode::Checked { healthy, unhealthy } = self.mode else {
            return None;
        };
        if !matches!(
            self.state,
            TargetState::Initial | TargetState::Healthy | TargetState::Unhealthy
        ) {
            return None;
        }
        let passed = probe.passed;
        let detail = probe.detail.clone();
        self.last_probe = Some((probe, now));
        if passed {
            self.passes = self.passes.saturating_add(1);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.passes = 0;
        }
        let next = match self.state {
            TargetState::Initial if passed => TargetState::Healthy,
            TargetState::Initial | TargetState::Healthy if self.failures >= unhealthy => {
                TargetState::Unhealthy
            }
            TargetState::Unhealthy if self.passes >= healthy => TargetState::Healthy,
            _ => return None,
        };
        self.enter(next, &detail, now)
    }

    /// Deregistered: no new requests from now on; probes no longer count.
    pub fn drain(&mut self, reason: &str, now: Instant) -> Option<Transition> {
        self.enter(TargetState::Draining, reason, now)
    }

    /// Registered again while draining: starts over as `initial` (the group's mode is applied next).
    pub fn undrain(&mut self, now: Instant) -> Option<Transition> {
        if self.state != TargetState::Draining {
            return None;
        }
        self.enter(TargetState::Initial, "registered again while draining", now)
    }

    fn enter(&mut self, to: TargetState, reason: &str, now: Instant) -> Option<Transition> {
        if self.state == to {
            return None;
        }
        let from = self.state;
        self.state = to;
        self.reason = reason.to_string();
        self.since = now;
        self.passes = 0;
        self.failures = 0;
        Some(Transition {
            from,
            to,
            reason: self.reason.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const CHECKED: CheckMode = CheckMode::Checked {
        healthy: 3,
        unhealthy: 2,
    };

    fn checked(now: Instant) -> HealthMachine {
        let mut m = HealthMachine::new(now);
        assert_eq!(m.configure(CHECKED, now), None);
        m
    }

    fn fail(m: &mut HealthMachine, now: Instant) -> Option<Transition> {
        m.observe(ProbeResult::fail("connect refused"), now)
    }

    fn pass(m: &mut HealthMachine, now: Instant) -> Option<Transition> {
        m.observe(ProbeResult::pass("status 200"), now)
    }

    #[test]
    fn initial_takes_no_traffic_and_one_pass_makes_it_healthy() {
        let t0 = Instant::now();
        let mut m = checked(t0);
        assert_eq!(m.state(), TargetState::Initial);
        assert!(!m.state().routes());
        let t = pass(&mut m, t0 + Duration::from_secs(1)).expect("flips");
        assert_eq!((t.from, t.to), (TargetState::Initial, TargetState::Healthy));
        assert_eq!(t.reason, "status 200");
        assert!(m.state().routes());
        assert_eq!(m.view().since, t0 + Duration::from_secs(1));
    }

    #[test]
    fn initial_goes_unhealthy_after_the_unhealthy_threshold() {
        let t0 = Instant::now();
        let mut m = checked(t0);
        assert_eq!(fail(&mut m, t0), None);
        assert_eq!(m.state(), TargetState::Initial);
        let t = fail(&mut m, t0).expect("second failure flips");
        assert_eq!(t.to, TargetState::Unhealthy);
        assert_eq!(t.reason, "connect refused");
    }

    #[test]
    fn thresholds_count_consecutive_results_only() {
        let t0 = Instant::now();
        let mut m = checked(t0);
        pass(&mut m, t0);
        // fail, pass, fail: never two failures in a row.
        for _ in 0..5 {
            assert_eq!(fail(&mut m, t0), None);
            assert_eq!(pass(&mut m, t0), None);
        }
        assert_eq!(m.state(), TargetState::Healthy);
        fail(&mut m, t0);
        assert_eq!(fail(&mut m, t0).map(|t| t.to), Some(TargetState::Unhealthy));
        // Back needs three passes in a row; a failure in between starts the count again.
        pass(&mut m, t0);
        pass(&mut m, t0);
        fail(&mut m, t0);
        pass(&mut m, t0);
        pass(&mut m, t0);
        assert_eq!(m.state(), TargetState::Unhealthy);
        assert_eq!(m.view().consecutive_passes, 2);
        assert_eq!(pass(&mut m, t0).map(|t| t.to), Some(TargetState::Healthy));
    }

    #[test]
    fn status_reason_is_the_deciding_probe() {
        let t0 = Instant::now();
        let mut m = checked(t0);
        pass(&mut m, t0);
        m.observe(ProbeResult::fail("timeout after 5s"), t0);
        let t = m
            .observe(ProbeResult::fail("status 500 not in 200-299"), t0)
            .unwrap();
        assert_eq!(t.reason, "status 500 not in 200-299");
        assert_eq!(m.view().reason, "status 500 not in 200-299");
    }

    #[test]
    fn unused_and_disabled_ignore_probes() {
        let t0 = Instant::now();
        let mut m = HealthMachine::new(t0);
        let t = m.configure(CheckMode::Unused, t0).unwrap();
        assert_eq!(t.to, TargetState::Unused);
        assert_eq!(fail(&mut m, t0), None);
        assert!(!m.state().routes());
        let t = m.configure(CheckMode::Disabled, t0).unwrap();
        assert_eq!(t.to, TargetState::Unavailable);
        assert!(m.state().routes(), "unavailable is routed as healthy");
        assert_eq!(fail(&mut m, t0), None);
        assert_eq!(fail(&mut m, t0), None);
        assert_eq!(m.state(), TargetState::Unavailable);
        // Checks turned on by a reload: starts over.
        let t = m.configure(CHECKED, t0).unwrap();
        assert_eq!(t.to, TargetState::Initial);
    }

    #[test]
    fn new_thresholds_keep_the_state() {
        let t0 = Instant::now();
        let mut m = checked(t0);
        pass(&mut m, t0);
        let m2 = CheckMode::Checked {
            healthy: 1,
            unhealthy: 1,
        };
        assert_eq!(m.configure(m2, t0), None);
        assert_eq!(m.state(), TargetState::Healthy);
        assert_eq!(fail(&mut m, t0).map(|t| t.to), Some(TargetState::Unhealthy));
    }

    #[test]
    fn draining_is_final_for_probes() {
        let t0 = Instant::now();
        let mut m = checked(t0);
        pass(&mut m, t0);
        assert_eq!(
            m.drain("deregistered", t0).map(|t| t.to),
            Some(TargetState::Draining)
        );
        assert!(!m.state().routes());
        assert_eq!(pass(&mut m, t0), None);
        assert_eq!(m.configure(CheckMode::Disabled, t0), None);
        assert_eq!(m.state(), TargetState::Draining);
        assert_eq!(
            m.undrain(t0).map(|t| t.to),
            Some(TargetState::Initial),
            "registered again"
        );
        assert_eq!(m.undrain(t0), None);
    }
}
