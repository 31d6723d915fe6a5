//! Request-path metrics. Label handles are resolved when a snapshot is built, never per request.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct ProxyMetrics {
    /// Requests routed while their group had no routable target, by group.
    pub fail_open: IntCounterVec,
    /// Passive ejections, by group and target.
    pub ejections: IntCounterVec,
    /// Requests sent again to another target, by group and why (`connect`, `reset`).
    pub retries: IntCounterVec,
    /// Requests answered, by service, listener, rule (`default` for the default action; `-` for no
    /// service) and status class.
    pub requests: IntCounterVec,
    /// Seconds from request head to response head, by service and listener.
    pub duration: HistogramVec,
    /// Client connections open now, and accepted so far, by listening address.
    pub connections_active: IntGaugeVec,
    pub connections_total: IntCounterVec,
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
        let requests = IntCounterVec::new(
            Opts::new(
                "trellis_requests_total",
                "Requests answered, by service, listener, rule and status class",
            ),
            &["service", "listener", "rule", "code_class"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "trellis_request_duration_seconds",
                "Time from request head to response head",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0,
            ]),
            &["service", "listener"],
        )?;
        let connections_active = IntGaugeVec::new(
            Opts::new(
                "trellis_connections_active",
                "Client connections open now, by listening address",
            ),
            &["address"],
        )?;
        let connections_total = IntCounterVec::new(
            Opts::new(
                "trellis_connections_total",
                "Client connections accepted, by listening address",
            ),
            &["address"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(connections_active.clone()))?;
        registry.register(Box::new(connections_total.clone()))?;
        registry.register(Box::new(fail_open.clone()))?;
        registry.register(Box::new(ejections.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        Ok(ProxyMetrics {
            fail_open,
            ejections,
            retries,
            requests,
            duration,
            connections_active,
            connections_total,
        })
    }
}
