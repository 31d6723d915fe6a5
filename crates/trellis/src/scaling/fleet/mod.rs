//! Scaling groups in fleet mode: one task per group on every node. Each reads the group's keys every
//! round; the node that wins the group's election (the owner) decides capacity and places instances;
//! every node runs the instances placed on it, reports on them, publishes its request counters, and
//! routes to every instance of the fleet that is not leaving.
//!
//! The owner acts only while its lease was renewed within two thirds of its TTL, so it stops before the
//! lease can expire and another node can take over; and every one of its writes is a transaction on its
//! ownership, so an owner that lost the group cannot write what the next one does not expect.

mod owner;
mod runner;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::mpsc;
use trellis_config::{Launch, ScalingGroup};
use trellis_fleet::{GroupView, InstanceRecord, Report};
use trellis_scaler::CommandProvider;

use super::{Command, GroupHandle, Refused, ScalingMetrics};
use crate::daemon::Daemon;
use crate::store::FleetState;
use owner::Owner;
use runner::Runner;

/// Requests held for a group at zero ask the owner to wake it at most this often (from each node).
const WAKE_EVERY: Duration = Duration::from_secs(1);

/// How often a group's keys are read and acted on.
const ROUND: Duration = Duration::from_millis(300);
/// How often each node publishes its request counters.
const LOAD_EVERY: Duration = Duration::from_secs(1);

/// What the scaling groups of a fleet node share: the store, who this node is, its lease.
#[derive(Clone)]
pub struct FleetScaling {
    pub store: trellis_fleet::Store,
    pub node: String,
    /// Where this node's instances listen (its `bind`, else loopback).
    pub host: IpAddr,
    pub lease: trellis_fleet::Lease,
    pub ttl: Duration,
    pub state: Arc<FleetState>,
}

pub(super) fn spawn(
    daemon: &Arc<Daemon>,
    fleet: &FleetScaling,
    metrics: &ScalingMetrics,
    group: &ScalingGroup,
    status: Arc<GroupHandle>,
    inbox: mpsc::UnboundedReceiver<Command>,
) {
    let task = FleetGroup {
        runner: Runner::new(group, &fleet.node, fleet.host),
        hooks: hooks(group),
        retry_terminate: HashMap::new(),
        fleet: fleet.clone(),
        daemon: Arc::downgrade(daemon),
        group: group.clone(),
        inbox,
        status,
        metrics: metrics.clone(),
        owner: None,
        view: GroupView::default(),
        read: false,
        routed: None,
        load_at: None,
        retiring: false,
        woke_at: None,
    };
    tokio::spawn(task.run());
}

/// The command provider's hooks: run by the owner, whichever node that is.
fn hooks(group: &ScalingGroup) -> Option<CommandProvider> {
    match &group.launch {
        Launch::Command(hooks) => Some(CommandProvider::new(hooks.clone(), &group.name)),
        Launch::Process(_) => None,
    }
}

struct FleetGroup {
    fleet: FleetScaling,
    hooks: Option<CommandProvider>,
    /// Machines whose terminate hook failed, and when to try again.
    retry_terminate: HashMap<String, Instant>,
    daemon: Weak<Daemon>,
    group: ScalingGroup,
    inbox: mpsc::UnboundedReceiver<Command>,
    status: Arc<GroupHandle>,
    metrics: ScalingMetrics,
    runner: Runner,
    /// While this node owns the group.
    owner: Option<Owner>,
    /// The group's keys as last read.
    view: GroupView,
    /// Whether they could be read at all yet.
    read: bool,
    /// The members last given to the target group.
    routed: Option<Vec<SocketAddr>>,
    load_at: Option<Instant>,
    /// Removed from the configuration: every instance stops, then the task.
    retiring: bool,
    /// When this node last asked the owner to wake the group.
    woke_at: Option<Instant>,
}

