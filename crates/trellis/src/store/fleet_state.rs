//! What a fleet node says about its store: connected or not, the revision it serves, the last one it
//! refused, whether it serves a disk copy. Shared by the etcd store (loads and writes) and the watch
//! that follows the prefix; read by status and metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Mutex, PoisonError};

use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts, Registry};
use serde_json::{json, Value};

pub struct FleetState {
    node: String,
    prefix: String,
    connected: AtomicBool,
    /// The etcd revision of the truth served now.
    applied: AtomicI64,
    /// The last revision whose configuration was invalid (0: none).
    refused: AtomicI64,
    /// The revision of the last read of the whole prefix, served or refused.
    read: AtomicI64,
    /// Serving the disk copy because etcd could not be read at start.
    stale: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Each scaling group's owner, as this node last read it.
    owners: Mutex<BTreeMap<String, String>>,
    /// The live nodes as the last heartbeat read them.
    nodes: Mutex<Vec<trellis_fleet::NodeInfo>>,
    store_up: IntGauge,
    owned: IntGaugeVec,
    applied_revision: IntGauge,
    refused_total: IntCounter,
    watch_restarts: IntCounter,
}

impl FleetState {
    pub fn new(node: &str, prefix: &str) -> Result<FleetState, prometheus::Error> {
        let gauge = |name: &str, help: &str| IntGauge::with_opts(Opts::new(name, help));
        let counter = |name: &str, help: &str| IntCounter::with_opts(Opts::new(name, help));
        Ok(FleetState {
            node: node.to_string(),
            prefix: prefix.to_string(),
            connected: AtomicBool::new(false),
            applied: AtomicI64::new(0),
            refused: AtomicI64::new(0),
            read: AtomicI64::new(0),
            stale: AtomicBool::new(false),
            last_error: Mutex::new(None),
            owners: Mutex::new(BTreeMap::new()),
            nodes: Mutex::new(Vec::new()),
            owned: IntGaugeVec::new(
                Opts::new(
                    "trellis_fleet_scaling_group_owner",
                    "1 for each scaling group this node owns (decides capacity for), else 0",
                ),
                &["scaling_group"],
            )?,
            store_up: gauge(
                "trellis_fleet_store_up",
                "1 while the fleet's etcd answers, else 0",
            )?,
            applied_revision: gauge(
                "trellis_fleet_applied_revision",
                "The etcd revision of the configuration and registrations served",
            )?,
            refused_total: counter(
                "trellis_fleet_refused_revisions_total",
                "Revisions whose configuration was invalid: the last good one stayed",
            )?,
            watch_restarts: counter(
                "trellis_fleet_watch_restarts_total",
                "Times the watch on the fleet's prefix broke and was started again",
            )?,
        })
    }

    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.store_up.clone()))?;
        registry.register(Box::new(self.owned.clone()))?;
        registry.register(Box::new(self.applied_revision.clone()))?;
        registry.register(Box::new(self.refused_total.clone()))?;
        registry.register(Box::new(self.watch_restarts.clone()))
    }

    pub fn connected(&self) {
        self.connected.store(true, Ordering::Relaxed);
        self.store_up.set(1);
        *self.lock() = None;
    }

    pub fn unavailable(&self, error: &str) {
        self.connected.store(false, Ordering::Relaxed);
        self.store_up.set(0);
        *self.lock() = Some(error.to_string());
    }

    pub fn applied(&self, revision: i64, from_disk: bool) {
        self.applied.store(revision, Ordering::Relaxed);
        self.applied_revision.set(revision);
        self.stale.store(from_disk, Ordering::Relaxed);
    }

    /// The revision served, and whether it is the disk copy's.
    pub fn served(&self) -> (i64, bool) {
        (
            self.applied.load(Ordering::Relaxed),
            self.stale.load(Ordering::Relaxed),
        )
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The whole prefix was read at `revision`.
    pub fn read_at(&self, revision: i64) {
        self.read.store(revision, Ordering::Relaxed);
    }

    /// The revision of the last whole read: where the watch goes on from. It can go backwards: a
    /// restored or new etcd cluster starts its revisions again.
    pub fn last_read(&self) -> i64 {
        self.read.load(Ordering::Relaxed)
    }

    pub fn refused(&self, revision: i64) {
        self.refused.store(revision, Ordering::Relaxed);
        self.refused_total.inc();
    }

    /// `group`'s owner as last read (`None`: nobody, or the group is gone).
    pub fn set_owner(&self, group: &str, owner: Option<&str>) {
        let mut owners = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
        match owner {
            Some(node) => {
                owners.insert(group.to_string(), node.to_string());
            }
            None => {
                owners.remove(group);
            }
        }
        self.owned
            .with_label_values(&[group])
            .set(i64::from(owner == Some(self.node.as_str())));
    }

    /// The fleet's live nodes, as just read.
    pub fn set_nodes(&self, nodes: Vec<trellis_fleet::NodeInfo>) {
        *self.nodes.lock().unwrap_or_else(PoisonError::into_inner) = nodes;
    }

    pub fn watch_restarted(&self) {
        self.watch_restarts.inc();
    }

    pub fn status(&self) -> Value {
        let refused = self.refused.load(Ordering::Relaxed);
        json!({
            "node": self.node,
            "prefix": self.prefix,
            "revision": self.applied.load(Ordering::Relaxed),
            "store": if self.connected.load(Ordering::Relaxed) { "connected" } else { "unavailable" },
            "stale": self.stale.load(Ordering::Relaxed),
            "refused_revision": (refused != 0).then_some(refused),
            "error": *self.lock(),
            "owners": self.owners.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            "nodes": self.nodes.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|n| json!({
                "node": n.node,
                "revision": n.revision,
                "stale": n.stale,
                "last_contact_seconds": trellis_fleet::now().saturating_sub(n.contact),
            })).collect::<Vec<_>>(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
