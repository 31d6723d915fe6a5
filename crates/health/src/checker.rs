//! Runs one prober task per checked target and keeps the set in step with the configuration.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::task::AbortHandle;
use trellis_config::{Config, HealthCheck, TargetGroup};
use trellis_targets::{
    CheckMode, ProbeResult, TargetRegistry, TargetState, TargetStats, Transition,
};

use crate::metrics::HealthMetrics;
use crate::probe::probe;
use crate::schedule::ProbeSchedule;
use crate::HealthError;

/// Active health checking for every target group of the running configuration.
pub struct HealthChecker {
    registry: Arc<TargetRegistry>,
    metrics: HealthMetrics,
    state: Mutex<Probers>,
}

#[derive(Default)]
struct Probers {
    running: HashMap<(String, SocketAddr), Prober>,
    /// Every target of the last applied configuration, to drop the metrics of those that go away.
    known: HashSet<(String, SocketAddr)>,
}

/// A running prober; dropping it stops the task.
struct Prober {
    check: HealthCheck,
    task: AbortHandle,
    alive: Alive,
}

impl Drop for Prober {
    fn drop(&mut self) {
        // Under the lock: a prober that is between a probe and its report (on another worker thread)
        // must not report after this, or it would bring back metrics that `apply` is about to remove.
        *self.alive.lock().unwrap_or_else(PoisonError::into_inner) = false;
        self.task.abort();
    }
}

/// Whether a prober may still report; it holds the lock while it does.
type Alive = Arc<Mutex<bool>>;

impl HealthChecker {
    pub fn new(
        registry: Arc<TargetRegistry>,
        prometheus: &prometheus::Registry,
    ) -> Result<Self, HealthError> {
        Ok(HealthChecker {
            registry,
            metrics: HealthMetrics::new(prometheus)?,
            state: Mutex::new(Probers::default()),
        })
    }

    /// Brings every target's state and prober in line with `config`: groups no rule uses are `unused`
    /// and not probed, groups with checks off are `unavailable`, and every target of a checked group has
    /// one prober (restarted when its check settings change). Must run inside a tokio runtime.
    pub fn apply(&self, config: &Config) {
        let in_use = config.target_groups_in_use();
        let now = now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut checked = HashSet::new();
        let mut present = HashSet::new();
        for tg in &config.target_groups {
            let mode = check_mode(tg, in_use.contains(tg.name.as_str()));
            for spec in &tg.targets {
                let key = (tg.name.clone(), spec.address);
                let stats = self.registry.stats(&tg.name, spec.address);
                let transition = stats.configure(mode, now);
                self.report(&tg.name, spec.address, &stats, transition);
                present.insert(key.clone());
                if mode == CheckMode::Disabled || mode == CheckMode::Unused {
                    continue;
                }
                checked.insert(key.clone());
                let current = state.running.get(&key).map(|p| &p.check);
                if current != Some(&tg.health_check) {
                    let prober = self.spawn(tg, spec.address, stats);
                    state.running.insert(key, prober);
                }
            }
        }
        state.running.retain(|key, _| checked.contains(key));
        for (group, address) in state.known.difference(&present) {
            self.metrics.forget(group, &address.to_string());
        }
        let groups = |set: &HashSet<(String, SocketAddr)>| -> HashSet<String> {
            set.iter().map(|(g, _)| g.clone()).collect()
        };
        for group in groups(&state.known).difference(&groups(&present)) {
            self.metrics.forget_group(group);
        }
        state.known = present;
    }

    /// Counts a probe made outside the checker's own schedule — the scaler's check of a warm instance
    /// just before it goes in service — so that the target is healthy from its first moment instead of
    /// waiting up to an interval for its prober's first turn.
    pub fn vouch(&self, group: &str, address: SocketAddr, result: ProbeResult) {
        let Some(stats) = self.registry.get(group, address) else {
            return;
        };
        let transition = stats.observe(result, now());
        self.report(group, address, &stats, transition);
    }

    fn spawn(&self, tg: &TargetGroup, address: SocketAddr, stats: Arc<TargetStats>) -> Prober {
        let check = tg.health_check.clone();
        let group = tg.name.clone();
        let metrics = self.metrics.clone();
        let alive = Arc::new(Mutex::new(true));
        let task = tokio::spawn({
            let check = check.clone();
            let target = Target {
                group,
                address,
                stats,
                metrics,
                alive: alive.clone(),
            };
            async move { run(target, check).await }
        });
        Prober {
            check,
            task: task.abort_handle(),
            alive,
        }
    }

    fn report(
        &self,
        group: &str,
        address: SocketAddr,
        stats: &TargetStats,
        transition: Option<Transition>,
    ) {
        let changed = transition.is_some();
        if let Some(t) = &transition {
            log_transition(group, address, t);
        }
        let state = stats.view().health.state;
        self.metrics
            .record(group, &address.to_string(), state, changed);
    }
}

fn check_mode(tg: &TargetGroup, in_use: bool) -> CheckMode {
    if !in_use {
        CheckMode::Unused
    } else if !tg.health_check.enabled {
        CheckMode::Disabled
    } else {
        CheckMode::Checked {
            healthy: tg.health_check.healthy_threshold,
            unhealthy: tg.health_check.unhealthy_threshold,
        }
    }
}

/// The life of one target's prober: wait, probe, count, forever (until aborted).
async fn run(target: Target, check: HealthCheck) {
    let schedule = ProbeSchedule::new(check.interval, fastrand::Rng::new());
    target.run(schedule, probe, &check).await;
}