impl FleetGroup {
    async fn run(mut self) {
        loop {
            let Some(daemon) = self.daemon.upgrade() else {
                return;
            };
            self.answer().await;
            match self.fleet.store.group(&self.group.name).await {
                Ok(view) => {
                    self.view = view;
                    self.read = true;
                }
                Err(e) => {
                    tracing::debug!(scaling_group = %self.group.name, error = %e, "fleet: cannot read the group");
                }
            }
            self.ownership().await;
            self.own(&daemon).await;
            let records = self.records();
            if self.read {
                self.runner
                    .step(&self.group, &records, self.retiring, &daemon)
                    .await;
                self.report(&records, &daemon).await;
            }
            self.route(&records, &daemon).await;
            self.publish(&records, &daemon);
            let machines_left = self.owner.as_ref().is_some_and(|o| !o.records().is_empty());
            if self.retiring && self.runner.is_empty() && !machines_left {
                if let Some(owner) = &self.owner {
                    let _ = self
                        .fleet
                        .store
                        .retire_group(&self.group.name, owner.since)
                        .await;
                }
                self.fleet.state.set_owner(&self.group.name, None);
                tracing::info!(scaling_group = %self.group.name, "removed from the configuration: this node's instances stopped");
                return;
            }
            drop(daemon);
            tokio::time::sleep(ROUND).await;
        }
    }

    /// The instance records as the owner has them (when this node is the owner), else as read.
    fn records(&self) -> Vec<InstanceRecord> {
        match &self.owner {
            Some(owner) => owner.records().to_vec(),
            None => self.view.instances.clone(),
        }
    }

    /// Operators' requests go to the store, for the owner to apply (wherever it runs); settings from a
    /// reload apply here.
    async fn answer(&mut self) {
        while let Ok(command) = self.inbox.try_recv() {
            match command {
                Command::SetDesired(desired, reply) => {
                    let (min, max) = (self.group.min, self.group.max);
                    let outcome = self
                        .fleet
                        .store
                        .request_desired(&self.group.name, desired)
                        .await
                        .map(|()| (min, desired.clamp(min, max.max(min)), max))
                        .map_err(|e| Refused::Unavailable(e.to_string()));
                    let _ = reply.send(outcome);
                }
                Command::Protect(id, protected, reply) => {
                    let known = self.records().iter().any(|r| r.id == id);
                    let outcome = if known {
                        self.fleet
                            .store
                            .request_protect(&self.group.name, &id, protected)
                            .await
                            .map(|()| true)
                            .map_err(|e| Refused::Unavailable(e.to_string()))
                    } else {
                        Ok(false)
                    };
                    let _ = reply.send(outcome);
                }
                Command::Reconfigure(group) => {
                    if let Some(owner) = self.owner.as_mut() {
                        owner.reconfigure(&self.group, &group, &self.metrics);
                    }
                    if group.launch != self.group.launch
                        || group.lifecycle_hooks != self.group.lifecycle_hooks
                    {
                        self.runner.reconfigure(&group);
                        self.hooks = hooks(&group);
                    }
                    self.group = *group;
                }
                Command::Retire => self.retiring = true,
                Command::Wake => self.wake().await,
                Command::StartRefresh(overrides, reply) => {
                    let _ = reply.send(self.start_refresh(overrides).await);
                }
                Command::CancelRefresh(reply) => {
                    let _ = reply.send(self.cancel_refresh().await);
                }
            }
        }
    }

    /// The latest refresh as this node knows it (the owner's, or the stored state's).
    fn latest_refresh(&self) -> Option<trellis_fleet::RefreshRecord> {
        match &self.owner {
            Some(owner) => owner.refresh_record(),
            None => self.view.state.as_ref().and_then(|s| s.refresh.clone()),
        }
    }

