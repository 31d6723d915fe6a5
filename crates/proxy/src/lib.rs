//! trellis-proxy: the data plane. Listeners, the routing snapshot, the request path, upstream pools.
#![forbid(unsafe_code)]

mod access_log;
mod auth;
mod body;
mod error;
mod forward;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod head;
mod headers;
mod metrics;
mod passthrough;
mod rate_limit;
mod retry;
mod server;
mod snapshot;
mod tls;
mod tunnel;
mod upload;
mod upstream;
mod watched_io;

pub use body::ProxyBody;
pub use error::{Failure, ProxyError};
pub use server::Server;
pub use snapshot::Snapshot;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::{ArcSwap, Guard};
use trellis_config::{Config, Diagnostic};
use trellis_targets::TargetRegistry;

use access_log::AccessLog;
use metrics::ProxyMetrics;
use rate_limit::LimitId;
use snapshot::{GroupSlots, Parts};
use upstream::{Group, PoolRegistry, TlsClient};

/// The routing state: one immutable [`Snapshot`] behind one `ArcSwap`, plus what outlives snapshots
/// (target health and in-flight counts, connection pools, keyed by target group and address).
pub struct Proxy {
    snapshot: ArcSwap<Snapshot>,
    targets: Arc<TargetRegistry>,
    pools: PoolRegistry,
    metrics: ProxyMetrics,
    slots: GroupSlots,
    /// The rate limiters that have a key count series now (so that a gone limiter's is removed); also
    /// serializes refreshes.
    limit_series: Mutex<HashSet<LimitId>>,
    /// Wakes the scaling group of a target group (by name) that scaled to zero; set by the daemon.
    waker: std::sync::OnceLock<GroupWaker>,
}

/// Wakes the scaling group of the target group it is called with.
pub type GroupWaker = Box<dyn Fn(&str) + Send + Sync>;

impl Proxy {
    /// `targets` is shared with health checking, which writes the states the balancers read;
    /// request metrics are registered in `prometheus`.
    pub fn new(
        config: Arc<Config>,
        targets: Arc<TargetRegistry>,
        prometheus: &prometheus::Registry,
    ) -> Result<Arc<Proxy>, ProxyError> {
        let pools = PoolRegistry::default();
        let metrics = ProxyMetrics::new(prometheus)?;
        let slots = GroupSlots::default();
        let tls = target_tls(&config, None)?;
        let parts = Parts {
            tls: &tls,
            targets: &targets,
            pools: &pools,
            metrics: &metrics,
            slots: &slots,
        };
        let mut snapshot = Snapshot::build(config.clone(), None, &parts);
        snapshot.access_log = access_log(&config, None, &metrics)?;
        Ok(Arc::new(Proxy {
            snapshot: ArcSwap::from_pointee(snapshot),
            targets,
            pools,
            metrics,
            slots,
            limit_series: Mutex::new(HashSet::new()),
            waker: std::sync::OnceLock::new(),
        }))
    }

    /// How a request to a group that scaled to zero wakes it: called with the target group's name.
    pub fn set_waker(&self, wake: GroupWaker) {
        let _ = self.waker.set(wake);
    }

    pub(crate) fn wake(&self, target_group: &str) {
        if let Some(wake) = self.waker.get() {
            wake(target_group);
        }
    }

    /// The current snapshot: one load per request.
    #[inline]
    pub fn snapshot(&self) -> Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// Builds the routing snapshot of `config` without serving it yet, reusing what the current one
    /// built from equal configuration. Fails when a `ca` file of an `https` group cannot be used
    /// ([`ProxyError::TargetTls`], before anything changed) or a new access log file cannot be opened.
    pub fn build(&self, config: Arc<Config>) -> Result<Snapshot, ProxyError> {
        let current = self.snapshot.load();
        let tls = target_tls(&config, Some(&current))?;
        let parts = Parts {
            tls: &tls,
            targets: &self.targets,
            pools: &self.pools,
            metrics: &self.metrics,
            slots: &self.slots,
        };
        let access_log = access_log(&config, current.access_log.as_ref(), &self.metrics)?;
        let mut snapshot = Snapshot::build(config, Some(&current), &parts);
        snapshot.access_log = access_log;
        Ok(snapshot)
    }

    /// Requests answered for a target group so far, and how many of them were 5xx.
    pub fn group_traffic(&self, group: &str) -> (u64, u64) {
        let count = |class: &str| {
            self.metrics
                .group_requests
                .get_metric_with_label_values(&[group, class])
                .map_or(0, |c| c.get())
        };
        let all = ["1xx", "2xx", "3xx", "4xx", "5xx"].map(count);
        (all.iter().sum(), all[4])
    }

    /// A target group's response-head latency histogram: each bucket's upper bound in seconds and its
    /// cumulative count (the last bound is infinite). What the status page turns into p50 and p99 over
    /// the interval between two of its polls.
    pub fn group_latency(&self, group: &str) -> Vec<(f64, u64)> {
        use prometheus::core::Collector;
        let Ok(histogram) = self
            .metrics
            .group_duration
            .get_metric_with_label_values(&[group])
        else {
            return Vec::new();
        };
        let families = histogram.collect();
        let Some(metric) = families.first().and_then(|f| f.get_metric().first()) else {
            return Vec::new();
        };
        let h = metric.get_histogram();
        let mut buckets: Vec<(f64, u64)> = h
            .get_bucket()
            .iter()
            .map(|b| (b.upper_bound(), b.cumulative_count()))
            .collect();
        buckets.push((f64::INFINITY, h.get_sample_count()));
        buckets
    }

