//! An instance's life, as Auto Scaling groups have it: `pending` (launched, registered in the target group
//! as `initial`) → `in_service` (first healthy) → `terminating` (deregistered, draining) → `terminated`.
//! And the back-off that keeps a crash-looping backend from becoming a fork bomb.

use std::time::{Duration, Instant};

use trellis_targets::TargetState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// In the warm pool: launched and kept running, out of service (Auto Scaling's `Warmed:Running`).
    Warmed,
    Pending,
    InService,
    Terminating,
    Terminated,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Warmed => "warmed",
            Lifecycle::Pending => "pending",
            Lifecycle::InService => "in_service",
            Lifecycle::Terminating => "terminating",
            Lifecycle::Terminated => "terminated",
        }
    }
}

/// Why an instance must be replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replace {
    /// Its process exited (or its VM is gone).
    Exited(String),
    /// Unhealthy in its target group after the grace period.
    Unhealthy(String),
}

#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    pub launched_at: Instant,
    pub state: Lifecycle,
    /// Since when it is in service (the end of its warm-up is `in_service_at + instance_warmup`).
    pub in_service_at: Option<Instant>,
    /// Never picked for scale-in.
    pub protected: bool,
}

impl Instance {
    pub fn launched(id: String, now: Instant) -> Self {
        Instance {
            id,
            launched_at: now,
            state: Lifecycle::Pending,
            in_service_at: None,
            protected: false,
        }
    }

    /// Whether its metrics are left out (pending, or in service for less than `warmup`).
    pub fn warming(&self, warmup: Duration, now: Instant) -> bool {
        match (self.state, self.in_service_at) {
            (Lifecycle::Pending, _) => true,
            (Lifecycle::InService, Some(at)) => now.saturating_duration_since(at) < warmup,
            _ => false,
        }
    }

    /// Follows the target's health. A pending instance goes in service on its first healthy check; an
    /// unhealthy one past `grace` since launch must be replaced (failures inside the grace period are
    /// a slow start, not a fault).
    pub fn on_health(
        &mut self,
        health: TargetState,
        reason: &str,
        grace: Duration,
        now: Instant,
    ) -> Option<Replace> {
        match (self.state, health) {
            (Lifecycle::Pending, TargetState::Healthy | TargetState::Unavailable) => {
                self.state = Lifecycle::InService;
                self.in_service_at = Some(now);
                None
            }
            (Lifecycle::Pending | Lifecycle::InService, TargetState::Unhealthy)
                if now.saturating_duration_since(self.launched_at) >= grace =>
            {
                Some(Replace::Unhealthy(reason.to_string()))
            }
            _ => None,
        }
    }

    pub fn terminate(&mut self) {
        if self.state != Lifecycle::Terminated {
            self.state = Lifecycle::Terminating;
        }
    }

    pub fn terminated(&mut self) {
        self.state = Lifecycle::Terminated;
    }
}

/// Exponential back-off between failed launches: 1s, 2s, 4s, … up to 5 minutes; reset once an instance
/// makes it into service.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    failures: u32,
    until: Option<Instant>,
}

const FIRST: Duration = Duration::from_secs(1);
const LONGEST: Duration = Duration::from_secs(300);

impl Backoff {
    /// A launch failed (or the instance died before going in service). Returns the wait before the next.
    pub fn failed(&mut self, now: Instant) -> Duration {
        let wait = FIRST
            .saturating_mul(1u32 << self.failures.min(16))
            .min(LONGEST);
        self.failures = self.failures.saturating_add(1);
        self.until = Some(now + wait);
        wait
    }

    pub fn succeeded(&mut self) {
        *self = Backoff::default();
    }

