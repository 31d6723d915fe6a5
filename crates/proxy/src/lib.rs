//! trellis-proxy: the data plane. Listeners, the routing snapshot, the request path, upstream pools.
#![forbid(unsafe_code)]

mod body;
mod error;
mod forward;
mod headers;
mod server;
mod snapshot;
mod upstream;

pub use body::ProxyBody;
pub use error::{Failure, ProxyError};
pub use server::Server;
pub use snapshot::Snapshot;

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use trellis_config::Config;
use trellis_targets::TargetRegistry;

use upstream::PoolRegistry;

/// The routing state: one immutable [`Snapshot`] behind one `ArcSwap`, plus what outlives snapshots
/// (target stats and connection pools, keyed by target group and address).
pub struct Proxy {
    snapshot: ArcSwap<Snapshot>,
    targets: TargetRegistry,
    pools: PoolRegistry,
}

impl Proxy {
    pub fn new(config: &Config) -> Arc<Proxy> {
        let targets = TargetRegistry::default();
        let pools = PoolRegistry::default();
        let snapshot = Snapshot::build(config, &targets, &pools);
        Arc::new(Proxy {
            snapshot: ArcSwap::from_pointee(snapshot),
            targets,
            pools,
        })
    }

    /// The current snapshot: one load per request.
    #[inline]
    pub fn snapshot(&self) -> Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// Builds a snapshot of `config` and swaps it in; requests already routed finish on the old one.
    pub fn apply(&self, config: &Config) {
        let snapshot = Snapshot::build(config, &self.targets, &self.pools);
        self.snapshot.store(Arc::new(snapshot));
    }
}
