//! Health metrics: label handles are per (group, target), resolved when a target's prober starts.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use trellis_targets::TargetState;

use crate::HealthError;

#[derive(Clone)]
pub struct HealthMetrics {
    /// 1 while the target's state takes traffic (healthy, or unavailable: checks off), else 0.
    pub healthy: IntGaugeVec,
    /// State changes, by the state entered.
    pub transitions: IntCounterVec,
    /// Probes, by result (`pass` or `fail`).
    pub probes: IntCounterVec,
}

impl HealthMetrics {
    pub fn new(registry: &Registry) -> Result<Self, HealthError> {
        let healthy = IntGaugeVec::new(
            Opts::new(
                "trellis_target_healthy",
                "1 when the target's health state takes traffic (healthy, or unavailable with checks off)",
            ),
            &["target_group", "target"],
        )?;
        let transitions = IntCounterVec::new(
            Opts::new(
                "trellis_target_health_transitions_total",
                "Target health state changes, by the state entered",
            ),
            &["target_group", "target", "state"],
        )?;
        let probes = IntCounterVec::new(
            Opts::new("trellis_health_checks_total", "Health probes, by result"),
            &["target_group", "result"],
        )?;
        registry.register(Box::new(healthy.clone()))?;
        registry.register(Box::new(transitions.clone()))?;
        registry.register(Box::new(probes.clone()))?;
        Ok(HealthMetrics {
            healthy,
            transitions,
            probes,
        })
    }

    pub fn record(&self, group: &str, target: &str, state: TargetState, changed: bool) {
        self.healthy
            .with_label_values(&[group, target])
            .set(i64::from(state.routes()));
        if changed {
            self.transitions
                .with_label_values(&[group, target, state.as_str()])
                .inc();
        }
    }

    /// Drops the probe counts of a group that is gone.
    pub fn forget_group(&self, group: &str) {
        for result in ["pass", "fail"] {
            let _ = self.probes.remove_label_values(&[group, result]);
        }
    }

    /// Drops the series of a target that is gone, so label sets stay bounded by the configuration.
    pub fn forget(&self, group: &str, target: &str) {
        let _ = self.healthy.remove_label_values(&[group, target]);
        for state in TargetState::ALL {
            let _ = self
                .transitions
                .remove_label_values(&[group, target, state.as_str()]);
        }
    }
}
