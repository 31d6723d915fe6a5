//! A target group as one snapshot sees it.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{Histogram, IntCounter};
use trellis_config::{OutlierDetection, ProtocolVersion, TargetGroup};
use trellis_targets::{Balancer, GroupStats, Target, TargetRegistry};

use super::{PoolRegistry, TargetPool, TlsClient};
use crate::metrics::ProxyMetrics;

pub struct Group {
    pub name: Arc<str>,
    pub balancer: Balancer,
    /// Parallel to `balancer.targets()`.
    pub pools: Box<[Arc<TargetPool>]>,
    pub http2: bool,
    /// `https` groups: how connections to the targets start.
    pub tls: Option<Arc<TlsClient>>,
    pub response_timeout: Duration,
    pub connect_timeout: Duration,
    pub outlier: OutlierDetection,
    /// `[target_group.retry]`; `None`: connect failures and bodiless idempotent resets only.
    pub retry: Option<crate::retry::Retry>,
    /// `[target_group.concurrency]`; `None`: no limit on the requests in flight to a target.
    pub concurrency: Option<trellis_config::Concurrency>,
    /// `[target_group.stickiness]`.
    pub sticky: Option<super::Sticky>,
    /// The group's scaling group scales to zero: a request finding no target waits this long for it
    /// to wake.
    pub wake_timeout: Option<Duration>,
    /// Live group state (ejection budget, fail-open flag), shared with every other snapshot.
    pub stats: Arc<GroupStats>,
    pub metrics: GroupMetrics,
}

/// This group's metric handles, resolved once per snapshot.
pub struct GroupMetrics {
    /// Requests answered for this group: 1xx … 5xx.
    pub by_class: [IntCounter; 5],
    pub duration: Histogram,
    pub connection_errors: IntCounter,
    pub timeouts: IntCounter,
    pub fail_open: IntCounter,
    /// By [`crate::retry::RetryReason::ALL`].
    pub retries: [IntCounter; 5],
    pub retries_refused: IntCounter,
    /// Requests that waited for a concurrency slot; refused with the queue full, or after waiting.
    pub queued: IntCounter,
    pub refused_queue_full: IntCounter,
    pub refused_queue_timeout: IntCounter,
    pub waiting: prometheus::IntGauge,
    /// Parallel to `balancer.targets()`.
    pub ejections: Box<[IntCounter]>,
}

impl Group {
    /// Whether requests to `tg` go out as HTTP/2 (over TLS, `h2` is what ALPN offers).
    pub fn http2(tg: &TargetGroup) -> bool {
        matches!(
            tg.protocol_version,
            ProtocolVersion::Http2 | ProtocolVersion::Grpc
        )
    }

    /// The group of `tg`, whose TLS client (`https` groups) is `tls`.
    pub fn build(
        tg: &TargetGroup,
        tls: Option<Arc<TlsClient>>,
        targets: &TargetRegistry,
        pools: &PoolRegistry,
        metrics: &ProxyMetrics,
        wake_timeout: Option<Duration>,
    ) -> Self {
        let http2 = Self::http2(tg);
        let members: Vec<Target> = tg
            .targets
            .iter()
            .map(|t| Target {
                address: t.address,
                weight: t.weight,
                stats: targets.stats(&tg.name, t.address),
            })
            .collect();
        let pools = members
            .iter()
            .map(|t| pools.pool(&tg.name, t.address, http2, tls.as_ref()))
            .collect();
        let stats = targets.group(&tg.name);
        stats.set_members(members.len());
        let name = tg.name.as_str();
        let sticky = tg
            .stickiness
            .as_ref()
            .map(|s| super::Sticky::build(name, s, &members, metrics));
        let class = |c: &str| metrics.group_requests.with_label_values(&[name, c]);
        let metrics = GroupMetrics {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            duration: metrics.group_duration.with_label_values(&[name]),
            connection_errors: metrics.connection_errors.with_label_values(&[name]),
            timeouts: metrics.timeouts.with_label_values(&[name]),
            fail_open: metrics.fail_open.with_label_values(&[name]),
            retries: crate::retry::RetryReason::ALL
                .map(|r| metrics.retries.with_label_values(&[name, r.label()])),
            retries_refused: metrics.retries_refused.with_label_values(&[name]),
            queued: metrics.queued.with_label_values(&[name]),
            refused_queue_full: metrics.overloaded.with_label_values(&[name, "queue_full"]),
            refused_queue_timeout: metrics
                .overloaded
                .with_label_values(&[name, "queue_timeout"]),
            waiting: metrics.waiting.with_label_values(&[name]),
            ejections: members
                .iter()
                .map(|t| {
                    metrics
                        .ejections
                        .with_label_values(&[name, &t.address.to_string()])
                })
                .collect(),
        };
        Group {
            name: name.into(),
            balancer: Balancer::new(members, tg.algorithm).with_slow_start(tg.slow_start),
            pools,
            http2,
            tls,
            response_timeout: tg.response_timeout,
            connect_timeout: tg.connect_timeout,
            outlier: tg.outlier_detection,
            retry: tg
                .retry
                .as_ref()
                .map(|p| crate::retry::Retry::new(p, tg.response_timeout)),
            concurrency: tg.concurrency,
            wake_timeout,
            sticky,
            stats,
            metrics,
        }
    }
}

impl Group {
    /// Whether a request could be sent to a target now (one with weight that is routable).
    pub fn has_routable_target(&self) -> bool {
        self.balancer
            .targets()
            .iter()
            .any(|t| t.weight > 0 && t.stats.is_routable())
    }
}

impl GroupMetrics {
    pub fn retry(&self, reason: crate::retry::RetryReason) -> &IntCounter {
        // `retries` follows `RetryReason::ALL`, which is the enum's declaration order.
        &self.retries[reason as usize]
    }

    /// Counts one request answered for the group and the time from its head to its response head.
    #[inline]
    pub fn record(&self, status: http::StatusCode, started: std::time::Instant) {
        self.by_class[crate::snapshot::class_index(status)].inc();
        self.duration.observe(started.elapsed().as_secs_f64());
    }
}
