//! trellis-fleet: fleet mode on etcd. Several nodes, one truth: the fleet's configuration and the targets
//! registered through any node's admin API live in etcd under one prefix; every node reads the whole
//! prefix at one revision, serves it, and watches it for the next.
//!
//! Key layout under the prefix (values are JSON):
//! - `config`: `{"name": "shop.toml", "text": "..."}`, the applied file, one key so that applying it is
//!   one compare-and-swap (never half a configuration, unlike per-key layouts);
//! - `registrations/{target_group}/{ip:port}`: `{"weight": N}`, one key per target, so two nodes
//!   registering two targets never overwrite each other;
//! - `nodes/{node}`: `{"node", "revision", "contact", "stale", "host"}` under the node's lease: who is in
//!   the fleet, and what each serves;
//! - `scaling/{group}/...`: each scaling group's owner, state, instance records and the nodes' reports
//!   (see [`scaling`](crate::GroupView)). A reload reads only the configuration and registrations: the
//!   rest changes every second and is followed by each group's own task.
#![forbid(unsafe_code)]

mod error;
mod keys;
mod nodes;
mod scaling;
mod store;

pub use error::FleetError;
pub use nodes::{now, Lease, NodeInfo};
pub use scaling::{
    ActivityRecord, GroupState, GroupView, InstanceRecord, NodeLoad, Owner, OwnerWrite,
    RefreshRecord, RefreshRequest, Report,
};
pub use store::{Applied, ImportedGroup, Loaded, Registration, Store};
