//! Who is in the fleet: each node keeps a key of its own under a lease, `nodes/{node}`, saying which
//! revision it serves and when it last made contact. A node that stops (or loses etcd for longer than
//! its lease) disappears from the list by itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{GetOptions, PutOptions};
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
}

/// A node's lease, renewed by [`Store::heartbeat`].
#[derive(Default)]
pub struct Lease {
    id: Option<i64>,
}

impl Store {
    /// Renews this node's lease (or takes a new one when it expired) and writes its key under it.
    pub async fn heartbeat(
        &self,
        lease: &mut Lease,
        ttl: Duration,
        info: &NodeInfo,
    ) -> Result<(), FleetError> {
        // A keep-alive is a stream: bounded here, as unary requests are by the client's timeout. A lease
        // that cannot be renewed in time is replaced (the old one expires by itself).
        let alive = match lease.id {
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
            lease.id = Some(granted.id());
        }
        let id = lease.id.unwrap_or_default();
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
            let (mut keeper, mut stream) = client.lease_keep_alive(id).await?;
            keeper.keep_alive().await?;
            Ok(stream.message().await?.is_some_and(|r| r.ttl() > 0))
        })
        .await
    }

    /// Every node with a live lease, by name.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, FleetError> {
        let prefix = keys::nodes(self.prefix());
        let resp = self
            .on_a_member(|mut client| {
                let prefix = prefix.clone();
                async move {
                    client
                        .get(prefix, Some(GetOptions::new().with_prefix()))
                        .await
                }
            })
            .await?;
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
