//! Scaling groups in etcd: one owner per group, elected on its node's lease, whose every write is fenced
//! on that ownership; the group's state and instance records, which the next owner continues from; and
//! what every node reports (its instances' lifecycle, its request counters), under its own lease so that
//! a dead node's reports disappear with it.
//!
//! Keys under `scaling/{group}/`:
//! - `owner`: `{"node"}`, created under the owner's lease only if absent (the election);
//! - `state`: [`GroupState`], written by the owner;
//! - `instances/{id}`: [`InstanceRecord`], written by the owner;
//! - `reports/{id}`: [`Report`], written by the node that runs the instance, under its lease;
//! - `load/{node}`: [`NodeLoad`], written by every node, under its lease;
//! - `requests/desired`, `requests/protect/{id}`, `requests/wake`, `requests/refresh`: an operator's (or a
//!   waiting request's) wish, written by whichever node took it; the owner applies each once (it
//!   remembers the newest revision it applied).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use crate::error::FleetError;
use crate::keys;
use crate::store::Store;

/// The group's capacity state: what a new owner continues from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    pub desired: u32,
    pub min: u32,
    pub max: u32,
    /// The number the next instance's id gets.
    pub next_id: u64,
    /// Milliseconds since the Unix epoch of the last capacity change (the cooldown runs across owners).
    #[serde(default)]
    pub last_activity_ms: Option<u64>,
    /// The newest request revision applied: a request at or below it has been seen.
    #[serde(default)]
    pub requests_applied: i64,
    /// The latest activities, oldest first.
    #[serde(default)]
    pub activities: Vec<ActivityRecord>,
    /// The latest instance refresh (a new owner continues one in progress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshRecord>,
}

/// An instance refresh as the owner keeps it in the group's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRecord {
    pub id: u64,
    /// `pending`, `in_progress`, `successful`, `failed`, `cancelled`.
    pub status: String,
    #[serde(default)]
    pub reason: String,
    /// Why it started.
    #[serde(default)]
    pub cause: String,
    /// The launch instances are replaced with (its identity, as in [`InstanceRecord::launch`]).
    pub target: String,
    pub min_healthy_percent: u32,
    pub max_healthy_percent: u32,
    #[serde(default)]
    pub percentage_complete: u32,
    #[serde(default)]
    pub skipped_protected: Vec<String>,
    /// Milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    #[serde(default)]
    pub ended_at_ms: Option<u64>,
}

impl RefreshRecord {
    /// Not ended yet (`pending` or `in_progress`).
    pub fn in_progress(&self) -> bool {
        matches!(self.status.as_str(), "pending" | "in_progress")
    }
}

/// An operator's refresh request: start one (with these overrides of the group's settings) or cancel
/// the one in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRequest {
    #[serde(default)]
    pub cancel: bool,
    #[serde(default)]
    pub min_healthy_percent: Option<u32>,
    #[serde(default)]
    pub max_healthy_percent: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityRecord {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub kind: String,
    pub description: String,
    /// The owner that did it.
    pub node: String,
}

/// One instance, as its owner decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub id: String,
    /// The node that runs it (the process provider); for the command provider, the owner that launched
    /// it, which is nothing more (a machine outlives the node that asked for it).
    pub node: String,
    /// The command provider's id of the machine (its launch hook's answer); `None` for a process.
    #[serde(default)]
    pub provider_id: Option<String>,
    pub address: SocketAddr,
    /// Milliseconds since the Unix epoch.
    pub launched_at_ms: u64,
    /// Since when it is in service (first healthy), in milliseconds since the Unix epoch.
    #[serde(default)]
    pub in_service_at_ms: Option<u64>,
    #[serde(default)]
    pub protected: bool,
    /// Leaving: taken out of every node's routing, drained, then stopped by its node.
    #[serde(default)]
    pub terminating: bool,
    /// The identity of the launch that makes it (a digest of what makes an instance); a node starts
    /// it only under the same launch. `None` in records from before: taken as the current launch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<String>,
    /// Its launching hooks continued (as its node reported once): kept here, not only in the report,
    /// which lives under the node's lease and is gone for a moment after an etcd outage.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admitted: bool,
    /// In the warm pool: running, out of every node's routing, until a scale-out takes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warm: bool,
}

