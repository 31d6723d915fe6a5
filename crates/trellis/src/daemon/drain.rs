//! Draining: a target that left its group takes no new requests, finishes the ones in flight, and is
//! forgotten — at its group's `deregistration_delay` at the latest, when whatever is still open on it
//! (slow responses, streams, WebSocket tunnels) is closed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::task::AbortHandle;
use trellis_targets::TargetRegistry;

use super::Daemon;

/// How often a drain looks at the target's in-flight count. It also lets requests that picked the target
/// just before the swap begin before the first look.
const POLL: Duration = Duration::from_millis(50);

/// A target on its way out.
#[derive(Debug, Clone)]
pub struct Drain {
    pub weight: u16,
    pub deadline: Instant,
    pub source: super::Source,
}

type Key = (String, SocketAddr);

/// The targets draining now. Changes of configuration hold its lock for their whole length, so a drain
/// can never finish (and forget its target) half-way through one that brings the target back.
#[derive(Default)]
pub struct Draining {
    inner: Mutex<DrainMap>,
}

#[derive(Default)]
pub struct DrainMap {
    drains: HashMap<Key, (Drain, AbortHandle)>,
}

impl Draining {
    pub fn lock(&self) -> MutexGuard<'_, DrainMap> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The draining targets, sorted (for status).
    pub fn list(&self) -> Vec<(Key, Drain)> {
        let mut list: Vec<_> = self
            .lock()
            .drains
            .iter()
            .map(|(k, (d, _))| (k.clone(), d.clone()))
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }
}

impl DrainMap {
    pub fn contains(&self, key: &Key) -> bool {
        self.drains.contains_key(key)
    }

    pub fn start(
        &mut self,
        daemon: &Arc<Daemon>,
        key: Key,
        drain: Drain,
        reason: &str,
        now: Instant,
    ) {
        let (group, address) = (&key.0, key.1);
        if let Some(stats) = daemon.targets.get(group, address) {
            if let Some(t) = stats.drain(reason, now) {
                trellis_health::log_transition(group, address, &t);
            }
        }
        let task = tokio::spawn(run(Arc::downgrade(daemon), key.clone(), drain.deadline));
        if let Some((_, old)) = self.drains.insert(key, (drain, task.abort_handle())) {
            old.abort();
        }
    }

    /// The target is back in its group: stop draining it.
    pub fn cancel(&mut self, key: &Key, targets: &TargetRegistry, now: Instant) {
        if let Some((_, task)) = self.drains.remove(key) {
            task.abort();
            if let Some(stats) = targets.get(&key.0, key.1) {
                if let Some(t) = stats.undrain(now) {
                    trellis_health::log_transition(&key.0, key.1, &t);
                }
            }
        }
    }
}

async fn run(daemon: Weak<Daemon>, key: Key, deadline: Instant) {
    let (group, address) = (&key.0, key.1);
    let started = Instant::now();
    loop {
        tokio::time::sleep(POLL).await;
        let Some(daemon) = daemon.upgrade() else {
            return;
        };
        let in_flight = daemon
            .targets
            .get(group, address)
            .map_or(0, |s| s.in_flight());
        let overdue = Instant::now() >= deadline;
        if in_flight > 0 && !overdue {
            continue;
        }
        let mut drains = daemon.draining.lock();
        // Only the drain still registered for the key may finish it (not one cancelled meanwhile).
        match drains.drains.get(&key) {
            Some((_, task)) if task.id() == tokio::task::id() => {}
            _ => return,
        }
        drains.drains.remove(&key);
        if in_flight > 0 {
            tracing::warn!(target_group = %group, target = %address, in_flight, "deregistration delay over: closing the target's remaining connections");
            daemon.proxy.close_target(group, address);
        } else {
            tracing::info!(target_group = %group, target = %address, drained_in = ?started.elapsed(), "target drained and removed");
        }
        daemon.proxy.forget_target(group, address);
        return;
    }
}