/// One probed target and where its results go.
struct Target {
    group: String,
    address: SocketAddr,
    stats: Arc<TargetStats>,
    metrics: HealthMetrics,
    alive: Alive,
}

impl Target {
    /// The probe loop, with the probe passed in so that tests can drive it under simulated time.
    async fn run<'c, P, F>(&self, mut schedule: ProbeSchedule, mut probe: P, check: &'c HealthCheck)
    where
        P: FnMut(&'c HealthCheck, SocketAddr) -> F,
        F: std::future::Future<Output = ProbeResult>,
    {
        let target = self.address.to_string();
        let passes = self
            .metrics
            .probes
            .with_label_values(&[&self.group, "pass"]);
        let failures = self
            .metrics
            .probes
            .with_label_values(&[&self.group, "fail"]);
        loop {
            tokio::time::sleep(schedule.next_delay()).await;
            let result = probe(check, self.address).await;
            if result.passed {
                passes.inc();
            } else {
                failures.inc();
                tracing::debug!(target_group = %self.group, target = %self.address, reason = %result.detail, "health check failed");
            }
            let alive = self.alive.lock().unwrap_or_else(PoisonError::into_inner);
            if !*alive {
                return;
            }
            if let Some(t) = self.stats.observe(result, now()) {
                log_transition(&self.group, self.address, &t);
                self.metrics.record(&self.group, &target, t.to, true);
            }
        }
    }
}

/// Tokio's clock, so that simulated time in tests moves the states' timestamps too.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Every state change is logged exactly once, where it happens.
pub fn log_transition(group: &str, address: SocketAddr, t: &Transition) {
    let (from, to, reason) = (t.from.as_str(), t.to.as_str(), t.reason.as_str());
    if t.to == TargetState::Unhealthy {
        tracing::warn!(target_group = group, target = %address, from, to, reason, "target health changed");
    } else {
        tracing::info!(target_group = group, target = %address, from, to, reason, "target health changed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::Duration;

    fn check(interval: Duration) -> HealthCheck {
        let config = trellis_config::parse(
            "[[service]]\nname = \"s\"\nhosts = [\"*\"]\n\
             [[service.listener]]\nname = \"l\"\nprotocol = \"http\"\nport = 1\n\
             default_action = { forward = [{ target_group = \"g\" }] }\n\
             [[target_group]]\nname = \"g\"\ntargets = [\"127.0.0.1:1\"]\n",
            std::path::Path::new("t.toml"),
        )
        .expect("valid");
        HealthCheck {
            interval,
            ..config.target_groups[0].health_check.clone()
        }
    }

    /// A target whose probe answers come from a script; every probe's (simulated) time is recorded.
    struct Scripted {
        answers: Mutex<VecDeque<bool>>,
        at: Mutex<Vec<tokio::time::Instant>>,
    }

    /// Runs the real probe loop under paused time with Lattice's defaults (interval 30s, healthy 5,
    /// unhealthy 2) and checks when each flip happens.
    #[tokio::test(start_paused = true)]
    async fn flips_happen_after_the_threshold_counts_within_interval_bounds() {
        let interval = Duration::from_secs(30);
        let check = check(interval);
        assert_eq!((check.healthy_threshold, check.unhealthy_threshold), (5, 2));
        let registry = TargetRegistry::default();
        let address: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let stats = registry.stats("g", address);
        stats.configure(
            CheckMode::Checked {
                healthy: 5,
                unhealthy: 2,
            },
            now(),
        );
        let metrics = HealthMetrics::new(&prometheus::Registry::new()).unwrap();
        let target = Target {
            group: "g".into(),
            address,
            stats: stats.clone(),
            metrics,
            alive: Arc::new(Mutex::new(true)),
        };
        // pass once (initial -> healthy), fail twice (-> unhealthy), then pass five times (-> healthy).
        let script = [true, false, false, true, true, true, true, true, true];
        let scripted = Scripted {
            answers: Mutex::new(script.into_iter().collect()),
            at: Mutex::new(Vec::new()),
        };
        let start = tokio::time::Instant::now();
        let probe = |_: &HealthCheck, _: SocketAddr| {
            scripted
                .at
                .lock()
                .unwrap()
                .push(tokio::time::Instant::now());
            let pass = scripted.answers.lock().unwrap().pop_front().unwrap_or(true);
            async move {
                if pass {
                    ProbeResult::pass("status 200")
                } else {
                    ProbeResult::fail("status 500 not in 200")
                }
            }
        };
        let schedule = ProbeSchedule::new(interval, fastrand::Rng::with_seed(7));
        let run = target.run(schedule, probe, &check);
        tokio::pin!(run);
        let mut states = Vec::new();
        for _ in 0..script.len() {
            let before = scripted.at.lock().unwrap().len();
            // Advance until the next probe has happened.
            while scripted.at.lock().unwrap().len() == before {
                tokio::select! {
                    _ = &mut run => unreachable!(),
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            states.push(stats.view().health.state);
        }
        use TargetState::*;
        assert_eq!(
            states,
            [
                Healthy, Healthy, Unhealthy, Unhealthy, Unhealthy, Unhealthy, Unhealthy, Healthy,
                Healthy
            ]
        );
        let at = scripted.at.lock().unwrap().clone();
        assert!(
            at[0] - start < Duration::from_secs(1),
            "first probe within a second"
        );
        assert!(at[1] - at[0] < interval, "second probe within an interval");
        for pair in at[1..].windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap <= interval && gap >= interval.mul_f64(0.95), "{gap:?}");
        }
        // Recovery: the first passing probe after the fault (index 3) to healthy (index 7) is within
        // healthy_threshold intervals.
        assert!(at[7] - at[3] <= interval * 4);
    }
}