/// What the node that runs an instance says about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub node: String,
    #[serde(default)]
    pub pid: Option<i32>,
    /// Its health as the node's own checks see it (`initial`, `healthy`, `unhealthy`, ...).
    #[serde(default)]
    pub health: Option<String>,
    /// Why it is gone, when it exited (or could not be started).
    #[serde(default)]
    pub exited: Option<String>,
    /// Stopped after it was told to terminate.
    #[serde(default)]
    pub stopped: bool,
    /// CPU time used so far, in clock ticks.
    #[serde(default)]
    pub cpu_ticks: Option<u64>,
    /// Its launching lifecycle hooks have continued (or it has none): the fleet may route to it.
    #[serde(default)]
    pub admitted: bool,
    /// In the warm pool: it passed its health check, as its node probes it (lately).
    #[serde(default)]
    pub warm_ready: bool,
}

/// A node's request counters for the group's instances, by address: what the owner sums.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// Requests completed since the node started, per instance address.
    pub completed: BTreeMap<String, u64>,
    /// Requests in flight now, per instance address.
    pub in_flight: BTreeMap<String, u64>,
}

/// Who owns a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub node: String,
    /// The owner key's create revision: the fence of every owner write.
    pub since: i64,
    pub lease: i64,
}

#[derive(Serialize, Deserialize)]
struct OwnerValue {
    node: String,
}

#[derive(Serialize, Deserialize)]
struct DesiredValue {
    desired: u32,
}

#[derive(Serialize, Deserialize)]
struct ProtectValue {
    protected: bool,
}

#[derive(Serialize, Deserialize)]
struct WakeValue {
    node: String,
}

/// Everything of one group, read at one revision.
#[derive(Debug, Clone, Default)]
pub struct GroupView {
    pub owner: Option<Owner>,
    pub state: Option<GroupState>,
    pub instances: Vec<InstanceRecord>,
    pub reports: BTreeMap<String, Report>,
    pub loads: BTreeMap<String, NodeLoad>,
    /// The newest desired request, and its revision.
    pub desired_request: Option<(u32, i64)>,
    /// Protection requests: (instance, protected, revision).
    pub protect_requests: Vec<(String, bool, i64)>,
    /// The newest wake-up (a request waits at that node for a group scaled to zero), and its revision.
    pub wake_request: Option<(String, i64)>,
    /// The newest refresh request, and its revision.
    pub refresh_request: Option<(RefreshRequest, i64)>,
}

/// A fenced write of the owner: puts and deletes of keys under the group.
#[derive(Debug, Default)]
pub struct OwnerWrite {
    pub state: Option<GroupState>,
    pub instances: Vec<InstanceRecord>,
    /// Instances whose record (and report) go.
    pub removed: Vec<String>,
}

impl OwnerWrite {
    pub fn is_empty(&self) -> bool {
        self.state.is_none() && self.instances.is_empty() && self.removed.is_empty()
    }
}

fn owner_key(prefix: &str, group: &str) -> String {
    format!("{}owner", keys::group(prefix, group))
}

fn state_key(prefix: &str, group: &str) -> String {
    format!("{}state", keys::group(prefix, group))
}

fn instance_key(prefix: &str, group: &str, id: &str) -> String {
    format!("{}instances/{id}", keys::group(prefix, group))
}

fn report_key(prefix: &str, group: &str, id: &str) -> String {
    format!("{}reports/{id}", keys::group(prefix, group))
}

fn load_key(prefix: &str, group: &str, node: &str) -> String {
    format!("{}load/{node}", keys::group(prefix, group))
}

fn desired_key(prefix: &str, group: &str) -> String {
    format!("{}requests/desired", keys::group(prefix, group))
}

fn refresh_key(prefix: &str, group: &str) -> String {
    format!("{}requests/refresh", keys::group(prefix, group))
}

fn wake_key(prefix: &str, group: &str) -> String {
    format!("{}requests/wake", keys::group(prefix, group))
}

