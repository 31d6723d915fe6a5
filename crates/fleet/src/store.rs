//! The fleet's truth in etcd: read it whole at one revision, apply a configuration with one
//! compare-and-swap, write registrations, and watch for what comes next.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, TlsOptions, Txn,
    TxnOp, WatchOptions,
};
use serde::{Deserialize, Serialize};
use trellis_config::FleetTls;

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

/// A scaling group of a single-file deployment, taken into a fleet: its state and the machines its
/// command provider runs.
#[derive(Debug, Clone)]
pub struct ImportedGroup {
    pub name: String,
    pub state: crate::GroupState,
    pub instances: Vec<crate::InstanceRecord>,
}

/// The whole truth at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub revision: i64,
    /// `None` until a configuration is applied.
    pub config: Option<Applied>,
    /// The `config` key's own revision (what an apply compares against); 0 when there is none.
    pub config_revision: i64,
    /// The newest change to the configuration or a registration (nodes' own keys left out).
    pub truth_revision: i64,
    pub registrations: Vec<Registration>,
}

/// One client per member, so that a request goes to the next member when one cannot be reached (one
/// client over all of them keeps picking the dead one): any one reachable member is enough.
#[derive(Clone)]
pub struct Store {
    clients: Arc<[Client]>,
    /// The member that answered last: tried first.
    preferred: Arc<AtomicUsize>,
    prefix: String,
}