    /// Whether a launch may happen now.
    pub fn ready(&self, now: Instant) -> bool {
        self.until.is_none_or(|until| now >= until)
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// When the next launch may happen, if it has to wait.
    pub fn until(&self) -> Option<Instant> {
        self.until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_goes_in_service_on_first_health_and_warms_up() {
        let t0 = Instant::now();
        let mut i = Instance::launched("i-1".into(), t0);
        let warmup = Duration::from_secs(10);
        assert!(i.warming(warmup, t0));
        let s = t0 + Duration::from_secs(2);
        assert_eq!(
            i.on_health(TargetState::Initial, "", Duration::ZERO, s),
            None
        );
        assert_eq!(i.state, Lifecycle::Pending);
        assert_eq!(
            i.on_health(TargetState::Healthy, "status 200", Duration::ZERO, s),
            None
        );
        assert_eq!(i.state, Lifecycle::InService);
        assert!(i.warming(warmup, s + Duration::from_secs(9)));
        assert!(!i.warming(warmup, s + Duration::from_secs(10)));
    }

    #[test]
    fn unhealthy_inside_the_grace_period_is_a_slow_start() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(30);
        let mut i = Instance::launched("i-1".into(), t0);
        let early = t0 + Duration::from_secs(5);
        assert_eq!(
            i.on_health(TargetState::Unhealthy, "connect refused", grace, early),
            None
        );
        let late = t0 + Duration::from_secs(31);
        assert_eq!(
            i.on_health(TargetState::Unhealthy, "connect refused", grace, late),
            Some(Replace::Unhealthy("connect refused".into()))
        );
    }

    #[test]
    fn a_crash_loop_backs_off_exponentially_up_to_five_minutes() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert!(b.ready(t0));
        let waits: Vec<u64> = (0..12).map(|_| b.failed(t0).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert!(!b.ready(t0 + Duration::from_secs(299)));
        assert!(b.ready(t0 + Duration::from_secs(300)));
        // Over a minute of crash-looping, at most 6 launches (t = 0, 1, 3, 7, 15, 31), not hundreds.
        let mut b = Backoff::default();
        let (mut t, mut launches) = (t0, 0);
        while t < t0 + Duration::from_secs(60) {
            if b.ready(t) {
                launches += 1;
                b.failed(t);
            }
            t += Duration::from_millis(100);
        }
        assert_eq!(launches, 6);
        b.succeeded();
        assert!(b.ready(t) && b.failures() == 0);
    }
}

/// What `max_instance_lifetime` asks of a group now: instances that reached it are replaced one at a
/// time, launch first and then stop (EC2 Auto Scaling's maximum instance lifetime), so capacity never
/// dips below desired on its account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Nothing has reached its lifetime (or there is no lifetime).
    None,
    /// An instance has: the group may run one over desired while its replacement starts.
    Replace,
    /// The replacement is in service: this instance (an index into the slice given) goes now.
    Retire(usize),
}

/// See [`Renewal`]. In-service, unprotected instances older than `lifetime` are due, oldest first; the
/// oldest is retired once `desired` instances that are not due are in service.
pub fn renewal(
    instances: &[&Instance],
    desired: u32,
    lifetime: Option<Duration>,
    now: Instant,
) -> Renewal {
    let Some(lifetime) = lifetime else {
        return Renewal::None;
    };
    let due = |i: &Instance| {
        i.state == Lifecycle::InService
            && !i.protected
            && now.saturating_duration_since(i.launched_at) >= lifetime
    };
    let Some(oldest) = (0..instances.len())
        .filter(|&k| due(instances[k]))
        .min_by_key(|&k| instances[k].launched_at)
    else {
        return Renewal::None;
    };
    let fresh_in_service = instances
        .iter()
        .filter(|i| i.state == Lifecycle::InService && !due(i))
        .count() as u32;
    if fresh_in_service >= desired {
        Renewal::Retire(oldest)
    } else {
        Renewal::Replace
    }
}

#[cfg(test)]
mod renewal_tests {
    use super::*;

    fn in_service(id: &str, launched_at: Instant) -> Instance {
        let mut i = Instance::launched(id.into(), launched_at);
        i.state = Lifecycle::InService;
        i
    }

    #[test]
    fn an_instance_past_its_lifetime_is_replaced_launch_first() {
        let t0 = Instant::now();
        let life = Some(Duration::from_secs(60));
        let a = in_service("a", t0);
        let b = in_service("b", t0 + Duration::from_secs(30));
        let now = t0 + Duration::from_secs(61);
        // a is due; b alone is not `desired` (2) fresh instances: launch a replacement first.
        assert_eq!(renewal(&[&a, &b], 2, life, now), Renewal::Replace);
        // The replacement pending: still only Replace (the group stays at desired + 1).
        let c = Instance::launched("c".into(), now);
        assert_eq!(renewal(&[&a, &b, &c], 2, life, now), Renewal::Replace);
        // In service: a goes.
        let c = in_service("c", now);
        assert_eq!(renewal(&[&a, &b, &c], 2, life, now), Renewal::Retire(0));
        // Nothing due, or no lifetime: nothing to do; a protected instance is never due.
        assert_eq!(renewal(&[&b, &c], 2, life, now), Renewal::None);
        assert_eq!(renewal(&[&a, &b], 2, None, now), Renewal::None);
        let mut p = in_service("p", t0);
        p.protected = true;
        assert_eq!(renewal(&[&p], 1, life, now), Renewal::None);
        // Oldest first.
        let old = in_service("old", t0 - Duration::from_secs(100));
        let c = in_service("c", now);
        assert_eq!(renewal(&[&a, &old, &c], 1, life, now), Renewal::Retire(1));
    }
}
