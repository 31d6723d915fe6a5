//! Where per-target live state lives between snapshots.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::target::GroupStats;
use crate::TargetStats;

/// (target group name, address) → live stats, and group name → group stats. Touched when a snapshot is
/// built, by health checks and by status pages; never per request.
#[derive(Debug, Default)]
pub struct TargetRegistry {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    targets: HashMap<(String, SocketAddr), Arc<TargetStats>>,
    groups: HashMap<String, Arc<GroupStats>>,
}

impl TargetRegistry {
    /// The stats of a target, created on first sight (as `initial`).
    pub fn stats(&self, group: &str, address: SocketAddr) -> Arc<TargetStats> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Inner { targets, groups } = &mut *inner;
        targets
            .entry((group.to_string(), address))
            .or_insert_with(|| {
                let group = groups.entry(group.to_string()).or_default().clone();
                Arc::new(TargetStats::new(group, Instant::now()))
            })
            .clone()
    }

    /// The stats of a group, created on first sight.
    pub fn group(&self, group: &str) -> Arc<GroupStats> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.groups.entry(group.to_string()).or_default().clone()
    }

    /// The stats of a target if it is known.
    pub fn get(&self, group: &str, address: SocketAddr) -> Option<Arc<TargetStats>> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.targets.get(&(group.to_string(), address)).cloned()
    }

    /// Forgets one target (it has finished draining); its group goes too when it was the last.
    pub fn remove(&self, group: &str, address: SocketAddr) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.targets.remove(&(group.to_string(), address));
        if !inner.targets.keys().any(|(g, _)| g == group) {
            inner.groups.remove(group);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CheckMode, TargetState};

    #[test]
    fn same_key_same_stats() {
        let r = TargetRegistry::default();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let now = Instant::now();
        r.stats("web", a).configure(CheckMode::Disabled, now);
        assert!(r.stats("web", a).is_routable());
        assert!(!r.stats("api", a).is_routable(), "new targets are initial");
        assert!(std::ptr::eq(
            r.stats("web", a).group(),
            r.group("web").as_ref()
        ));
        r.remove("web", a);
        assert!(r.get("web", a).is_none());
        assert_eq!(
            r.stats("web", a).view().health.state,
            TargetState::Initial,
            "forgotten, then created anew"
        );
    }
}
