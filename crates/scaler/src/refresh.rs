//! Instance refresh, as EC2 Auto Scaling has it: every instance launched before the refresh is replaced by
//! one from the current launch, in batches kept within `min_healthy_percent` and `max_healthy_percent` of
//! desired; a new instance counts only once it is in service; protected instances are skipped and
//! reported; new instances that keep failing end the refresh, or with `auto_rollback` turn it around so
//! that the new instances are replaced by the previous launch.
//!
//! Each launch configuration a group runs is a *generation*; an instance carries the one it was launched
//! from. A refresh goes from `previous` to `target`: every live instance of another generation is "old".
//! Pure: the controller hands in its instances and desired capacity each tick and gets back the capacity
//! to converge to and the old instances to drain now.

use trellis_config::InstanceRefresh;

use crate::{Instance, Lifecycle};

/// New instances failing in a row (launch error, exit or unhealthy before service, abandoned by a hook)
/// that end a refresh.
pub const FAILURES_TO_GIVE_UP: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshStatus {
    Pending,
    InProgress,
    Successful,
    Failed,
    Cancelled,
    RolledBack,
}

impl RefreshStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshStatus::Pending => "pending",
            RefreshStatus::InProgress => "in_progress",
            RefreshStatus::Successful => "successful",
            RefreshStatus::Failed => "failed",
            RefreshStatus::Cancelled => "cancelled",
            RefreshStatus::RolledBack => "rolled_back",
        }
    }

    pub fn is_done(self) -> bool {
        !matches!(self, RefreshStatus::Pending | RefreshStatus::InProgress)
    }
}

/// An instance as a refresh sees it.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    pub instance: &'a Instance,
    pub generation: u64,
}

/// What a refresh asks of the group this tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Live (pending and in-service) instances to converge to: the launches the refresh wants included.
    pub capacity: u32,
    /// Indexes (into the members given) of old instances to drain and stop now.
    pub terminate: Vec<usize>,
}

/// What the failure of one of a refresh's new instances did to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Counted; the refresh goes on.
    Counted,
    /// The refresh gave up: it is `failed`.
    Failed,
    /// The refresh turned around: the previous generation is the target now.
    RollingBack,
}

#[derive(Debug, Clone)]
pub struct Refresh {
    pub id: u64,
    pub status: RefreshStatus,
    pub preferences: InstanceRefresh,
    /// The generation instances are replaced with.
    pub target: u64,
    /// The generation before the refresh: what a rollback goes back to.
    pub previous: u64,
    pub rolling_back: bool,
    pub reason: String,
    /// Protected old instances left as they are.
    pub skipped: Vec<String>,
    /// Old instances to replace, counted when the refresh (or its rollback) started.
    total: u32,
    /// New instances in service now, for `percentage_complete`.
    replaced: u32,
    failures: u32,
}

impl Refresh {
    pub fn new(id: u64, preferences: InstanceRefresh, previous: u64, target: u64) -> Self {
        Refresh {
            id,
            status: RefreshStatus::Pending,
            preferences,
            target,
            previous,
            rolling_back: false,
            reason: String::new(),
            skipped: Vec::new(),
            total: 0,
            replaced: 0,
            failures: 0,
        }
    }

    /// Of the instances to replace, the share whose replacement is in service.
    pub fn percentage_complete(&self) -> u32 {
        match self.status {
            RefreshStatus::Successful | RefreshStatus::RolledBack => 100,
            _ if self.total == 0 => 0,
            _ => self.replaced.min(self.total) * 100 / self.total,
        }
    }

    pub fn cancel(&mut self, reason: &str) {
        if !self.status.is_done() {
            self.status = RefreshStatus::Cancelled;
            self.reason = reason.to_string();
        }
    }

    /// A new instance went in service: the failures in a row start over.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// One of the refresh's new instances failed.
    pub fn failed(&mut self, why: &str) -> Failure {
        if self.status.is_done() {
            return Failure::Counted;
        }
        self.failures += 1;
        if self.failures < FAILURES_TO_GIVE_UP {
            return Failure::Counted;
        }
        if self.preferences.auto_rollback && !self.rolling_back {
            self.rolling_back = true;
            std::mem::swap(&mut self.target, &mut self.previous);
            self.failures = 0;
            self.total = 0;
            self.reason = format!(
                "{FAILURES_TO_GIVE_UP} new instances failed in a row (last: {why}); rolling back to the previous launch"
            );
            return Failure::RollingBack;
        }
        self.status = RefreshStatus::Failed;
        self.reason = if self.rolling_back {
            format!("the rollback failed too: {FAILURES_TO_GIVE_UP} instances of the previous launch failed in a row (last: {why})")
        } else {
            format!("{FAILURES_TO_GIVE_UP} new instances failed in a row (last: {why})")
        };
        Failure::Failed
    }

