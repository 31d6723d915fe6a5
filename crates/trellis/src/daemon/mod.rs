//! The running daemon: the configuration in force, and every way it changes — reload, target
//! registration, draining. All changes go through one lock and one path ([`Daemon::apply`]): build the
//! snapshot, bind new listeners, swap, re-aim health checks, drain what left.

mod drain;
mod gauges;
mod registry;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use prometheus::{IntCounterVec, Opts};
use trellis_config::{Config, TargetSpec};
use trellis_health::HealthChecker;
use trellis_proxy::{Proxy, Server};
use trellis_targets::TargetRegistry;

use crate::state::Registration;
use crate::store::{Store, Truth};
pub use drain::Drain;

/// What went wrong with a change; each maps to one HTTP status in the admin API.
#[derive(Debug)]
pub enum ChangeError {
    /// The configuration file has errors (every one, `file:line: key: message`).
    Invalid(Vec<String>),
    NotFound(String),
    Conflict(String),
    BadRequest(String),
    /// The change was valid but could not be carried out (a port that cannot be bound, a state file that
    /// cannot be written). Nothing was changed.
    Failed(String),
    /// The store that holds the truth cannot be reached (fleet mode: etcd down or without quorum).
    /// Nothing was changed, here or anywhere.
    Unavailable(String),
}

impl std::fmt::Display for ChangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChangeError::Invalid(errors) => write!(
                f,
                "the configuration has {} error{}; still serving the previous one",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            ),
            ChangeError::NotFound(m)
            | ChangeError::Conflict(m)
            | ChangeError::BadRequest(m)
            | ChangeError::Failed(m)
            | ChangeError::Unavailable(m) => f.write_str(m),
        }
    }
}

/// Where a served target comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    File,
    Api,
    Scaler,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Api => "api",
            Source::Scaler => "scaler",
        }
    }

    /// Why a target from here drains when it leaves its group.
    fn drain_reason(self) -> &'static str {
        match self {
            Source::File => "removed from the configuration",
            Source::Api => "deregistered through the admin API",
            Source::Scaler => "terminated by its scaling group",
        }
    }
}

/// The configuration in force.
pub struct Running {
    /// As read from the file.
    pub file: Config,
    /// The file plus registered targets: what is served.
    pub effective: Arc<Config>,
    pub sha256: String,
    /// When the configuration was loaded: at start and at every reload, not when targets change.
    pub loaded_at: SystemTime,
    /// When the served targets last changed (registration, deregistration, scaling, or a reload that
    /// changed them); the start time until then.
    pub changed_at: SystemTime,
    /// The admin bearer token, when `admin.token_file` is set.
    pub token: Option<String>,
    /// (group, address) of the targets that came from the admin API.
    pub registered: HashSet<(String, SocketAddr)>,
    /// (group, address) of the targets that a scaling group launched.
    pub scaled: HashSet<(String, SocketAddr)>,
}

/// A target a scaling group launched belongs to it: the API may not register or deregister it (the
/// scaler would undo either, or a drain would be reported that nothing carries out).
fn refuse_scaled(
    current: &Running,
    group: &str,
    address: SocketAddr,
    what: &str,
) -> Result<(), ChangeError> {
    if !current.scaled.contains(&(group.to_string(), address)) {
        return Ok(());
    }
    let owner = current
        .file
        .scaling_groups
        .iter()
        .find(|sg| sg.target_group == group)
        .map_or("its scaling group".to_string(), |sg| {
            format!("scaling group {:?}", sg.name)
        });
    Err(ChangeError::Conflict(format!(
        "{address} in target group {group:?} is an instance of {owner}; it cannot be {what} through \
         the target API; change the group's desired capacity instead (trellis scale, PUT \
         /v1/scaling-groups/NAME/desired)"
    )))
}

impl Running {
    pub fn source(&self, key: &(String, SocketAddr)) -> Source {
        if self.scaled.contains(key) {
            Source::Scaler
        } else if self.registered.contains(key) {
            Source::Api
        } else {
            Source::File
        }
    }
}