fn protect_key(prefix: &str, group: &str, id: &str) -> String {
    format!("{}requests/protect/{id}", keys::group(prefix, group))
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// The keys an imported group is written as.
pub(crate) fn import_puts(prefix: &str, group: &crate::ImportedGroup) -> Vec<(String, Vec<u8>)> {
    std::iter::once((state_key(prefix, &group.name), json(&group.state)))
        .chain(
            group
                .instances
                .iter()
                .map(|r| (instance_key(prefix, &group.name, &r.id), json(r))),
        )
        .collect()
}

impl Store {
    /// Everything of `group` at one revision.
    pub async fn group(&self, group: &str) -> Result<GroupView, FleetError> {
        let range = keys::group(self.prefix(), group);
        let resp = self.range(&range).await?;
        let mut view = GroupView::default();
        for kv in resp.kvs() {
            let Some(rest) = kv.key().strip_prefix(range.as_bytes()) else {
                continue;
            };
            let rest = String::from_utf8_lossy(rest);
            let corrupt = |e: serde_json::Error| FleetError::Corrupt {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                message: e.to_string(),
            };
            let value = kv.value();
            match rest.split_once('/') {
                None if rest == "owner" => {
                    let owner: OwnerValue = serde_json::from_slice(value).map_err(corrupt)?;
                    view.owner = Some(Owner {
                        node: owner.node,
                        since: kv.create_revision(),
                        lease: kv.lease(),
                    });
                }
                None if rest == "state" => {
                    view.state = Some(serde_json::from_slice(value).map_err(corrupt)?);
                }
                Some(("instances", _)) => {
                    view.instances
                        .push(serde_json::from_slice(value).map_err(corrupt)?);
                }
                Some(("reports", id)) => {
                    view.reports.insert(
                        id.to_string(),
                        serde_json::from_slice(value).map_err(corrupt)?,
                    );
                }
                Some(("load", node)) => {
                    view.loads.insert(
                        node.to_string(),
                        serde_json::from_slice(value).map_err(corrupt)?,
                    );
                }
                Some(("requests", "desired")) => {
                    let d: DesiredValue = serde_json::from_slice(value).map_err(corrupt)?;
                    view.desired_request = Some((d.desired, kv.mod_revision()));
                }
                Some(("requests", "refresh")) => {
                    let r: RefreshRequest = serde_json::from_slice(value).map_err(corrupt)?;
                    view.refresh_request = Some((r, kv.mod_revision()));
                }
                Some(("requests", "wake")) => {
                    let w: WakeValue = serde_json::from_slice(value).map_err(corrupt)?;
                    view.wake_request = Some((w.node, kv.mod_revision()));
                }
                Some(("requests", protect)) => {
                    if let Some(id) = protect.strip_prefix("protect/") {
                        let p: ProtectValue = serde_json::from_slice(value).map_err(corrupt)?;
                        view.protect_requests.push((
                            id.to_string(),
                            p.protected,
                            kv.mod_revision(),
                        ));
                    }
                }
                _ => {}
            }
        }
        view.instances.sort_by_key(|i| i.launched_at_ms);
        Ok(view)
    }

    /// Tries to become `group`'s owner under `lease`; `Some(since)` when this node now owns it, `None`
    /// when another node does.
    pub async fn campaign(
        &self,
        group: &str,
        node: &str,
        lease: i64,
    ) -> Result<Option<i64>, FleetError> {
        let key = owner_key(self.prefix(), group);
        let value = json(&OwnerValue {
            node: node.to_string(),
        });
        let resp = self
            .on_a_member(|mut client| {
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key.clone(),
                        value.clone(),
                        Some(PutOptions::new().with_lease(lease)),
                    )]);
                async move { client.txn(txn).await }
            })
            .await?;
        Ok(resp
            .succeeded()
            .then(|| resp.header().map_or(0, |h| h.revision())))
    }

    /// The owner's write, applied only while its ownership (the owner key created at `since`) still
    /// stands: once its lease has expired, or the key was taken over, nothing is written. Returns whether
    /// it was.
    pub async fn owner_write(
        &self,
        group: &str,
        since: i64,
        write: &OwnerWrite,
    ) -> Result<bool, FleetError> {
        let prefix = self.prefix();
        let mut ops = Vec::new();
        if let Some(state) = &write.state {
            ops.push(TxnOp::put(state_key(prefix, group), json(state), None));
        }
        for record in &write.instances {
            ops.push(TxnOp::put(
                instance_key(prefix, group, &record.id),
                json(record),
                None,
            ));
        }
        for id in &write.removed {
            ops.push(TxnOp::delete(instance_key(prefix, group, id), None));
            ops.push(TxnOp::delete(report_key(prefix, group, id), None));
        }
        self.fenced(group, since, ops).await
    }

    /// Removes everything of `group` (it left the configuration), ownership included; fenced like every
    /// owner write.
    pub async fn retire_group(&self, group: &str, since: i64) -> Result<bool, FleetError> {
        let range = keys::group(self.prefix(), group);
        let ops = vec![TxnOp::delete(
            range,
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )];
        self.fenced(group, since, ops).await
    }

    async fn fenced(&self, group: &str, since: i64, ops: Vec<TxnOp>) -> Result<bool, FleetError> {
        let owner = owner_key(self.prefix(), group);
        let resp = self
            .on_a_member(|mut client| {
                let txn = Txn::new()
                    .when([Compare::create_revision(
                        owner.clone(),
                        CompareOp::Equal,
                        since,
                    )])
                    .and_then(ops.clone());
                async move { client.txn(txn).await }
            })
            .await?;
        Ok(resp.succeeded())
    }

    /// What this node says about an instance it runs, under its lease.
    pub async fn report(
        &self,
        group: &str,
        id: &str,
        report: &Report,
        lease: i64,
    ) -> Result<(), FleetError> {
        self.put_leased(report_key(self.prefix(), group, id), json(report), lease)
            .await
    }

    /// This node's request counters for the group, under its lease.
    pub async fn publish_load(
        &self,
        group: &str,
        node: &str,
        load: &NodeLoad,
        lease: i64,
    ) -> Result<(), FleetError> {
        self.put_leased(load_key(self.prefix(), group, node), json(load), lease)
            .await
    }

    async fn put_leased(&self, key: String, value: Vec<u8>, lease: i64) -> Result<(), FleetError> {
        self.on_a_member(|mut client| {
            let (key, value) = (key.clone(), value.clone());
            async move {
                client
                    .put(key, value, Some(PutOptions::new().with_lease(lease)))
                    .await
            }
        })
        .await?;
        Ok(())
    }

    /// An operator's desired capacity for the group, for its owner to apply.
    pub async fn request_desired(&self, group: &str, desired: u32) -> Result<(), FleetError> {
        let key = desired_key(self.prefix(), group);
        let value = json(&DesiredValue { desired });
        self.on_a_member(|mut client| {
            let (key, value) = (key.clone(), value.clone());
            async move { client.put(key, value, None).await }
        })
        .await?;
        Ok(())
    }

    /// An operator's instance refresh request (start or cancel), for the group's owner to apply.
    pub async fn request_refresh(
        &self,
        group: &str,
        request: &RefreshRequest,
    ) -> Result<(), FleetError> {
        let key = refresh_key(self.prefix(), group);
        let value = json(request);
        self.on_a_member(|mut client| {
            let (key, value) = (key.clone(), value.clone());
            async move { client.put(key, value, None).await }
        })
        .await?;
        Ok(())
    }

    /// A request is waiting at `node` for a group that scaled to zero: the owner wakes it.
    pub async fn request_wake(&self, group: &str, node: &str) -> Result<(), FleetError> {
        let key = wake_key(self.prefix(), group);
        let value = json(&WakeValue {
            node: node.to_string(),
        });
        self.on_a_member(|mut client| {
            let (key, value) = (key.clone(), value.clone());
            async move { client.put(key, value, None).await }
        })
        .await?;
        Ok(())
    }

    /// An operator's protection (or not) of an instance from scale-in, for the group's owner to apply.
    pub async fn request_protect(
        &self,
        group: &str,
        id: &str,
        protected: bool,
    ) -> Result<(), FleetError> {
        let key = protect_key(self.prefix(), group, id);
        let value = json(&ProtectValue { protected });
        self.on_a_member(|mut client| {
            let (key, value) = (key.clone(), value.clone());
            async move { client.put(key, value, None).await }
        })
        .await?;
        Ok(())
    }

    /// Each scaling group's owner, by group.
    pub async fn owners(&self) -> Result<BTreeMap<String, String>, FleetError> {
        let range = keys::scaling(self.prefix());
        let resp = self.range(&range).await?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let rest = kv.key().strip_prefix(range.as_bytes())?;
                let group = std::str::from_utf8(rest.strip_suffix(b"/owner")?).ok()?;
                let owner: OwnerValue = serde_json::from_slice(kv.value()).ok()?;
                Some((group.to_string(), owner.node))
            })
            .collect())
    }
}