    /// Counts the keys of every rate limiter into `trellis_rate_limit_keys` (when `/metrics` is scraped),
    /// dropping their full buckets on the way.
    pub fn refresh_rate_limit_keys(&self) {
        let mut known = self
            .limit_series
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let snapshot = self.snapshot.load();
        let now = std::time::Instant::now();
        let mut seen = HashSet::new();
        for (id, limiter) in snapshot.limiters() {
            let keys = i64::try_from(limiter.keys(now)).unwrap_or(i64::MAX);
            self.metrics
                .rate_limit_keys
                .with_label_values(&id.labels())
                .set(keys);
            seen.insert(id.clone());
        }
        for gone in known.difference(&seen) {
            let _ = self
                .metrics
                .rate_limit_keys
                .remove_label_values(&gone.labels());
        }
        *known = seen;
    }

    /// Writes out the access log entries queued so far (at shutdown, after the last request).
    pub async fn flush_access_log(&self, timeout: std::time::Duration) -> bool {
        let log = self.snapshot.load().access_log.clone();
        match log {
            Some(log) => log.flush(timeout).await,
            None => true,
        }
    }

    /// Reopens the access log file (`SIGUSR1`, after logrotate moved it).
    pub fn reopen_access_log(&self) {
        if let Some(log) = &self.snapshot.load().access_log {
            log.reopen();
        }
    }

    /// Serves `snapshot` from now on; requests already routed finish on the old one.
    pub fn swap(&self, snapshot: Snapshot) {
        retire(self.snapshot.swap(Arc::new(snapshot)));
    }

    /// The connection metrics of a listening address (open now, accepted so far, failed TLS handshakes).
    pub(crate) fn connection_metrics(
        &self,
        addr: std::net::SocketAddr,
    ) -> (
        prometheus::IntGauge,
        prometheus::IntGauge,
        prometheus::IntCounter,
        prometheus::IntCounter,
    ) {
        let label = addr.to_string();
        (
            self.metrics.connections_active.with_label_values(&[&label]),
            self.metrics.connections_parked.with_label_values(&[&label]),
            self.metrics.connections_total.with_label_values(&[&label]),
            self.metrics.handshake_errors.with_label_values(&[&label]),
        )
    }

    /// Counts a `tls_passthrough` connection closed before it reached a target.
    pub(crate) fn passthrough_rejected(&self, addr: std::net::SocketAddr, reason: &str) {
        self.metrics
            .passthrough_rejected
            .with_label_values(&[&addr.to_string(), reason])
            .inc();
    }

    /// Closes every connection to a target, in use or idle: its drain deadline has passed.
    pub fn close_target(&self, group: &str, address: std::net::SocketAddr) {
        self.pools.close(group, address);
    }

    /// Forgets a target that has finished draining: its pools, live state and metric series.
    pub fn forget_target(&self, group: &str, address: std::net::SocketAddr) {
        self.pools.remove(group, address);
        self.targets.remove(group, address);
        let _ = self
            .metrics
            .ejections
            .remove_label_values(&[group, &address.to_string()]);
    }
}

/// Checks that TLS to the targets of every `https` group of `config` can be set up: its `ca` file read
/// and parsed, its client built. What `trellis check` adds to validating the file.
pub fn check_target_tls(config: &Config) -> Result<(), ProxyError> {
    target_tls(config, None).map(|_| ())
}

/// The TLS client of every `https` group of `config`, by name: `current`'s when built from the same
/// settings and `ca` contents, else a new one. Every problem is reported, not just the first.
fn target_tls(
    config: &Config,
    current: Option<&Snapshot>,
) -> Result<HashMap<String, Arc<TlsClient>>, ProxyError> {
    let previous = current.map(Snapshot::tls_clients).unwrap_or_default();
    let mut clients = HashMap::new();
    let mut problems = Vec::new();
    for (i, tg) in config.target_groups.iter().enumerate() {
        let before = previous.get(tg.name.as_str()).copied();
        match TlsClient::for_group(tg, Group::http2(tg), before) {
            Ok(Some(client)) => {
                clients.insert(tg.name.clone(), client);
            }
            Ok(None) => {}
            Err(e) => problems.push(Diagnostic {
                file: config.source.display().to_string(),
                line: None,
                column: None,
                key: match e.key() {
                    Some(key) => format!("target_group[{i}].{key}"),
                    None => format!("target_group[{i}]"),
                },
                message: e.to_string(),
            }),
        }
    }
    if problems.is_empty() {
        Ok(clients)
    } else {
        Err(ProxyError::TargetTls(problems))
    }
}

/// The access log writer for `config`: the current one when its destination is unchanged (a reload
/// neither reopens the file nor loses queued lines), else a new one.
fn access_log(
    config: &Config,
    current: Option<&Arc<AccessLog>>,
    metrics: &ProxyMetrics,
) -> Result<Option<Arc<AccessLog>>, ProxyError> {
    let destination = &config.access_log.destination;
    match current {
        Some(log) if log.destination() == destination => Ok(Some(log.clone())),
        _ => AccessLog::start(destination, &metrics.log).map_err(|error| ProxyError::AccessLog {
            destination: match destination {
                trellis_config::LogDestination::File(path) => path.display().to_string(),
                other => format!("{other:?}").to_lowercase(),
            },
            error,
        }),
    }
}

/// Frees a replaced snapshot off the request path. A request that loaded it just before the swap may
/// otherwise hold its last reference, and freeing a snapshot of thousands of rules takes milliseconds that
/// would land on that request. So it is kept a moment longer than any routing takes, then dropped on a
/// blocking thread.
fn retire(old: Arc<Snapshot>) {
    const KEEP: std::time::Duration = std::time::Duration::from_secs(1);
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            tokio::time::sleep(KEEP).await;
            let _ = tokio::task::spawn_blocking(move || drop(old)).await;
        });
    }
}