    /// `POST …/refresh` at this node: written to the store for the owner, which starts it.
    async fn start_refresh(
        &mut self,
        overrides: super::RefreshOverrides,
    ) -> Result<Value, Refused> {
        let latest = self.latest_refresh();
        if let Some(r) = latest.as_ref().filter(|r| r.in_progress()) {
            return Err(Refused::Conflict(format!(
                "refresh {} is {}; cancel it first (DELETE)",
                r.id, r.status
            )));
        }
        if overrides.auto_rollback == Some(true) {
            return Err(Refused::Invalid(
                "auto_rollback: a fleet does not roll back (its nodes know only the current launch)".into(),
            ));
        }
        let settings = overrides
            .apply(self.group.instance_refresh)
            .map_err(Refused::Invalid)?;
        let request = trellis_fleet::RefreshRequest {
            cancel: false,
            min_healthy_percent: Some(settings.min_healthy_percent),
            max_healthy_percent: Some(settings.max_healthy_percent),
        };
        self.fleet
            .store
            .request_refresh(&self.group.name, &request)
            .await
            .map_err(|e| Refused::Unavailable(e.to_string()))?;
        // The owner numbers it next, in the order of the requests.
        let id = latest.map_or(1, |r| r.id + 1);
        Ok(json!({
            "id": id,
            "status": "pending",
            "percentage_complete": 0,
            "reason": "",
            "cause": "requested through the API",
            "rolling_back": false,
            "min_healthy_percent": settings.min_healthy_percent,
            "max_healthy_percent": settings.max_healthy_percent,
            "auto_rollback": false,
            "skipped_protected": [],
        }))
    }

    /// `DELETE …/refresh` at this node: written to the store for the owner, which stops it.
    async fn cancel_refresh(&mut self) -> Result<Value, Refused> {
        let Some(latest) = self.latest_refresh() else {
            return Err(Refused::Conflict("no instance refresh has run".into()));
        };
        if !latest.in_progress() {
            return Err(Refused::Conflict(format!(
                "refresh {} is already {}",
                latest.id, latest.status
            )));
        }
        let request = trellis_fleet::RefreshRequest {
            cancel: true,
            ..Default::default()
        };
        self.fleet
            .store
            .request_refresh(&self.group.name, &request)
            .await
            .map_err(|e| Refused::Unavailable(e.to_string()))?;
        let mut view = refresh_view(&latest);
        view["status"] = json!("cancelled");
        view["reason"] = json!("cancelled by an operator");
        Ok(view)
    }

    /// A request waits here for the group (nothing serves it: scaled to zero, or its instances are not
    /// up): the owner, whichever node it is, is told through the store, at most once a `WAKE_EVERY`. It
    /// wakes a group at zero, and a waiting request counts as one against `idle` either way.
    async fn wake(&mut self) {
        let recent = self.woke_at.is_some_and(|at| at.elapsed() < WAKE_EVERY);
        if recent || self.retiring {
            return;
        }
        self.woke_at = Some(Instant::now());
        if let Err(e) = self
            .fleet
            .store
            .request_wake(&self.group.name, &self.fleet.node)
            .await
        {
            tracing::warn!(scaling_group = %self.group.name, error = %e, "cannot ask the owner to wake the group");
        }
    }

