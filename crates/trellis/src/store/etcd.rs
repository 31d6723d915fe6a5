//! The store of a fleet node: the node file's own sections, and the fleet's shared configuration and
//! registrations in etcd (see trellis-fleet for the key layout). The last good truth is also kept on disk,
//! so that a node can start while etcd cannot be reached.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use trellis_config::Config;
use trellis_fleet::{Applied, FleetError, Loaded};

use super::{fingerprint, invalid, FleetState, Store, Truth};
use crate::daemon::ChangeError;
use crate::state::{Registration, StateDir};

/// The disk copy of the last good truth, in the state directory.
const DISK_COPY: &str = "fleet-snapshot.json";

pub struct EtcdStore {
    fleet: trellis_fleet::Store,
    /// The node file as last read, validated: `[fleet]` and the node-local sections. Read again at every
    /// load, so that a reload (SIGHUP) picks up its `[admin]`, `[access_log]` and `[limits]`.
    node: Mutex<Config>,
    state_dir: StateDir,
    /// Requests to etcd are async; the store is called from blocking threads (changes run off the
    /// workers) and at start.
    runtime: tokio::runtime::Handle,
    /// The truth as last loaded: what registrations are written against.
    last: Mutex<Option<Loaded>>,
    state: Arc<FleetState>,
}

#[derive(Serialize, Deserialize)]
struct DiskCopy {
    revision: i64,
    config: Option<Applied>,
    registrations: Vec<Registration>,
}

impl EtcdStore {
    pub fn new(
        fleet: trellis_fleet::Store,
        node: Config,
        state_dir: StateDir,
        runtime: tokio::runtime::Handle,
        state: Arc<FleetState>,
    ) -> EtcdStore {
        EtcdStore {
            fleet,
            node: Mutex::new(node),
            state_dir,
            runtime,
            last: Mutex::new(None),
            state,
        }
    }

    /// The revision last loaded (0 before the first load, or when serving the disk copy).
    pub fn revision(&self) -> i64 {
        self.lock().as_ref().map_or(0, |l| l.revision)
    }

    /// The truth at start: from etcd, or — when etcd cannot be reached — the disk copy of the last good
    /// one, served until etcd answers again (and said to be stale in status).
    pub fn load_at_start(&self) -> Result<Truth, ChangeError> {
        match self.load() {
            Err(ChangeError::Unavailable(why)) => {
                let Some(copy) = self.read_disk_copy() else {
                    return Err(ChangeError::Unavailable(format!(
                        "{why}; and there is no copy of the fleet's configuration in {} to start from",
                        self.state_dir.path().display()
                    )));
                };
                tracing::warn!(revision = copy.revision, "fleet: etcd cannot be reached ({why}); serving the disk copy of the last good configuration until it can");
                let node = self.node_file();
                let truth = self.truth(&node, copy.config.as_ref(), copy.registrations)?;
                self.state.applied(copy.revision, true);
                Ok(truth)
            }
            other => other,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Loaded>> {
        self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The node file joined with the shared configuration `applied` (none yet: the node file alone).
    fn truth(
        &self,
        node: &Config,
        applied: Option<&Applied>,
        registrations: Vec<Registration>,
    ) -> Result<Truth, ChangeError> {
        let Some(applied) = applied else {
            return Ok(Truth {
                file: node.clone(),
                // The fingerprint of an empty shared configuration.
                sha256: fingerprint(b""),
                registrations,
            });
        };
        // Named after the file it was applied from, in the node file's directory, where its relative
        // paths resolve.
        let dir = node.source.parent().unwrap_or(Path::new(""));
        let name: PathBuf = dir.join(&applied.name);
        let file = trellis_config::parse_shared(&applied.text, &name, node).map_err(invalid)?;
        Ok(Truth {
            file,
            sha256: fingerprint(applied.text.as_bytes()),
            registrations,
        })
    }

    fn node_file(&self) -> Config {
        self.node
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The node file read again; its `[fleet]` stays as trellis started with it (where the truth is
    /// cannot change under a running node).
    fn read_node_file(&self) -> Result<Config, ChangeError> {
        let running = self.node_file();
        let mut node = trellis_config::load(&running.source).map_err(invalid)?;
        if node.fleet != running.fleet {
            tracing::warn!("the node file's [fleet] changed; it takes effect at the next restart");
            node.fleet = running.fleet;
        }
        Ok(node)
    }

    fn read_disk_copy(&self) -> Option<DiskCopy> {
        let bytes = self.state_dir.read(DISK_COPY).ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    fn write_disk_copy(&self, loaded: &Loaded, registrations: &[Registration]) {
        let copy = DiskCopy {
            revision: loaded.revision,
            config: loaded.config.clone(),
            registrations: registrations.to_vec(),
        };
        let written = serde_json::to_vec(&copy)
            .map_err(std::io::Error::other)
            .and_then(|bytes| self.state_dir.write_atomic(DISK_COPY, &bytes));
        if let Err(e) = written {
            tracing::warn!(error = %e, "fleet: cannot keep a disk copy of the configuration");
        }
    }
}

impl Store for EtcdStore {
    fn load(&self) -> Result<Truth, ChangeError> {
        let node = self.read_node_file()?;
        let loaded = match self.runtime.block_on(self.fleet.load()) {
            Ok(loaded) => {
                self.state.connected();
                self.state.read_at(loaded.revision);
                loaded
            }
            Err(e) => {
                self.state.unavailable(&e.to_string());
                return Err(unavailable(e));
            }
        };
        let registrations: Vec<Registration> =
            loaded.registrations.iter().map(Into::into).collect();
        let truth = match self.truth(&node, loaded.config.as_ref(), registrations.clone()) {
            Ok(truth) => truth,
            Err(e) => {
                // Written by hand, or by a trellis with other rules: every node keeps its last good one.
                self.state.refused(loaded.revision);
                return Err(e);
            }
        };
        self.state.applied(loaded.revision, false);
        self.write_disk_copy(&loaded, &registrations);
        *self.node.lock().unwrap_or_else(PoisonError::into_inner) = node;
        *self.lock() = Some(loaded);
        Ok(truth)
    }

    fn save_registrations(&self, next: &[Registration]) -> Result<(), ChangeError> {
        let current = self
            .lock()
            .as_ref()
            .map(|l| l.registrations.clone())
            .unwrap_or_default();
        let next: Vec<trellis_fleet::Registration> = next.iter().map(Into::into).collect();
        if let Err(e) = self
            .runtime
            .block_on(self.fleet.set_registrations(&current, &next))
        {
            self.state.unavailable(&e.to_string());
            return Err(unavailable(e));
        }
        if let Some(last) = self.lock().as_mut() {
            last.registrations = next;
        }
        Ok(())
    }

    fn origin(&self) -> String {
        format!("etcd {}/config", self.fleet.prefix())
    }

    fn state_dir(&self) -> &Path {
        self.state_dir.path()
    }

    fn register_metrics(&self, registry: &prometheus::Registry) -> Result<(), prometheus::Error> {
        self.state.register(registry)
    }

    fn loads_target_changes(&self) -> bool {
        true
    }

    fn fleet_status(&self) -> Option<serde_json::Value> {
        Some(self.state.status())
    }
}

fn unavailable(e: FleetError) -> ChangeError {
    match e {
        FleetError::Unavailable(_) => ChangeError::Unavailable(e.to_string()),
        other => ChangeError::Failed(other.to_string()),
    }
}
