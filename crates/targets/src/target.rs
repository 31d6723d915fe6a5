//! One target as the balancer sees it, and its live counters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

/// Live state of a target that outlives any one routing snapshot: kept in the [`crate::TargetRegistry`]
/// keyed by (target group, address), so in-flight counts and health survive a reload.
#[derive(Debug)]
pub struct TargetStats {
    in_flight: AtomicU32,
    /// Whether health (active and passive) lets this target take new requests. Health checking writes it;
    /// the balancer only reads it.
    routable: AtomicBool,
}

impl Default for TargetStats {
    fn default() -> Self {
        TargetStats {
            in_flight: AtomicU32::new(0),
            routable: AtomicBool::new(true),
        }
    }
}

impl TargetStats {
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn is_routable(&self) -> bool {
        self.routable.load(Ordering::Relaxed)
    }

    pub fn set_routable(&self, routable: bool) {
        self.routable.store(routable, Ordering::Relaxed);
    }
}

/// A target in one snapshot: address and weight are fixed for the snapshot's life.
#[derive(Debug, Clone)]
pub struct Target {
    pub address: SocketAddr,
    pub weight: u16,
    pub stats: Arc<TargetStats>,
}

impl Target {
    /// Counts a request as in flight until the returned guard is dropped (when its response body ends).
    pub fn begin(&self) -> InFlight {
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.stats.clone())
    }
}

/// Held for as long as a request to a target is in flight.
#[derive(Debug)]
pub struct InFlight(Arc<TargetStats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
