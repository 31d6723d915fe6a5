//! The fleet's truth in etcd: read it whole at one revision, apply a configuration with one
//! compare-and-swap, write registrations, and watch for what comes next.

use std::net::SocketAddr;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, WatchOptions,
};
use serde::{Deserialize, Serialize};

use crate::error::FleetError;
use crate::keys;

/// How long a request may take before the store counts as unavailable: admin writes must fail within
/// seconds when etcd has no quorum, not hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The applied configuration file, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The name of the file it was applied from, for messages.
    pub name: String,
    pub text: String,
}

/// A target registered through a node's admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub target_group: String,
    pub address: SocketAddr,
    pub weight: u16,
}

#[derive(Serialize, Deserialize)]
struct RegistrationValue {
    weight: u16,
}

/// The whole truth at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub revision: i64,
    /// `None` until a configuration is applied.
    pub config: Option<Applied>,
    /// The `config` key's own revision (what an apply compares against); 0 when there is none.
    pub config_revision: i64,
    pub registrations: Vec<Registration>,
}

#[derive(Clone)]
pub struct Store {
    client: Client,
    prefix: String,
}

impl Store {
    /// Connects to whichever of `endpoints` answers.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Store, FleetError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
        let client = Client::connect(endpoints, Some(options)).await?;
        Ok(Store {
            client,
            prefix: prefix.to_string(),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Reads everything under the prefix at one revision.
    pub async fn load(&self) -> Result<Loaded, FleetError> {
        let mut client = self.client.clone();
        let all = keys::all(&self.prefix);
        let resp = client
            .get(all, Some(GetOptions::new().with_prefix()))
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let config_key = keys::config(&self.prefix);
        let mut loaded = Loaded {
            revision,
            config: None,
            config_revision: 0,
            registrations: Vec::new(),
        };
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let corrupt = |message: String| FleetError::Corrupt {
                key: key.clone(),
                message,
            };
            if key == config_key {
                let applied: Applied = serde_json::from_slice(kv.value())
                    .map_err(|e| corrupt(format!("not an applied configuration: {e}")))?;
                loaded.config = Some(applied);
                loaded.config_revision = kv.mod_revision();
            } else if let Some((target_group, address)) =
                keys::parse_registration(&self.prefix, &key)
            {
                let value: RegistrationValue = serde_json::from_slice(kv.value())
                    .map_err(|e| corrupt(format!("not a registration: {e}")))?;
                loaded.registrations.push(Registration {
                    target_group,
                    address,
                    weight: value.weight,
                });
            }
        }
        Ok(loaded)
    }

    /// Writes `applied` as the fleet's configuration if it is still at `expected` (the `config` key's
    /// revision when it was read; 0: none yet). Returns the new revision.
    pub async fn apply(&self, applied: &Applied, expected: i64) -> Result<i64, FleetError> {
        let key = keys::config(&self.prefix);
        let value = serde_json::to_vec(applied).map_err(|e| FleetError::Corrupt {
            key: key.clone(),
            message: e.to_string(),
        })?;
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                expected,
            )])
            .and_then([TxnOp::put(key, value, None)]);
        let resp = self.client.clone().txn(txn).await?;
        if !resp.succeeded() {
            return Err(FleetError::Conflict(expected));
        }
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Makes `next` the registrations, from `current` (as last loaded): one transaction that puts what
    /// is new or re-weighted and deletes what is gone. Returns the new revision.
    pub async fn set_registrations(
        &self,
        current: &[Registration],
        next: &[Registration],
    ) -> Result<i64, FleetError> {
        let mut ops = Vec::new();
        for r in next {
            if !current.contains(r) {
                let value =
                    serde_json::to_vec(&RegistrationValue { weight: r.weight }).unwrap_or_default();
                let key = keys::registration(&self.prefix, &r.target_group, r.address);
                ops.push(TxnOp::put(key, value, None));
            }
        }
        for r in current {
            let kept = next
                .iter()
                .any(|n| n.target_group == r.target_group && n.address == r.address);
            if !kept {
                let key = keys::registration(&self.prefix, &r.target_group, r.address);
                ops.push(TxnOp::delete(key, None));
            }
        }
        let resp = self.client.clone().txn(Txn::new().and_then(ops)).await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Waits for the next change under the prefix after `revision`, and returns the revision it came
    /// at. A compacted history (the node fell behind) is a change too: the caller reads everything again
    /// either way, so no event can be lost.
    pub async fn changed_after(&self, revision: i64) -> Result<i64, FleetError> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1)
            .with_progress_notify();
        let (_watcher, mut stream) = self
            .client
            .clone()
            .watch(keys::all(&self.prefix), Some(options))
            .await?;
        while let Some(resp) = stream.message().await? {
            if resp.compact_revision() > 0 || resp.canceled() {
                return Ok(resp.compact_revision().max(revision + 1));
            }
            if !resp.events().is_empty() {
                return Ok(resp.header().map_or(revision + 1, |h| h.revision()));
            }
        }
        Err(FleetError::Unavailable("the watch ended".into()))
    }
}
