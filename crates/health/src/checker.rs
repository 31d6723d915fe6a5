//! Runs one prober task per checked target and keeps the set in step with the configuration.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::task::AbortHandle;
use trellis_config::{Config, HealthCheck, TargetGroup};
use trellis_targets::{CheckMode, TargetRegistry, TargetState, TargetStats, Transition};

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
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.task.abort();
    }
}

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
        let now = Instant::now();
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
        state.known = present;
    }

    fn spawn(&self, tg: &TargetGroup, address: SocketAddr, stats: Arc<TargetStats>) -> Prober {
        let check = tg.health_check.clone();
        let group = tg.name.clone();
        let metrics = self.metrics.clone();
        let task = tokio::spawn({
            let check = check.clone();
            async move { run(group, address, check, stats, metrics).await }
        });
        Prober {
            check,
            task: task.abort_handle(),
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
async fn run(
    group: String,
    address: SocketAddr,
    check: HealthCheck,
    stats: Arc<TargetStats>,
    metrics: HealthMetrics,
) {
    let mut schedule = ProbeSchedule::new(check.interval, fastrand::Rng::new());
    let target = address.to_string();
    let passes = metrics.probes.with_label_values(&[&group, "pass"]);
    let failures = metrics.probes.with_label_values(&[&group, "fail"]);
    loop {
        tokio::time::sleep(schedule.next_delay()).await;
        let result = probe(&check, address).await;
        if result.passed {
            passes.inc();
        } else {
            failures.inc();
            tracing::debug!(target_group = %group, target = %address, reason = %result.detail, "health check failed");
        }
        if let Some(t) = stats.observe(result, Instant::now()) {
            log_transition(&group, address, &t);
            metrics.record(&group, &target, t.to, true);
        }
    }
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
