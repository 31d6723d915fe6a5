//! Per-route request metrics, resolved when a snapshot is built: the request path only increments.

use std::time::Instant;

use http::StatusCode;
use prometheus::{Histogram, IntCounter};

use crate::metrics::ProxyMetrics;

/// Counters of one route (a rule, a listener's default action, or "no service" on a port).
pub struct RouteMetrics {
    /// 1xx, 2xx, 3xx, 4xx, 5xx.
    by_class: [IntCounter; 5],
    duration: Histogram,
}

impl RouteMetrics {
    pub fn new(metrics: &ProxyMetrics, service: &str, listener: &str, rule: &str) -> Self {
        let class = |c: &str| {
            metrics
                .requests
                .with_label_values(&[service, listener, rule, c])
        };
        RouteMetrics {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            duration: metrics.duration.with_label_values(&[service, listener]),
        }
    }

    /// Counts one answered request and the time from its head to its response head.
    #[inline]
    pub fn record(&self, status: StatusCode, started: Instant) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].inc();
        self.duration.observe(started.elapsed().as_secs_f64());
    }
}