pub struct Daemon {
    /// Where the configuration and the registrations come from, and go.
    store: Box<dyn Store>,
    /// Where the admin API listens: the first configuration's `admin.listen`, until restart.
    admin_listen: std::net::SocketAddr,
    pub targets: Arc<TargetRegistry>,
    pub proxy: Arc<Proxy>,
    pub server: Server,
    health: HealthChecker,
    pub prometheus: prometheus::Registry,
    reloads: IntCounterVec,
    current: ArcSwap<Running>,
    /// The registered targets served now (the store's, as of the last change applied).
    registrations: Mutex<Vec<Registration>>,
    /// Instances the scaling groups run, as targets of their groups (not persisted: the scaler keeps its
    /// own records).
    scaled: Mutex<Vec<Registration>>,
    pub draining: drain::Draining,
    /// What each running scaling group shows in status.
    pub scaling: Mutex<Vec<Arc<crate::scaling::GroupHandle>>>,
    pub scaling_metrics: crate::scaling::ScalingMetrics,
    /// Fleet mode: what the scaling groups need to run across the fleet (set before they start).
    pub fleet: std::sync::OnceLock<crate::scaling::FleetScaling>,
    gauges: gauges::Gauges,
    /// When the daemon started, for status.
    pub started: SystemTime,
    /// One change at a time: reloads and registrations are serialized.
    change: tokio::sync::Mutex<()>,
}

fn read_token(config: &Config) -> Result<Option<String>, ChangeError> {
    let Some(file) = &config.admin.token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(file).map_err(|e| {
        ChangeError::Failed(format!(
            "cannot read admin.token_file {}: {e}",
            file.display()
        ))
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ChangeError::Failed(format!(
            "admin.token_file {} is empty",
            file.display()
        )));
    }
    Ok(Some(token.to_string()))
}

