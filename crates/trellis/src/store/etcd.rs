//! The store of a fleet node: the node file's own sections, and the fleet's shared configuration and
//! registrations in etcd (see trellis-fleet for the key layout).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use sha2::{Digest, Sha256};
use trellis_config::Config;
use trellis_fleet::{FleetError, Loaded};

use super::{Store, Truth};
use crate::daemon::ChangeError;
use crate::state::{Registration, StateDir};

pub struct EtcdStore {
    fleet: trellis_fleet::Store,
    /// The node file, validated: `[fleet]` and the node-local sections.
    node: Config,
    state_dir: StateDir,
    /// Requests to etcd are async; the store is called from blocking threads (changes run off the
    /// workers) and at start, outside the runtime.
    runtime: tokio::runtime::Handle,
    /// The truth as last loaded: what registrations are written against.
    last: Mutex<Option<Loaded>>,
}

impl EtcdStore {
    pub fn new(
        fleet: trellis_fleet::Store,
        node: Config,
        state_dir: StateDir,
        runtime: tokio::runtime::Handle,
    ) -> EtcdStore {
        EtcdStore {
            fleet,
            node,
            state_dir,
            runtime,
            last: Mutex::new(None),
        }
    }

    /// The revision last loaded (0 before the first load).
    pub fn revision(&self) -> i64 {
        self.lock().as_ref().map_or(0, |l| l.revision)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Loaded>> {
        self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the shared configuration's diagnostics are named after (the file it was applied from), in
    /// the node file's directory, where its relative paths resolve.
    fn shared_name(&self, applied: &str) -> PathBuf {
        let dir = self.node.source.parent().unwrap_or(Path::new(""));
        dir.join(applied)
    }
}

impl Store for EtcdStore {
    fn load(&self) -> Result<Truth, ChangeError> {
        let loaded = self
            .runtime
            .block_on(self.fleet.load())
            .map_err(unavailable)?;
        let (file, sha256) = match &loaded.config {
            // Nothing applied yet: the node serves its own sections only, and waits.
            None => (self.node.clone(), String::new()),
            Some(applied) => {
                let name = self.shared_name(&applied.name);
                let config = trellis_config::parse_shared(&applied.text, &name, &self.node)
                    .map_err(|e| match e {
                        trellis_config::ConfigError::Invalid(diags) => {
                            ChangeError::Invalid(diags.iter().map(|d| d.to_string()).collect())
                        }
                        other => ChangeError::Invalid(vec![other.to_string()]),
                    })?;
                (config, hex(&Sha256::digest(applied.text.as_bytes())))
            }
        };
        let registrations = loaded
            .registrations
            .iter()
            .map(|r| Registration {
                target_group: r.target_group.clone(),
                address: r.address,
                weight: r.weight,
            })
            .collect();
        *self.lock() = Some(loaded);
        Ok(Truth {
            file,
            sha256,
            registrations,
        })
    }

    fn save_registrations(&self, next: &[Registration]) -> Result<(), ChangeError> {
        let current = self
            .lock()
            .as_ref()
            .map(|l| l.registrations.clone())
            .unwrap_or_default();
        let next: Vec<trellis_fleet::Registration> = next
            .iter()
            .map(|r| trellis_fleet::Registration {
                target_group: r.target_group.clone(),
                address: r.address,
                weight: r.weight,
            })
            .collect();
        self.runtime
            .block_on(self.fleet.set_registrations(&current, &next))
            .map_err(unavailable)?;
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
}

fn unavailable(e: FleetError) -> ChangeError {
    match e {
        FleetError::Unavailable(_) => ChangeError::Unavailable(e.to_string()),
        other => ChangeError::Failed(other.to_string()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