    /// Campaigns when the group has no owner; takes over (from the stored state) once it is the owner;
    /// lets go when another node owns it or its own lease is not fresh.
    async fn ownership(&mut self) {
        let lease = self.fleet.lease.fresh(self.fleet.ttl * 2 / 3);
        let name = self.group.name.clone();
        match (&self.view.owner, lease) {
            (_, None) => self.let_go("this node's lease is not renewed"),
            (None, Some(lease)) if self.read && !self.retiring => {
                match self
                    .fleet
                    .store
                    .campaign(&name, &self.fleet.node, lease)
                    .await
                {
                    Ok(Some(since)) => {
                        self.owner = Some(Owner::take_over(
                            &self.group,
                            (since, self.settle()),
                            &self.fleet.node,
                            &self.view,
                            &self.metrics,
                        ));
                        self.view.owner = Some(trellis_fleet::Owner {
                            node: self.fleet.node.clone(),
                            since,
                            lease,
                        });
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(scaling_group = %name, error = %e, "fleet: campaign failed")
                    }
                }
            }
            (Some(o), Some(lease)) if o.node == self.fleet.node && o.lease == lease => {
                if self.owner.as_ref().is_none_or(|own| own.since != o.since) {
                    self.owner = Some(Owner::take_over(
                        &self.group,
                        (o.since, self.settle()),
                        &self.fleet.node,
                        &self.view,
                        &self.metrics,
                    ));
                }
            }
            (Some(o), _) => {
                let other = o.node.clone();
                if self.owner.is_some() {
                    self.let_go(&format!("node {other} owns the group now"));
                }
            }
            (None, _) => {}
        }
        let owner = self.view.owner.as_ref().map(|o| o.node.as_str());
        self.fleet.state.set_owner(&name, owner);
    }

    /// How long a new owner waits before it takes an absent node for dead: the other nodes retry a
    /// failed heartbeat every second, so after an etcd outage they are all back well within this.
    fn settle(&self) -> Duration {
        (self.fleet.ttl / 2).min(Duration::from_secs(3))
    }

    fn let_go(&mut self, why: &str) {
        if self.owner.take().is_some() {
            tracing::warn!(scaling_group = %self.group.name, "fleet: no longer acting as the group's owner: {why}");
        }
    }

    /// The owner's round, written with one fenced transaction.
    async fn own(&mut self, daemon: &Daemon) {
        if !self.read {
            return;
        }
        let Some(owner) = self.owner.as_mut() else {
            return;
        };
        if self.retiring {
            owner.terminate_all();
        } else {
            let nodes = match self.fleet.store.nodes().await {
                Ok(nodes) => nodes,
                Err(e) => {
                    tracing::debug!(scaling_group = %self.group.name, error = %e, "fleet: cannot list nodes");
                    return;
                }
            };
            let view = with_own_reports(
                &self.view,
                owner.records(),
                &self.group,
                daemon,
                &self.fleet.node,
            );
            owner.step(&self.group, &view, &nodes, &self.metrics);
        }
        if let Some(hooks) = &self.hooks {
            for id in owner.take_launches() {
                match hooks.launch(&id).await {
                    Ok(machine) => owner.launched_machine(
                        &self.group,
                        &id,
                        (machine.id, machine.address),
                        &self.metrics,
                    ),
                    Err(e) => {
                        owner.launch_failed(&self.group, &id, &e, &self.metrics);
                        break;
                    }
                }
            }
            terminate_machines(
                owner,
                hooks,
                &self.group,
                daemon,
                &mut self.retry_terminate,
                &self.metrics,
            )
            .await;
        }
        let write = owner.write();
        if write.is_empty() {
            return;
        }
        match self
            .fleet
            .store
            .owner_write(&self.group.name, owner.since, &write)
            .await
        {
            Ok(true) => owner.written(write),
            Ok(false) => self.let_go("its ownership was lost (the fenced write was refused)"),
            // Kept and written with the next round, while the lease holds.
            Err(e) => {
                tracing::debug!(scaling_group = %self.group.name, error = %e, "fleet: owner write failed")
            }
        }
    }

    /// This node's reports on its instances, and its request counters, under its lease.
    async fn report(&mut self, records: &[InstanceRecord], daemon: &Daemon) {
        let Some(lease) = self.fleet.lease.fresh(self.fleet.ttl) else {
            return;
        };
        let load_due = self.load_at.is_none_or(|at| at.elapsed() >= LOAD_EVERY);
        for (id, report) in self.runner.reports(load_due) {
            match self
                .fleet
                .store
                .report(&self.group.name, &id, &report, lease)
                .await
            {
                Ok(()) => self.runner.published(&id, report),
                Err(_) => return,
            }
        }
        if load_due {
            let load = Runner::load(&self.group, records, daemon);
            let published = self
                .fleet
                .store
                .publish_load(&self.group.name, &self.fleet.node, &load, lease)
                .await;
            if published.is_ok() {
                self.load_at = Some(Instant::now());
            }
        }
    }