impl Store {
    /// Connects to whichever of `endpoints` answers (over TLS with `tls`, for https:// endpoints).
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        tls: Option<&FleetTls>,
    ) -> Result<Store, FleetError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
        if let Some(tls) = tls {
            let mut config = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca));
            if let Some((cert, key)) = &tls.identity {
                config = config.identity(Identity::from_pem(cert, key));
            }
            options = options.with_tls(config);
        }
        let mut clients = Vec::new();
        for endpoint in endpoints {
            // Connections are made lazily: a member that is down now is no error yet.
            clients.push(Client::connect([endpoint], Some(options.clone())).await?);
        }
        if clients.is_empty() {
            return Err(FleetError::Unavailable("no etcd endpoints".into()));
        }
        Ok(Store {
            clients: clients.into(),
            preferred: Arc::new(AtomicUsize::new(0)),
            prefix: prefix.to_string(),
        })
    }

    /// Runs `op` on the member that answered last, and on the next ones while a member cannot be
    /// reached. A member that is reached but fails (no quorum, a timeout) is the answer: trying others
    /// would only multiply the wait.
    pub(crate) async fn on_a_member<T, F, Fut>(&self, op: F) -> Result<T, FleetError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.clients.len();
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last = None;
        for k in 0..n {
            let i = (first + k) % n;
            match op(self.clients[i].clone()).await {
                Ok(v) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) if unreachable(&e) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(
            || FleetError::Unavailable("no etcd endpoints".into()),
            Into::into,
        ))
    }

    /// Every key under `range`, at one revision.
    pub(crate) async fn range(&self, range: &str) -> Result<etcd_client::GetResponse, FleetError> {
        self.on_a_member(|mut client| async move {
            client
                .get(range, Some(GetOptions::new().with_prefix()))
                .await
        })
        .await
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Reads everything under the prefix at one revision.
    pub async fn load(&self) -> Result<Loaded, FleetError> {
        let all = keys::all(&self.prefix);
        let resp = self.range(&all).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let config_key = keys::config(&self.prefix);
        let mut loaded = Loaded {
            revision,
            config: None,
            config_revision: 0,
            truth_revision: 0,
            registrations: Vec::new(),
        };
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let corrupt = |message: String| FleetError::Corrupt {
                key: key.clone(),
                message,
            };
            if keys::is_truth(&self.prefix, kv.key()) {
                loaded.truth_revision = loaded.truth_revision.max(kv.mod_revision());
            }
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
        let resp = self
            .on_a_member(|mut client| {
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        expected,
                    )])
                    .and_then([TxnOp::put(key.clone(), value.clone(), None)]);
                async move { client.txn(txn).await }
            })
            .await?;
        if !resp.succeeded() {
            return Err(FleetError::Conflict(expected));
        }
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Writes a whole deployment (`applied` and its `registrations`) into an empty prefix, in one
    /// transaction that fails if a configuration appeared meanwhile. Returns the new revision.
    pub async fn import(
        &self,
        applied: &Applied,
        registrations: &[Registration],
        groups: &[ImportedGroup],
    ) -> Result<i64, FleetError> {
        let current = self.load().await?;
        if current.config.is_some() || !current.registrations.is_empty() {
            return Err(FleetError::NotEmpty(self.prefix.clone()));
        }
        let key = keys::config(&self.prefix);
        let value = serde_json::to_vec(applied).map_err(|e| FleetError::Corrupt {
            key: key.clone(),
            message: e.to_string(),
        })?;
        let puts: Vec<(String, Vec<u8>)> = registrations
            .iter()
            .map(|r| {
                let value =
                    serde_json::to_vec(&RegistrationValue { weight: r.weight }).unwrap_or_default();
                (
                    keys::registration(&self.prefix, &r.target_group, r.address),
                    value,
                )
            })
            .collect();
        let mut puts = puts;
        for group in groups {
            puts.extend(crate::scaling::import_puts(&self.prefix, group));
        }
        let resp = self
            .on_a_member(|mut client| {
                let ops: Vec<TxnOp> = std::iter::once(TxnOp::put(key.clone(), value.clone(), None))
                    .chain(
                        puts.iter()
                            .map(|(k, v)| TxnOp::put(k.clone(), v.clone(), None)),
                    )
                    .collect();
                let txn = Txn::new()
                    .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
                    .and_then(ops);
                async move { client.txn(txn).await }
            })
            .await?;
        if !resp.succeeded() {
            return Err(FleetError::NotEmpty(self.prefix.clone()));
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
        let mut puts = Vec::new();
        let mut deletes = Vec::new();
        for r in next {
            if !current.contains(r) {
                let value =
                    serde_json::to_vec(&RegistrationValue { weight: r.weight }).unwrap_or_default();
                let key = keys::registration(&self.prefix, &r.target_group, r.address);
                puts.push((key, value));
            }
        }
        for r in current {
            let kept = next
                .iter()
                .any(|n| n.target_group == r.target_group && n.address == r.address);
            if !kept {
                let key = keys::registration(&self.prefix, &r.target_group, r.address);
                deletes.push(key);
            }
        }
        let resp = self
            .on_a_member(|mut client| {
                let ops: Vec<TxnOp> = puts
                    .iter()
                    .map(|(k, v)| TxnOp::put(k.clone(), v.clone(), None))
                    .chain(deletes.iter().map(|k| TxnOp::delete(k.clone(), None)))
                    .collect();
                async move { client.txn(Txn::new().and_then(ops)).await }
            })
            .await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Waits for the next change under the prefix after `revision`, and returns the revision it came
    /// at. A compacted history (the node fell behind) is a change too: the caller reads everything again
    /// either way, so no event can be lost.
    pub async fn changed_after(&self, revision: i64) -> Result<i64, FleetError> {
        let all = keys::all(&self.prefix);
        let (_watcher, mut stream) = self
            .on_a_member(|mut client| {
                let all = all.clone();
                let options = WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1)
                    .with_progress_notify();
                async move { client.watch(all, Some(options)).await }
            })
            .await?;
        while let Some(resp) = stream.message().await? {
            if resp.compact_revision() > 0 || resp.canceled() {
                return Ok(resp.compact_revision().max(revision + 1));
            }
            // Heartbeats and the scaling groups' working keys are not the truth: they change nothing a
            // node serves through a reload (each group's task reads its own keys).
            let changed = resp
                .events()
                .iter()
                .filter_map(|e| e.kv())
                .any(|kv| keys::is_truth(&self.prefix, kv.key()));
            if changed {
                return Ok(resp.header().map_or(revision + 1, |h| h.revision()));
            }
        }
        Err(FleetError::Unavailable("the watch ended".into()))
    }
}

/// Whether `e` says the member could not be reached at all (so another may be tried).
fn unreachable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        // gRPC's UNAVAILABLE: the connection could not be made (or broke).
        etcd_client::Error::GRpcStatus(status) => status.code() as i32 == 14,
        _ => false,
    }
}
