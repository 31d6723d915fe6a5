//! Request-path metrics. Label handles are resolved when a snapshot is built, never per request.

use crate::access_log::LogMetrics;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Latency buckets, seconds: from a loopback hop to a minute-long request.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

#[derive(Clone)]
pub struct ProxyMetrics {
    /// Requests routed while their group had no routable target, by group.
    pub fail_open: IntCounterVec,
    /// Passive ejections, by group and target.
    pub ejections: IntCounterVec,
    /// Requests sent again to another target, by group and why (`connect`, `reset`, `5xx`,
    /// `gateway_error`, `timeout`).
    pub retries: IntCounterVec,
    /// Retries a group's retry policy would have made but its budget refused.
    pub retries_refused: IntCounterVec,
    /// Concurrency limits: requests that waited in a group's queue, requests refused (`queue_full`,
    /// `queue_timeout`), and requests waiting now.
    pub queued: IntCounterVec,
    pub overloaded: IntCounterVec,
    pub waiting: prometheus::IntGaugeVec,
    /// Stickiness: requests whose cookie was followed (`hit`), whose cookie named a target that could
    /// not take them (`miss`), and that came without one (`new`).
    pub sticky: IntCounterVec,
    /// Requests answered, by service, listener, rule (`default` for the default action; `-` for no
    /// service) and status class.
    pub requests: IntCounterVec,
    /// Seconds from request head to response head, by service and listener.
    pub duration: HistogramVec,
    /// Body bytes from and to clients, by service and listener.
    pub bytes_received: IntCounterVec,
    pub bytes_sent: IntCounterVec,
    /// Requests a target group answered (its targets, or trellis on its behalf), by status class.
    pub group_requests: IntCounterVec,
    /// Seconds from request head to response head, by target group.
    pub group_duration: HistogramVec,
    /// Connections to targets that could not be made, by group.
    pub connection_errors: IntCounterVec,
    /// Requests whose target did not answer within `response_timeout`, by group.
    pub timeouts: IntCounterVec,
    /// Client connections open now, and accepted so far, by listening address.
    pub connections_active: IntGaugeVec,
    pub connections_parked: IntGaugeVec,
    pub connections_total: IntCounterVec,
    /// TLS handshakes that failed or timed out, by listening address.
    pub handshake_errors: IntCounterVec,
    /// `tls_passthrough` connections closed before reaching a target, by address and reason.
    pub passthrough_rejected: IntCounterVec,
    /// Requests refused by a rate limit, by the route they took and the limit's scope (`service`,
    /// `rule`).
    pub rate_limited: IntCounterVec,
    /// Keys with state in each rate limiter, counted when scraped.
    pub rate_limit_keys: IntGaugeVec,
    pub log: LogMetrics,
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
        let retries_refused = IntCounterVec::new(
            Opts::new(
                "trellis_retries_budget_exhausted_total",
                "Retries not made because the group's retry budget was spent",
            ),
            &["target_group"],
        )?;
        let queued = IntCounterVec::new(
            Opts::new(
                "trellis_requests_queued_total",
                "Requests that waited for a target below the group's max_per_target",
            ),
            &["target_group"],
        )?;
        let overloaded = IntCounterVec::new(
            Opts::new(
                "trellis_requests_overloaded_total",
                "Requests refused (503 overloaded) with every target at max_per_target, by reason",
            ),
            &["target_group", "reason"],
        )?;
        let waiting = prometheus::IntGaugeVec::new(
            Opts::new(
                "trellis_requests_waiting",
                "Requests waiting in the group's queue for a target below max_per_target",
            ),
            &["target_group"],
        )?;
        let sticky = IntCounterVec::new(
            Opts::new(
                "trellis_sticky_requests_total",
                "Requests to groups with stickiness: cookie followed (hit), its target unusable (miss), no cookie (new)",
            ),
            &["target_group", "result"],
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
            .buckets(BUCKETS.to_vec()),
            &["service", "listener"],
        )?;
        let bytes_received = IntCounterVec::new(
            Opts::new(
                "trellis_bytes_received_total",
                "Request body bytes received from clients, by service and listener",
            ),
            &["service", "listener"],
        )?;
        let bytes_sent = IntCounterVec::new(
            Opts::new(
                "trellis_bytes_sent_total",
                "Response body bytes sent to clients, by service and listener",
            ),
            &["service", "listener"],
        )?;
        let group_requests = IntCounterVec::new(
            Opts::new(
                "trellis_target_group_requests_total",
                "Requests answered for a target group, by status class",
            ),
            &["target_group", "code_class"],
        )?;
        let group_duration = HistogramVec::new(
            HistogramOpts::new(
                "trellis_target_group_request_duration_seconds",
                "Time from request head to response head, by target group",
            )
            .buckets(BUCKETS.to_vec()),
            &["target_group"],
        )?;
        let connection_errors = IntCounterVec::new(
            Opts::new(
                "trellis_target_connection_errors_total",
                "Connections to targets that could not be made",
            ),
            &["target_group"],
        )?;
        let timeouts = IntCounterVec::new(
            Opts::new(
                "trellis_request_timeouts_total",
                "Requests whose target did not answer within response_timeout",
            ),
            &["target_group"],
        )?;
        let connections_active = IntGaugeVec::new(
            Opts::new(
                "trellis_connections_active",
                "Client connections open now, by listening address",
            ),
            &["address"],
        )?;
        let connections_parked = IntGaugeVec::new(
            Opts::new(
                "trellis_connections_parked",
                "Idle HTTP/1.1 client connections that have let go of their buffers (parked), by listening address",
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
        registry.register(Box::new(connections_parked.clone()))?;
        registry.register(Box::new(connections_total.clone()))?;
        let handshake_errors = IntCounterVec::new(
            Opts::new(
                "trellis_tls_handshake_errors_total",
                "TLS handshakes that failed or timed out, by listening address",
            ),
            &["address"],
        )?;
        registry.register(Box::new(handshake_errors.clone()))?;
        let passthrough_rejected = IntCounterVec::new(
            Opts::new(
                "trellis_tls_passthrough_rejected_total",
                "tls_passthrough connections closed before reaching a target (no_sni, unknown_sni, not_tls, timeout, no_target)",
            ),
            &["address", "reason"],
        )?;
        registry.register(Box::new(passthrough_rejected.clone()))?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "trellis_rate_limited_total",
                "Requests answered 429 by a rate limit, by route and the limit's scope (service or rule)",
            ),
            &["service", "listener", "rule", "scope"],
        )?;
        registry.register(Box::new(rate_limited.clone()))?;
        let rate_limit_keys = IntGaugeVec::new(
            Opts::new(
                "trellis_rate_limit_keys",
                "Keys (client IPs, identities, header values) with a bucket in a rate limiter",
            ),
            &["service", "listener", "rule", "scope"],
        )?;
        registry.register(Box::new(rate_limit_keys.clone()))?;
        registry.register(Box::new(bytes_received.clone()))?;
        registry.register(Box::new(bytes_sent.clone()))?;
        registry.register(Box::new(group_requests.clone()))?;
        registry.register(Box::new(group_duration.clone()))?;
        registry.register(Box::new(connection_errors.clone()))?;
        registry.register(Box::new(timeouts.clone()))?;
        registry.register(Box::new(fail_open.clone()))?;
        registry.register(Box::new(ejections.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(retries_refused.clone()))?;
        registry.register(Box::new(queued.clone()))?;
        registry.register(Box::new(overloaded.clone()))?;
        registry.register(Box::new(waiting.clone()))?;
        registry.register(Box::new(sticky.clone()))?;
        let log = LogMetrics::new(registry)?;
        Ok(ProxyMetrics {
            log,
            fail_open,
            ejections,
            retries,
            retries_refused,
            queued,
            overloaded,
            waiting,
            sticky,
            requests,
            duration,
            bytes_received,
            bytes_sent,
            group_requests,
            group_duration,
            connection_errors,
            timeouts,
            connections_active,
            connections_parked,
            connections_total,
            handshake_errors,
            passthrough_rejected,
            rate_limited,
            rate_limit_keys,
        })
    }
}