    /// Every instance of the fleet that is not leaving is a member of the target group here.
    async fn route(&mut self, records: &[InstanceRecord], daemon: &Arc<Daemon>) {
        if !self.read {
            return;
        }
        let members: Vec<SocketAddr> = if self.retiring {
            Vec::new()
        } else {
            // With launching hooks, an instance joins once its node says they continued.
            let hooked = self
                .group
                .lifecycle_hooks
                .iter()
                .any(|h| h.transition == trellis_config::HookTransition::Launching);
            records
                .iter()
                .filter(|r| !r.terminating && !r.warm)
                .filter(|r| {
                    !hooked
                        || r.admitted
                        || self.view.reports.get(&r.id).is_some_and(|rep| rep.admitted)
                })
                .map(|r| r.address)
                .collect()
        };
        if self.routed.as_ref() == Some(&members) {
            return;
        }
        match daemon
            .set_scaled(&self.group.target_group, members.clone())
            .await
        {
            Ok(()) => self.routed = Some(members),
            Err(e) => {
                tracing::error!(scaling_group = %self.group.name, error = %e, "cannot update the target group")
            }
        }
    }

    /// What `/v1/status` shows of the group on this node, and the capacity gauges.
    fn publish(&self, records: &[InstanceRecord], daemon: &Daemon) {
        let state = self.view.state.as_ref();
        let (min, desired, max) = match &self.owner {
            Some(owner) => owner.desired(),
            None => state.map_or((self.group.min, self.group.desired, self.group.max), |s| {
                (s.min, s.desired, s.max)
            }),
        };
        let lifecycle = |r: &InstanceRecord| {
            if r.terminating {
                "terminating"
            } else if r.warm {
                "warmed"
            } else if r.in_service_at_ms.is_some() {
                "in_service"
            } else {
                "pending"
            }
        };
        let count = |s: &str| records.iter().filter(|r| lifecycle(r) == s).count();
        let gauge = |state: &str, n: usize| {
            self.metrics
                .instances
                .with_label_values(&[&self.group.name, state])
                .set(n as i64)
        };
        self.metrics
            .set_bounds(&self.group.name, (min, desired, max));
        gauge("in_service", count("in_service"));
        gauge("pending", count("pending"));
        gauge("terminating", count("terminating"));
        gauge("warmed", count("warmed"));
        let (now, now_ms) = (Instant::now(), owner::now_ms());
        let activities = match &self.owner {
            Some(owner) => owner.activities().to_vec(),
            None => state.map(|s| s.activities.clone()).unwrap_or_default(),
        };
        let backoff = self.owner.as_ref().map(|o| o.backoff());
        let refresh = match &self.owner {
            Some(owner) => owner.refresh_record(),
            None => state.and_then(|s| s.refresh.clone()),
        };
        self.status.set(json!({
            "instance_refresh": refresh.as_ref().map(refresh_view),
            "name": self.group.name,
            "target_group": self.group.target_group,
            "owner": self.view.owner.as_ref().map(|o| o.node.clone()),
            "min": min,
            "desired": desired,
            "max": max,
            "in_service": count("in_service"),
            "pending": count("pending"),
            "terminating": count("terminating"),
            "warm_pool": self.group.warm_pool.map(|pool| json!({
                "size": pool.size,
                "reuse_on_scale_in": false,
                "warmed": count("warmed"),
                "ready": records.iter().filter(|r| {
                    r.warm && !r.terminating && self.view.reports.get(&r.id).is_some_and(|rep| rep.warm_ready)
                }).count(),
            })),
            "scheduled": Vec::<Value>::new(),
            "launch_backoff": {
                "failures": backoff.map_or(0, |b| b.failures()),
                "next_launch_in_seconds": backoff.and_then(|b| b.until()).map(|u| u.saturating_duration_since(Instant::now()).as_secs_f64()),
            },
            "instances": records.iter().map(|r| json!({
                "id": r.id,
                "node": r.node,
                "address": r.address.to_string(),
                "lifecycle": lifecycle(r),
                "health": daemon
                    .targets
                    .get(&self.group.target_group, r.address)
                    .map(|t| t.view().health.state.as_str()),
                "pid": self.runner.pid(&r.id),
                "provider_id": r.provider_id,
                "age_seconds": now_ms.saturating_sub(r.launched_at_ms) as f64 / 1000.0,
                "warming": owner::instance_of(r, now_ms, now).warming(self.group.instance_warmup, now),
                "protected": r.protected,
            })).collect::<Vec<_>>(),
            // Newest first, as on a single node.
            "activities": activities.iter().rev().map(|a| json!({
                "at": humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(a.at)).to_string(),
                "kind": a.kind,
                "description": a.description,
                "node": a.node,
            })).collect::<Vec<_>>(),
        }));
    }
}