    /// One tick: which old instances go now, and how many live instances the group should have.
    pub fn step(&mut self, members: &[Member], desired: u32) -> Step {
        if self.status.is_done() {
            return Step {
                capacity: desired,
                terminate: Vec::new(),
            };
        }
        let live =
            |m: &Member| matches!(m.instance.state, Lifecycle::Pending | Lifecycle::InService);
        let old = |m: &Member| live(m) && m.generation != self.target;
        let count = |f: &dyn Fn(&Member) -> bool| members.iter().filter(|m| f(m)).count() as u32;
        let replaceable = count(&|m| old(m) && !m.instance.protected);
        let new_live = count(&|m| live(m) && m.generation == self.target);
        let new_pending =
            count(&|m| m.generation == self.target && m.instance.state == Lifecycle::Pending);
        self.replaced = new_live - new_pending;
        self.skipped = members
            .iter()
            .filter(|m| old(m) && m.instance.protected)
            .map(|m| m.instance.id.clone())
            .collect();
        if self.status == RefreshStatus::Pending || self.total == 0 {
            self.status = RefreshStatus::InProgress;
            self.total = replaceable;
        }
        if replaceable == 0 && new_pending == 0 {
            self.status = if self.rolling_back {
                RefreshStatus::RolledBack
            } else {
                RefreshStatus::Successful
            };
            if !self.rolling_back {
                self.reason = match self.skipped.len() {
                    0 => String::new(),
                    n => format!(
                        "{n} protected instance(s) skipped: {}",
                        self.skipped.join(", ")
                    ),
                };
            }
            return Step {
                capacity: desired,
                terminate: Vec::new(),
            };
        }

        // The bounds, in instances. With no room between them the refresh still moves one at a time
        // (Auto Scaling does the same), so the floor gives way.
        let floor = (desired * self.preferences.min_healthy_percent).div_ceil(100);
        let ceiling = (desired * self.preferences.max_healthy_percent / 100).max(desired);
        let floor = if ceiling <= floor {
            ceiling.saturating_sub(1)
        } else {
            floor
        };
        let in_service = count(&|m| live(m) && m.instance.state == Lifecycle::InService);

        // Old instances still pending serve nothing: they go first; then the oldest in service, as
        // far as the floor allows.
        let mut terminate: Vec<usize> = (0..members.len())
            .filter(|&i| {
                let m = &members[i];
                old(m) && !m.instance.protected && m.instance.state == Lifecycle::Pending
            })
            .collect();
        let mut serving: Vec<usize> = (0..members.len())
            .filter(|&i| {
                let m = &members[i];
                old(m) && !m.instance.protected && m.instance.state == Lifecycle::InService
            })
            .collect();
        serving.sort_by_key(|&i| members[i].instance.launched_at);
        let room = in_service.saturating_sub(floor) as usize;
        terminate.extend(serving.into_iter().take(room));

        let live_after = count(&live) - terminate.len() as u32;
        let protected_old = count(&|m| old(m) && m.instance.protected);
        let needed = desired.saturating_sub(new_live + protected_old);
        let launches = needed.min(ceiling.saturating_sub(live_after));
        Step {
            capacity: live_after + launches,
            terminate,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn prefs(min: u32, max: u32) -> InstanceRefresh {
        InstanceRefresh {
            min_healthy_percent: min,
            max_healthy_percent: max,
            auto_rollback: true,
            on_launch_change: true,
        }
    }

    /// A simulated group: instances with their generation; the refresh's steps are applied as the
    /// controller would (terminate, then launch up to capacity as pending), and pending instances go
    /// in service when `boot` says so.
    struct Sim {
        instances: Vec<(Instance, u64)>,
        next: u32,
        t0: Instant,
        /// The fewest in-service instances seen, and the most live ones.
        fewest_in_service: u32,
        most_live: u32,
    }

    impl Sim {
        fn new(n: u32) -> Self {
            let t0 = Instant::now();
            let mut sim = Sim {
                instances: Vec::new(),
                next: 0,
                t0,
                fewest_in_service: u32::MAX,
                most_live: 0,
            };
            for _ in 0..n {
                sim.launch(1);
                sim.instances.last_mut().unwrap().0.state = Lifecycle::InService;
            }
            sim
        }

        fn launch(&mut self, generation: u64) {
            self.next += 1;
            let at = self.t0 + Duration::from_secs(u64::from(self.next));
            self.instances.push((
                Instance::launched(format!("i-{}", self.next), at),
                generation,
            ));
        }

        fn members(&self) -> Vec<Member<'_>> {
            self.instances
                .iter()
                .map(|(instance, generation)| Member {
                    instance,
                    generation: *generation,
                })
                .collect()
        }

        fn count(&self, state: Lifecycle) -> u32 {
            self.instances
                .iter()
                .filter(|(i, _)| i.state == state)
                .count() as u32
        }

        /// One tick; `boot` decides whether a pending instance of a generation goes in service (true)
        /// or fails (false).
        fn tick(&mut self, refresh: &mut Refresh, desired: u32, boot: impl Fn(u64) -> bool) {
            let step = refresh.step(&self.members(), desired);
            for &i in &step.terminate {
                self.instances[i].0.terminate();
            }
            self.instances
                .retain(|(i, _)| i.state != Lifecycle::Terminating);
            let live = self.instances.len() as u32;
            for _ in live..step.capacity {
                self.launch(refresh.target);
            }
            self.most_live = self.most_live.max(self.instances.len() as u32);
            self.fewest_in_service = self.fewest_in_service.min(self.count(Lifecycle::InService));
            // Boot: pending instances go in service or fail.
            let mut failed = Vec::new();
            for (k, (i, generation)) in self.instances.iter_mut().enumerate() {
                if i.state == Lifecycle::Pending {
                    if boot(*generation) {
                        i.state = Lifecycle::InService;
                        refresh.succeeded();
                    } else {
                        failed.push(k);
                    }
                }
            }
            for k in failed.into_iter().rev() {
                self.instances.remove(k);
                refresh.failed("exited");
            }
        }

        fn generations(&self) -> Vec<u64> {
            self.instances.iter().map(|(_, g)| *g).collect()
        }
    }

    #[test]
    fn launch_before_stop_never_goes_below_desired() {
        for desired in [1, 2, 3, 5] {
            let mut sim = Sim::new(desired);
            let mut r = Refresh::new(1, prefs(100, 200), 1, 2);
            for _ in 0..20 {
                sim.tick(&mut r, desired, |_| true);
            }
            assert_eq!(r.status, RefreshStatus::Successful, "desired {desired}");
            assert_eq!(r.percentage_complete(), 100);
            assert_eq!(sim.generations(), vec![2; desired as usize]);
            assert_eq!(sim.fewest_in_service, desired, "desired {desired}");
            assert!(sim.most_live <= 2 * desired);
        }
    }

    #[test]
    fn the_healthy_bounds_set_the_batch() {
        // min 50, max 100 over 4: two are stopped first, two launched, then the other two.
        let mut sim = Sim::new(4);
        let mut r = Refresh::new(1, prefs(50, 100), 1, 2);
        let step = r.step(&sim.members(), 4);
        assert_eq!(step.terminate.len(), 2);
        assert_eq!(step.capacity, 4);
        for _ in 0..10 {
            sim.tick(&mut r, 4, |_| true);
        }
        assert_eq!(r.status, RefreshStatus::Successful);
        assert_eq!(sim.fewest_in_service, 2);
        assert_eq!(sim.most_live, 4);
        // min 100, max 150 over 4: at most two new ones at a time.
        let mut sim = Sim::new(4);
        let mut r = Refresh::new(1, prefs(100, 150), 1, 2);
        assert_eq!(
            r.step(&sim.members(), 4),
            Step {
                capacity: 6,
                terminate: vec![]
            }
        );
        for _ in 0..10 {
            sim.tick(&mut r, 4, |_| true);
        }
        assert_eq!(r.status, RefreshStatus::Successful);
        assert_eq!((sim.fewest_in_service, sim.most_live), (4, 6));
        // No room between the bounds (90 and 100 of one instance): one at a time, stop first.
        let mut sim = Sim::new(1);
        let mut r = Refresh::new(1, prefs(90, 100), 1, 2);
        let step = r.step(&sim.members(), 1);
        assert_eq!(step.terminate, vec![0]);
        sim.tick(&mut r, 1, |_| true);
        sim.tick(&mut r, 1, |_| true);
        assert_eq!(r.status, RefreshStatus::Successful);
    }

    #[test]
    fn a_new_instance_counts_only_once_in_service() {
        let mut sim = Sim::new(2);
        let mut r = Refresh::new(1, prefs(100, 200), 1, 2);
        // Two launched, still pending: nothing replaced, nothing stopped.
        let step = r.step(&sim.members(), 2);
        assert_eq!((step.capacity, step.terminate.len()), (4, 0));
        sim.launch(2);
        sim.launch(2);
        let step = r.step(&sim.members(), 2);
        assert_eq!((step.capacity, step.terminate.len()), (4, 0));
        assert_eq!(r.percentage_complete(), 0);
        // One in service: one old one goes, and it is the oldest.
        sim.instances[2].0.state = Lifecycle::InService;
        let step = r.step(&sim.members(), 2);
        assert_eq!(step.terminate, vec![0]);
        assert_eq!(step.capacity, 3);
        assert_eq!(r.percentage_complete(), 50);
    }

    #[test]
    fn protected_instances_are_skipped_and_reported() {
        let mut sim = Sim::new(3);
        sim.instances[1].0.protected = true;
        let mut r = Refresh::new(1, prefs(100, 200), 1, 2);
        for _ in 0..10 {
            sim.tick(&mut r, 3, |_| true);
        }
        assert_eq!(r.status, RefreshStatus::Successful);
        assert_eq!(sim.generations().iter().filter(|&&g| g == 2).count(), 2);
        assert_eq!(sim.instances.len(), 3);
        assert_eq!(r.skipped, vec!["i-2".to_string()]);
        assert!(r.reason.contains("i-2"), "{}", r.reason);
    }

    #[test]
    fn a_launch_that_never_serves_rolls_back_and_the_old_ones_serve_throughout() {
        let mut sim = Sim::new(2);
        let mut r = Refresh::new(1, prefs(100, 200), 1, 2);
        for _ in 0..10 {
            sim.tick(&mut r, 2, |g| g == 1);
        }
        assert!(r.rolling_back);
        assert_eq!(r.status, RefreshStatus::RolledBack, "{r:?}");
        assert_eq!(sim.generations(), vec![1, 1]);
        assert_eq!(sim.fewest_in_service, 2);
        assert!(r.reason.contains("rolling back"), "{}", r.reason);

        // Without auto_rollback: failed, the old ones still there.
        let mut sim = Sim::new(2);
        let mut r = Refresh::new(1, prefs(100, 200), 1, 2);
        r.preferences.auto_rollback = false;
        for _ in 0..10 {
            sim.tick(&mut r, 2, |g| g == 1);
        }
        assert_eq!(r.status, RefreshStatus::Failed);
        assert_eq!(sim.generations(), vec![1, 1]);
        // Done: the group converges on desired and nothing more is stopped.
        assert_eq!(
            r.step(&sim.members(), 2),
            Step {
                capacity: 2,
                terminate: vec![]
            }
        );
    }

    #[test]
    fn a_success_between_failures_starts_the_count_over_and_cancel_stops() {
        let mut r = Refresh::new(1, prefs(100, 200), 1, 2);
        assert_eq!(r.failed("x"), Failure::Counted);
        assert_eq!(r.failed("x"), Failure::Counted);
        r.succeeded();
        assert_eq!(r.failed("x"), Failure::Counted);
        assert_eq!(r.failed("x"), Failure::Counted);
        assert_eq!(r.failed("x"), Failure::RollingBack);
        assert_eq!((r.target, r.previous), (1, 2));
        r.cancel("by an operator");
        assert_eq!(r.status, RefreshStatus::Cancelled);
        assert_eq!(r.failed("x"), Failure::Counted);
        // An empty group is refreshed at once.
        let mut r = Refresh::new(2, prefs(100, 200), 1, 2);
        assert_eq!(r.step(&[], 0).capacity, 0);
        assert_eq!(r.status, RefreshStatus::Successful);
    }
}
