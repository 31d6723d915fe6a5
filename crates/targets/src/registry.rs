//! Where per-target live state lives between snapshots.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use crate::TargetStats;

/// (target group name, address) → live stats. Touched when a snapshot is built, never per request.
#[derive(Debug, Default)]
pub struct TargetRegistry {
    stats: Mutex<HashMap<(String, SocketAddr), Arc<TargetStats>>>,
}

impl TargetRegistry {
    /// The stats of a target, created on first sight.
    pub fn stats(&self, group: &str, address: SocketAddr) -> Arc<TargetStats> {
        let mut map = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry((group.to_string(), address)).or_default().clone()
    }

    /// Forgets targets for which `keep` says no (called after a swap, for targets no snapshot uses).
    pub fn retain(&self, mut keep: impl FnMut(&str, SocketAddr) -> bool) {
        let mut map = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|(group, address), _| keep(group, *address));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_stats() {
        let r = TargetRegistry::default();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let s1 = r.stats("web", a);
        s1.set_routable(false);
        assert!(!r.stats("web", a).is_routable());
        assert!(r.stats("api", a).is_routable());
        r.retain(|g, _| g == "api");
        assert!(
            r.stats("web", a).is_routable(),
            "forgotten, then created anew"
        );
    }
}
