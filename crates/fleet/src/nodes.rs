//! Who is in the fleet: each node keeps a key of its own under a lease, `nodes/{node}`, saying which
//! revision it serves and when it last made contact. A node that stops (or loses etcd for longer than
//! its lease) disappears from the list by itself.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::PutOptions;
use serde::{Deserialize, Serialize};

use crate::error::FleetError;
use crate::keys;
use crate::store::Store;

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node: String,
    /// The revision of the truth it serves.
    pub revision: i64,
    /// Seconds since the Unix epoch of its last heartbeat.
    pub contact: u64,
    /// Serving its disk copy (etcd could not be read when it started).
    pub stale: bool,
    /// The address its scaling groups' instances listen on (its `bind`, else 127.0.0.1).
    #[serde(default)]
    pub host: Option<String>,
}

/// A node's lease, renewed by [`Store::heartbeat`]; shared with what holds keys under it (scaling group
/// ownership), which must know whether it is still safely alive.
#[derive(Clone, Default)]
pub struct Lease {
    inner: Arc<Mutex<LeaseInner>>,
}

#[derive(Default)]
struct LeaseInner {
    id: Option<i64>,
    /// When the last renewal that succeeded was sent: the lease lives at least its TTL from then.
    renewed: Option<Instant>,
}

impl Lease {
    /// The lease's id if it was renewed within `max_age`. An owner acts only while this answers, and
    /// `max_age` is well under the TTL, so it stops before its lease can expire and another node can
    /// take over.
    pub fn fresh(&self, max_age: Duration) -> Option<i64> {
        let inner = self.lock();
        let renewed = inner.renewed?;
        (renewed.elapsed() < max_age).then_some(inner.id?)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LeaseInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store {
    /// Renews this node's lease (or takes a new one when it expired) and writes its key under it.
    pub async fn heartbeat(
        &self,
        lease: &Lease,
        ttl: Duration,
        info: &NodeInfo,
    ) -> Result<(), FleetError> {
        let sent = Instant::now();
        let current = lease.lock().id;
        // A keep-alive is a stream: bounded here, as unary requests are by the client's timeout. A lease
        // that cannot be renewed in time is replaced (the old one expires by itself).
        let alive = match current {
            Some(id) => tokio::time::timeout(ttl / 3, self.keep_alive(id))
                .await
                .unwrap_or(Ok(false))?,
            None => false,
        };
        if !alive {
            let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1);
            let granted = self
                .on_a_member(|mut client| async move { client.lease_grant(ttl, None).await })
                .await?;
            *lease.lock() = LeaseInner {
                id: Some(granted.id()),
                renewed: Some(sent),
            };
        } else {
            lease.lock().renewed = Some(sent);
        }
        let id = lease.lock().id.unwrap_or_default();
        let key = keys::node(self.prefix(), &info.node);
        let value = serde_json::to_vec(info).unwrap_or_default();
        self.on_a_member(|mut client| {
            let (key, value) = (key.clone(), value.clone());
            async move {
                client
                    .put(key, value, Some(PutOptions::new().with_lease(id)))
                    .await
            }
        })
        .await?;
        Ok(())
    }

    /// One keep-alive round; false when the lease has expired.
    async fn keep_alive(&self, id: i64) -> Result<bool, FleetError> {
        self.on_a_member(|mut client| async move {
            // An expired lease (longer than its TTL without etcd, or a new cluster) is an error of
            // the client's: it is no failure of ours, but the sign to take a new lease.
            let (mut keeper, mut stream) = match client.lease_keep_alive(id).await {
                Ok(opened) => opened,
                Err(etcd_client::Error::LeaseKeepAliveError(_)) => return Ok(false),
                Err(e) => return Err(e),
            };
            keeper.keep_alive().await?;
            Ok(stream.message().await?.is_some_and(|r| r.ttl() > 0))
        })
        .await
    }

    /// Every node with a live lease, by name.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, FleetError> {
        let prefix = keys::nodes(self.prefix());
        let resp = self.range(&prefix).await?;
        let mut nodes: Vec<NodeInfo> = resp
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(nodes)
    }
}

/// Seconds since the Unix epoch now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
