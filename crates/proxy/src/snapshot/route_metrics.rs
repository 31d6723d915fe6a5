//! Per-route request metrics, resolved when a snapshot is built: the request path only increments.

use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;
use prometheus::{Histogram, IntCounter};

use crate::metrics::ProxyMetrics;

/// One route (a rule, a listener's default action, or "no service" on a port): its names, for the
/// access log, and its counters.
pub struct RouteMetrics {
    pub service: Arc<str>,
    pub listener: Arc<str>,
    pub rule: Arc<str>,
    /// 1xx, 2xx, 3xx, 4xx, 5xx.
    by_class: [IntCounter; 5],
    duration: Histogram,
    /// Body bytes from and to clients.
    pub bytes_received: IntCounter,
    pub bytes_sent: IntCounter,
}

impl RouteMetrics {
    pub fn new(metrics: &ProxyMetrics, service: &str, listener: &str, rule: &str) -> Self {
        let class = |c: &str| {
            metrics
                .requests
                .with_label_values(&[service, listener, rule, c])
        };
        RouteMetrics {
            service: service.into(),
            listener: listener.into(),
            rule: rule.into(),
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            duration: metrics.duration.with_label_values(&[service, listener]),
            bytes_received: metrics
                .bytes_received
                .with_label_values(&[service, listener]),
            bytes_sent: metrics.bytes_sent.with_label_values(&[service, listener]),
        }
    }

    /// Counts one answered request and the time from its head to its response head.
    #[inline]
    pub fn record(&self, status: StatusCode, started: Instant) {
        self.by_class[class_index(status)].inc();
        self.duration.observe(started.elapsed().as_secs_f64());
    }
}

/// 1xx → 0 … 5xx → 4; anything above 599 counts as 5xx.
#[inline]
pub fn class_index(status: StatusCode) -> usize {
    (status.as_u16() / 100).clamp(1, 5) as usize - 1
}
