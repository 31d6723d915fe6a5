//! The store: where the truth comes from. The truth is what every node of a deployment must agree on —
//! the configuration and the targets registered through the admin API (and, later, the scaling groups'
//! state) — as opposed to what a node keeps for itself (health results, its snapshot, its processes).
//!
//! The daemon never asks where the truth lives: it loads it from its store at start and at every reload,
//! and writes every change to it before serving the change. Today's store is [`FileStore`] (the file and
//! the state directory of one machine); fleet mode adds one on etcd behind the same seam (DESIGN.md,
//! "Beyond one machine").

mod etcd;
mod file;
mod fleet_state;

pub use etcd::EtcdStore;
pub use file::{read_config, FileStore};
pub use fleet_state::FleetState;

use std::path::Path;

use sha2::{Digest, Sha256};
use trellis_config::{Config, ConfigError};

use crate::daemon::ChangeError;
use crate::state::Registration;

/// A configuration's errors as a change's: every one, `FILE:LINE: key: message`.
pub fn invalid(e: ConfigError) -> ChangeError {
    match e {
        ConfigError::Invalid(diags) => {
            ChangeError::Invalid(diags.iter().map(|d| d.to_string()).collect())
        }
        other => ChangeError::Invalid(vec![other.to_string()]),
    }
}

/// A configuration's fingerprint: the SHA-256 of its bytes, in hex.
pub fn fingerprint(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The truth as of one moment: the configuration and the registered targets.
pub struct Truth {
    pub file: Config,
    /// The configuration's fingerprint (of its bytes as stored).
    pub sha256: String,
    pub registrations: Vec<Registration>,
}

pub trait Store: Send + Sync {
    /// The truth as it is now: at start, and at every reload. An invalid configuration is
    /// [`ChangeError::Invalid`] with every error, `FILE:LINE: key: message`.
    fn load(&self) -> Result<Truth, ChangeError>;

    /// Makes `next` the registered targets. On error nothing changed.
    fn save_registrations(&self, next: &[Registration]) -> Result<(), ChangeError>;

    /// Where the configuration comes from, for messages.
    fn origin(&self) -> String;

    /// What this node keeps for itself (the scaler's records, ...).
    fn state_dir(&self) -> &Path;

    /// Registers the store's own metrics.
    fn register_metrics(&self, _registry: &prometheus::Registry) -> Result<(), prometheus::Error> {
        Ok(())
    }

    /// Whether a load also serves as the way other nodes' target changes arrive (fleet mode: every change
    /// under the prefix is read as a reload), so that a load of an unchanged configuration is a change
    /// of targets, not a new load of the configuration.
    fn loads_target_changes(&self) -> bool {
        false
    }

    /// The `fleet` part of `/v1/status`; `None` outside fleet mode.
    fn fleet_status(&self) -> Option<serde_json::Value> {
        None
    }
}
