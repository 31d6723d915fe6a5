//! Metrics read when `/metrics` is scraped rather than kept up to date on every change: how many targets
//! each group has in each state (Lattice's HealthyHostCount and UnHealthyHostCount). Plus what is
//! registered once: build information and the process collector (CPU, memory, file descriptors); the
//! allocator's own figures.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};
use trellis_targets::{TargetRegistry, TargetState};

use super::Running;

pub struct Gauges {
    targets: IntGaugeVec,
    memory: crate::memory::MemoryGauges,
    /// Groups that have series now, so that those of a group gone from the configuration are removed.
    /// Also serializes refreshes, so that two scrapes never interleave their updates.
    groups: Mutex<HashSet<String>>,
}

impl Gauges {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let build = IntGauge::with_opts(
            Opts::new(
                "trellis_build_info",
                "Always 1; the labels say which trellis this is",
            )
            .const_label("version", env!("CARGO_PKG_VERSION")),
        )?;
        build.set(1);
        registry.register(Box::new(build))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let targets = IntGaugeVec::new(
            Opts::new(
                "trellis_target_group_targets",
                "Targets of a group, by health state",
            ),
            &["target_group", "state"],
        )?;
        registry.register(Box::new(targets.clone()))?;
        Ok(Gauges {
            targets,
            memory: crate::memory::MemoryGauges::new(registry)?,
            groups: Mutex::new(HashSet::new()),
        })
    }

    /// Counts the targets of every group by state, draining ones included.
    pub fn refresh(
        &self,
        running: &Running,
        draining: &[((String, std::net::SocketAddr), super::Drain)],
        registry: &TargetRegistry,
    ) {
        let mut known = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        self.memory.refresh();
        let mut seen = HashSet::new();
        let state_of = |group: &str, address| {
            registry
                .get(group, address)
                .map_or(TargetState::Initial, |s| s.view().health.state)
        };
        for tg in &running.effective.target_groups {
            let mut counts = [0i64; TargetState::ALL.len()];
            let addresses = tg.targets.iter().map(|t| t.address).chain(
                draining
                    .iter()
                    .filter(|((g, _), _)| *g == tg.name)
                    .map(|((_, a), _)| *a),
            );
            for address in addresses {
                let state = state_of(&tg.name, address);
                if let Some(i) = TargetState::ALL.iter().position(|s| *s == state) {
                    counts[i] += 1;
                }
            }
            for (state, count) in TargetState::ALL.iter().zip(counts) {
                self.targets
                    .with_label_values(&[&tg.name, state.as_str()])
                    .set(count);
            }
            seen.insert(tg.name.clone());
        }
        for gone in known.difference(&seen) {
            for state in TargetState::ALL {
                let _ = self.targets.remove_label_values(&[gone, state.as_str()]);
            }
        }
        *known = seen;
    }
}