impl Daemon {
    /// Starts serving `truth`, loaded from `store`: health checks, listeners. Must run inside the tokio
    /// runtime.
    pub fn start(store: Box<dyn Store>, truth: Truth) -> anyhow::Result<Arc<Daemon>> {
        let Truth {
            file: config,
            sha256,
            registrations,
        } = truth;
        let prometheus = prometheus::Registry::new();
        let scaling_metrics = crate::scaling::ScalingMetrics::new(&prometheus)?;
        let gauges = gauges::Gauges::new(&prometheus)?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "trellis_config_reloads_total",
                "Configuration reloads, by result",
            ),
            &["result"],
        )?;
        prometheus.register(Box::new(reloads.clone()))?;
        for result in ["ok", "error"] {
            reloads.with_label_values(&[result]);
        }
        store.register_metrics(&prometheus)?;
        let token = read_token(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let (effective, registered) = registry::merge(&config, &registrations);
        let effective = Arc::new(effective);
        let targets = Arc::new(TargetRegistry::default());
        // Health first: every target has its state (initial, unavailable or unused) before traffic.
        let health = HealthChecker::new(targets.clone(), &prometheus)?;
        health.apply(&effective);
        let proxy = Proxy::new(effective.clone(), targets.clone(), &prometheus)?;
        warn_unverified(&config);
        let server = Server::start(proxy.clone())?;
        let started = SystemTime::now();
        Ok(Arc::new(Daemon {
            store,
            admin_listen: config.admin.listen,
            targets,
            proxy,
            server,
            health,
            prometheus,
            reloads,
            current: ArcSwap::from_pointee(Running {
                file: config,
                effective,
                sha256,
                loaded_at: started,
                changed_at: started,
                token,
                registered,
                scaled: HashSet::new(),
            }),
            registrations: Mutex::new(registrations),
            scaled: Mutex::new(Vec::new()),
            draining: drain::Draining::default(),
            scaling: Mutex::new(Vec::new()),
            scaling_metrics,
            fleet: std::sync::OnceLock::new(),
            gauges,
            started,
            change: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn current(&self) -> Arc<Running> {
        self.current.load_full()
    }

    pub fn state_dir(&self) -> &Path {
        self.store.state_dir()
    }

    /// The `fleet` part of `/v1/status`, in fleet mode.
    pub fn fleet_status(&self) -> Option<serde_json::Value> {
        self.store.fleet_status()
    }

    /// Reloads (ok, error) so far.
    /// Brings the gauges read at scrape time up to date.
    pub fn refresh_gauges(&self) {
        self.gauges
            .refresh(&self.current(), &self.draining.list(), &self.targets);
        self.proxy.refresh_rate_limit_keys();
    }

    pub fn reload_counts(&self) -> (u64, u64) {
        let count = |r: &str| self.reloads.with_label_values(&[r]).get();
        (count("ok"), count("error"))
    }

    /// Reads, validates and applies the configuration file. On any error nothing changes.
    pub async fn reload(self: &Arc<Self>) -> Result<Arc<Running>, ChangeError> {
        let _change = self.change.lock().await;
        crate::systemd::reloading();
        let result = self.off_workers(|this| this.reload_locked()).await;
        if result.is_ok() {
            crate::scaling::reconcile(self, &self.scaling_metrics);
        }
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.reloads.with_label_values(&[outcome]).inc();
        match &result {
            Ok(running) => {
                tracing::info!(sha256 = %running.sha256.get(..12).unwrap_or(&running.sha256), "{}", running.file.summary());
                warn_unverified(&running.file);
            }
            Err(ChangeError::Invalid(errors)) => {
                for e in errors {
                    tracing::error!("reload: {e}");
                }
                tracing::error!("reload failed: still serving the previous configuration");
            }
            Err(e) => {
                tracing::error!("reload failed: {e}; still serving the previous configuration")
            }
        }
        crate::systemd::reloaded(self, result.is_ok());
        result
    }

    fn reload_locked(self: &Arc<Self>) -> Result<Arc<Running>, ChangeError> {
        let Truth {
            file,
            sha256,
            registrations,
        } = self.store.load()?;
        let token = read_token(&file)?;
        // The admin API stays where it is until restart, so the rule "a token for any non-loopback
        // address" applies to where it listens, not to where the new file says it will.
        if token.is_none() && !self.admin_listen.ip().is_loopback() {
            return Err(ChangeError::Invalid(vec![format!(
                "{}: admin.token_file: the admin API listens on {} (not a loopback address) until \
                 trellis restarts, so it keeps requiring a token",
                self.store.origin(),
                self.admin_listen
            )]));
        }
        let current = self.current();
        if file.admin.listen != current.file.admin.listen {
            tracing::warn!(
                "admin.listen changed to {}; the admin API moves there at the next restart",
                file.admin.listen
            );
        }
        // In fleet mode a registration on another node arrives as a reload: the configuration was
        // loaded again only if it is a different one.
        let loaded_at = if self.store.loads_target_changes() && sha256 == current.sha256 {
            current.loaded_at
        } else {
            SystemTime::now()
        };
        self.apply(file, sha256, loaded_at, token, &registrations)
    }

    /// Registers `address` in `group` (weight 1 unless given), or changes its weight (kept unless given);
    /// persists it and serves it. Returns whether it is new and its weight.
    pub async fn register(
        self: &Arc<Self>,
        group: &str,
        address: SocketAddr,
        weight: Option<u16>,
    ) -> Result<(bool, u16), ChangeError> {
        let _change = self.change.lock().await;
        let current = self.current();
        refuse_scaled(&current, group, address, "registered")?;
        registry::check_registrable(&current.file, group, address, weight)?;
        let mut next = self.lock_registrations().clone();
        let (created, weight) = registry::upsert(&mut next, group, address, weight);
        self.off_workers(move |this| this.persist_and_apply(&current, next))
            .await?;
        tracing::info!(target_group = group, target = %address, weight, "target registered");
        Ok((created, weight))
    }

    /// Deregisters a target added through the API; it drains.
    pub async fn deregister(
        self: &Arc<Self>,
        group: &str,
        address: SocketAddr,
    ) -> Result<(), ChangeError> {
        let _change = self.change.lock().await;
        let current = self.current();
        refuse_scaled(&current, group, address, "deregistered")?;
        let mut next = self.lock_registrations().clone();
        registry::remove(&current.file, &mut next, group, address)?;
        self.off_workers(move |this| this.persist_and_apply(&current, next))
            .await?;
        tracing::info!(target_group = group, target = %address, "target deregistered");
        Ok(())
    }

    /// Runs a change on tokio's blocking pool: parsing a large file and compiling its rules takes
    /// milliseconds to seconds, which must not stall the workers serving traffic (with `--workers 1` the
    /// only one).
    async fn off_workers<T: Send + 'static>(
        self: &Arc<Self>,
        change: impl FnOnce(&Arc<Self>) -> Result<T, ChangeError> + Send + 'static,
    ) -> Result<T, ChangeError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || change(&this))
            .await
            .unwrap_or_else(|e| {
                Err(ChangeError::Failed(format!(
                    "the change did not finish: {e}"
                )))
            })
    }

    fn persist_and_apply(
        self: &Arc<Self>,
        current: &Running,
        next: Vec<Registration>,
    ) -> Result<(), ChangeError> {
        self.store.save_registrations(&next)?;
        let applied = self.apply(
            current.file.clone(),
            current.sha256.clone(),
            current.loaded_at,
            current.token.clone(),
            &next,
        );
        if applied.is_err() {
            // Keep the store in step with what is served.
            let old = self.lock_registrations().clone();
            let _ = self.store.save_registrations(&old);
        }
        applied.map(|_| ())
    }

    /// The one way the served configuration changes. Called with the change lock held. `loaded_at` is
    /// when `file` was loaded (the running one's for a change of targets only).
    fn apply(
        self: &Arc<Self>,
        file: Config,
        sha256: String,
        loaded_at: SystemTime,
        token: Option<String>,
        registrations: &[Registration],
    ) -> Result<Arc<Running>, ChangeError> {
        let scaled = self.lock_scaled().clone();
        let mut all = registrations.to_vec();
        all.extend(scaled.iter().cloned());
        let (effective, mut registered) = registry::merge(&file, &all);
        let scaled: HashSet<(String, SocketAddr)> = scaled
            .iter()
            .map(|r| (r.target_group.clone(), r.address))
            .filter(|k| registered.remove(k))
            .collect();
        let effective = Arc::new(effective);
        let old = self.current();
        let now = Instant::now();
        let before = members(&old.effective);
        let after = members(&effective);
        // Held throughout: no drain finishes (and forgets its target) while this change is under way.
        let mut draining = self.draining.lock();
        let snapshot = self.proxy.build(effective.clone()).map_err(|e| match e {
            // The files the configuration names are part of it: a `ca` that cannot be read is an error
            // in the configuration like any other.
            trellis_proxy::ProxyError::TargetTls(problems) => {
                ChangeError::Invalid(problems.iter().map(ToString::to_string).collect())
            }
            other => ChangeError::Failed(other.to_string()),
        })?;
        self.server
            .reload(snapshot)
            .map_err(|e| ChangeError::Failed(e.to_string()))?;
        // Back while draining: stop the drain before health checking takes the target up again.
        for key in after.keys() {
            if draining.contains(key) {
                draining.cancel(key, &self.targets, now);
            }
        }
        self.health.apply(&effective);
        for (key, spec) in before.iter().filter(|(k, _)| !after.contains_key(*k)) {
            let delay = old
                .effective
                .target_groups
                .iter()
                .find(|g| g.name == key.0)
                .map(|g| g.deregistration_delay)
                .unwrap_or_default();
            let source = old.source(key);
            let drain = Drain {
                weight: spec.weight,
                deadline: now + delay,
                source,
            };
            draining.start(self, key.clone(), drain, source.drain_reason(), now);
        }
        drop(draining);
        *self.lock_registrations() = registrations.to_vec();
        let changed_at = if before == after {
            old.changed_at
        } else {
            SystemTime::now()
        };
        let running = Arc::new(Running {
            file,
            effective,
            sha256,
            loaded_at,
            changed_at,
            token,
            registered,
            scaled,
        });
        self.current.store(running.clone());
        Ok(running)
    }

    /// Replaces the instances scaling group `scaling_group` runs in target group `target_group`, and
    /// serves the result: new ones start `initial`, missing ones drain.
    pub async fn set_scaled(
        self: &Arc<Self>,
        target_group: &str,
        members: Vec<SocketAddr>,
    ) -> Result<(), ChangeError> {
        let _change = self.change.lock().await;
        {
            let mut scaled = self.lock_scaled();
            scaled.retain(|r| r.target_group != target_group);
            scaled.extend(members.into_iter().map(|address| Registration {
                target_group: target_group.to_string(),
                address,
                weight: 1,
            }));
        }
        let current = self.current();
        self.off_workers(move |this| {
            let registrations = this.lock_registrations().clone();
            this.apply(
                current.file.clone(),
                current.sha256.clone(),
                current.loaded_at,
                current.token.clone(),
                &registrations,
            )
            .map(|_| ())
        })
        .await
    }

    /// A probe of a registered target made by the scaler (a warm instance going in service).
    pub fn vouch(
        &self,
        target_group: &str,
        address: SocketAddr,
        result: trellis_targets::ProbeResult,
    ) {
        self.health.vouch(target_group, address, result);
    }

    /// Whether `address` still gets requests in `target_group` here: routed, or draining what it has.
    /// An instance is stopped only once this is false.
    pub fn routes_or_drains(&self, target_group: &str, address: SocketAddr) -> bool {
        let routed = self
            .current()
            .effective
            .target_groups
            .iter()
            .any(|g| g.name == target_group && g.targets.iter().any(|t| t.address == address));
        routed
            || self
                .draining
                .lock()
                .contains(&(target_group.to_string(), address))
    }

    fn lock_scaled(&self) -> std::sync::MutexGuard<'_, Vec<Registration>> {
        self.scaled.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_registrations(&self) -> std::sync::MutexGuard<'_, Vec<Registration>> {
        self.registrations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// At every load: the target groups whose targets' certificates are not verified, one warning each, so
/// that `insecure_skip_verify` never goes unnoticed in the log.
fn warn_unverified(config: &Config) {
    for name in crate::check::unverified(config) {
        tracing::warn!(
            target_group = name,
            "target group {name}: certificate verification is OFF (insecure_skip_verify = true)"
        );
    }
}

/// Every (group, address) of a configuration with its spec.
fn members(config: &Config) -> std::collections::HashMap<(String, SocketAddr), TargetSpec> {
    config
        .target_groups
        .iter()
        .flat_map(|g| g.targets.iter().map(|t| ((g.name.clone(), t.address), *t)))
        .collect()
}
