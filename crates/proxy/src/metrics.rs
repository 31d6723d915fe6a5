//! Request-path metrics. Label handles are resolved when a snapshot is built, never per request.

use prometheus::{IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct ProxyMetrics {
    /// Requests routed while their group had no routable target, by group.
    pub fail_open: IntCounterVec,
    /// Passive ejections, by group and target.
    pub ejections: IntCounterVec,
    /// Requests sent again to another target, by group and why (`connect`, `reset`).
    pub retries: IntCounterVec,
}

impl ProxyMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let fail_open = IntCounterVec::new(
            Opts::new(
                "trellis_target_group_fail_open_total",
                "Requests routed over all registered targets because none was healthy",
            ),
            &["target_group"],
        )?;
        let ejections = IntCounterVec::new(
            Opts::new(
                "trellis_target_ejections_total",
                "Targets taken out of rotation by passive ejection (outlier detection)",
            ),
            &["target_group", "target"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new(
                "trellis_retries_total",
                "Requests sent again to another target, by reason",
            ),
            &["target_group", "reason"],
        )?;
        registry.register(Box::new(fail_open.clone()))?;
        registry.register(Box::new(ejections.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        Ok(ProxyMetrics {
            fail_open,
            ejections,
            retries,
        })
    }
}