/// The command provider's machines run on no node, so no node reports on them: the owner reports their
/// health itself, as its own checks see it (every node checks every target).
fn with_own_reports(
    view: &GroupView,
    records: &[InstanceRecord],
    group: &ScalingGroup,
    daemon: &Daemon,
    node: &str,
) -> GroupView {
    let mut view = view.clone();
    for r in records.iter().filter(|r| r.provider_id.is_some()) {
        let health = daemon
            .targets
            .get(&group.target_group, r.address)
            .map(|t| t.view().health.state.as_str().to_string());
        view.reports.insert(
            r.id.clone(),
            Report {
                node: node.to_string(),
                pid: None,
                health,
                exited: None,
                stopped: false,
                cpu_ticks: None,
                admitted: true,
                warm_ready: false,
            },
        );
    }
    view
}

/// The owner stops each leaving machine with the terminate hook once it has drained here.
async fn terminate_machines(
    owner: &mut Owner,
    hooks: &CommandProvider,
    group: &ScalingGroup,
    daemon: &Daemon,
    retry: &mut HashMap<String, Instant>,
    metrics: &ScalingMetrics,
) {
    let leaving: Vec<(String, String, SocketAddr)> = owner
        .records()
        .iter()
        .filter(|r| r.terminating)
        .filter_map(|r| Some((r.id.clone(), r.provider_id.clone()?, r.address)))
        .collect();
    let now = Instant::now();
    for (id, machine, address) in leaving {
        if retry.get(&id).is_some_and(|at| now < *at) {
            continue;
        }
        if daemon.routes_or_drains(&group.target_group, address) {
            continue;
        }
        match hooks.terminate(&machine).await {
            Ok(()) => {
                retry.remove(&id);
                let how = format!("terminate hook done for {machine}");
                owner.machine_terminated(group, &id, how, metrics);
            }
            Err(e) => {
                retry.insert(id.clone(), now + Duration::from_secs(5));
                owner.machine_terminate_failed(group, &id, &e, metrics);
            }
        }
    }
}

/// A refresh record as `/v1/status` and `GET …/refresh` show it (the shape a single node's has).
fn refresh_view(r: &trellis_fleet::RefreshRecord) -> Value {
    let at = |ms: u64| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms))
            .to_string()
    };
    json!({
        "id": r.id,
        "status": r.status,
        "percentage_complete": r.percentage_complete,
        "reason": r.reason,
        "cause": r.cause,
        "rolling_back": false,
        "started_at": at(r.started_at_ms),
        "ended_at": r.ended_at_ms.map(at),
        "min_healthy_percent": r.min_healthy_percent,
        "max_healthy_percent": r.max_healthy_percent,
        "auto_rollback": false,
        "skipped_protected": r.skipped_protected,
    })
}
