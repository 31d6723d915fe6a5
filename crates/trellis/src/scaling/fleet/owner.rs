//! What the owner of a scaling group does in a fleet: the same decisions as a single node's controller
//! (trellis-scaler's decider, lifecycle and back-off), taken from the fleet's reports and request
//! counters, and written to etcd as instance records that each node runs.
//!
//! Everything a next owner needs is in what [`Owner::write`] hands out: desired, the cooldown's start,
//! the next instance number, the requests applied, the activities and the records.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use trellis_config::{Launch, ScalingGroup, TerminationPolicy};
use trellis_fleet::{
    ActivityRecord, GroupState, GroupView, InstanceRecord, NodeInfo, OwnerWrite, Report,
};
use trellis_scaler::{renewal, Backoff, Decider, Instance, Lifecycle, Renewal, Replace, Scheduler};
use trellis_targets::TargetState;

use super::super::{
    fire_scheduled, idle_to_zero, launch_identity, scheduler, wake, ScalingMetrics, Tally, Zero,
    ACTIVITIES,
};

mod refresh;
pub use refresh::tag_launch;

/// An instance that never reports (its node took the record but nothing came back) is replaced after
/// its grace period, and never sooner than this.
const REPORT_DEADLINE: Duration = Duration::from_secs(30);

pub(super) struct Owner {
    /// The ownership's fence (the owner key's create revision).
    pub since: i64,
    node: String,
    /// When this node took the group over, and how long after that an absent node is taken for
    /// dead: after an etcd outage every lease expired together, and the other nodes need a moment to
    /// put their keys back.
    took_over: Instant,
    settle: Duration,
    /// Since when each instance without a report has been seen without one (reports live under their
    /// node's lease, so they vanish for a moment when it is renewed late).
    unreported: HashMap<String, Instant>,
    decider: Decider,
    backoff: Backoff,
    scheduler: Option<Scheduler>,
    next_id: u64,
    requests_applied: i64,
    activities: Vec<ActivityRecord>,
    records: Vec<InstanceRecord>,
    /// Records changed or removed since the last write that went through.
    changed: BTreeSet<String>,
    removed: BTreeSet<String>,
    written: Option<GroupState>,
    /// Each node's completed-request counter per instance address at the last evaluation.
    last_completed: HashMap<(String, String), u64>,
    /// Each instance's CPU ticks at the last evaluation.
    last_cpu: HashMap<String, u64>,
    next_evaluation: Instant,
    last_evaluation: Instant,
    protection_noted: bool,
    /// When the fleet last had a request for the group (or a wake): scale to zero counts from here. A
    /// new owner starts counting when it takes over.
    last_request: Instant,
    /// The tag new records get: the launch's identity (with `#N` after an operator's refresh).
    launch: String,
    /// Warm records whose node reports them ready (as of the last round).
    ready_warm: BTreeSet<String>,
    /// The latest instance refresh.
    refresh: Option<refresh::FleetRefresh>,
    /// Command provider: instance ids to launch with the hook, taken by the group's task (hooks are
    /// slow and asynchronous; the decisions here are not).
    to_launch: Vec<String>,
}

/// Milliseconds since the Unix epoch.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The monotonic instant a wall-clock time in milliseconds corresponds to.
fn instant_at(ms: u64, now_ms: u64, now: Instant) -> Instant {
    now.checked_sub(Duration::from_millis(now_ms.saturating_sub(ms)))
        .unwrap_or(now)
}

fn ms_at(at: Instant, now_ms: u64, now: Instant) -> u64 {
    now_ms.saturating_sub(now.saturating_duration_since(at).as_millis() as u64)
}

/// A record as the scaler's lifecycle sees it: pending until its first healthy report, then in service.
pub(super) fn instance_of(record: &InstanceRecord, now_ms: u64, now: Instant) -> Instance {
    Instance {
        id: record.id.clone(),
        launched_at: instant_at(record.launched_at_ms, now_ms, now),
        state: if record.in_service_at_ms.is_some() {
            Lifecycle::InService
        } else {
            Lifecycle::Pending
        },
        in_service_at: record
            .in_service_at_ms
            .map(|ms| instant_at(ms, now_ms, now)),
        protected: record.protected,
    }
}

fn health(report: Option<&Report>) -> Option<TargetState> {
    match report?.health.as_deref()? {
        "healthy" => Some(TargetState::Healthy),
        "unhealthy" => Some(TargetState::Unhealthy),
        "unavailable" => Some(TargetState::Unavailable),
        "initial" => Some(TargetState::Initial),
        _ => None,
    }
}

impl Owner {
    /// Becomes the owner of `group` from what the store holds (nothing, the first time).
    pub fn take_over(
        group: &ScalingGroup,
        (since, settle): (i64, Duration),
        node: &str,
        view: &GroupView,
        metrics: &ScalingMetrics,
    ) -> Owner {
        let (now, now_ms) = (Instant::now(), now_ms());
        let (decider, next_id, requests_applied, activities) = match &view.state {
            // Bounds are the configuration's: a reload while another node owned the group reached
            // every node, this one included.
            Some(state) => (
                Decider::resume(
                    group,
                    state.desired,
                    (group.min, group.max),
                    state.last_activity_ms.map(|ms| instant_at(ms, now_ms, now)),
                ),
                state.next_id,
                state.requests_applied,
                state.activities.clone(),
            ),
            None => (Decider::new(group), 1, 0, Vec::new()),
        };
        let mut owner = Owner {
            since,
            node: node.to_string(),
            took_over: now,
            settle,
            unreported: HashMap::new(),
            decider,
            backoff: Backoff::default(),
            scheduler: scheduler(group),
            next_id,
            requests_applied,
            activities,
            records: view.instances.clone(),
            changed: BTreeSet::new(),
            removed: BTreeSet::new(),
            written: view.state.clone(),
            last_completed: HashMap::new(),
            last_cpu: HashMap::new(),
            next_evaluation: now + group.evaluation_period,
            last_evaluation: now,
            protection_noted: false,
            last_request: now,
            launch: launch_identity(&group.launch),
            ready_warm: BTreeSet::new(),
            refresh: None,
            to_launch: Vec::new(),
        };
        if let Some(record) = view.state.as_ref().and_then(|s| s.refresh.as_ref()) {
            owner.resume_refresh(group, record);
        }
        let previous = match &view.state {
            Some(_) => "continuing from the stored state",
            None => "a new group",
        };
        owner.activity(
            group,
            metrics,
            "owner",
            format!(
                "node {node} owns the group ({previous}: desired {})",
                owner.decider.desired()
            ),
        );
        // Instances of another launch than the configuration's (it changed while no node owned the
        // group, or the last owner died before it saw it): the refresh a reload would have started.
        let current = tag_launch(&owner.launch).to_string();
        let older = owner.records.iter().any(|r| {
            !r.terminating
                && r.launch
                    .as_deref()
                    .is_some_and(|t| tag_launch(t) != current)
        });
        let running = owner
            .refresh
            .as_ref()
            .is_some_and(|r| !r.refresh.status.is_done());
        // One to this launch that an operator cancelled, or that failed, is not started again by an
        // owner change.
        let settled = owner.refresh.as_ref().is_some_and(|r| {
            tag_launch(&r.record.target) == current
                && matches!(r.record.status.as_str(), "failed" | "cancelled")
                && r.record.reason != "stopped: the launch changed while no node owned the group"
        });
        if older && !running && !settled && group.instance_refresh.on_launch_change {
            let p = group.instance_refresh;
            owner.start_refresh(
                group,
                (p.min_healthy_percent, p.max_healthy_percent),
                "instances of an older launch found",
                false,
                metrics,
            );
        }
        owner
    }

    pub fn records(&self) -> &[InstanceRecord] {
        &self.records
    }

    pub fn desired(&self) -> (u32, u32, u32) {
        let (min, max) = self.decider.bounds();
        (min, self.decider.desired(), max)
    }

    pub fn activities(&self) -> &[ActivityRecord] {
        &self.activities
    }

    /// The latest refresh as it stands now.
    pub fn refresh_record(&self) -> Option<trellis_fleet::RefreshRecord> {
        self.refresh.as_ref().map(refresh::FleetRefresh::snapshot)
    }

    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// A reload's new settings for the group.
    pub fn reconfigure(
        &mut self,
        old: &ScalingGroup,
        group: &ScalingGroup,
        metrics: &ScalingMetrics,
    ) {
        let now = Instant::now();
        if let Some(d) = self.decider.set_bounds(group.min, group.max, now) {
            let text = format!("desired {} → {}: {}", d.from, d.to, d.cause);
            self.activity(group, metrics, "scale", text);
        }
        self.decider.reconfigure(group);
        if group.policies != old.policies {
            self.scheduler = scheduler(group);
        }
        if launch_identity(&group.launch) != launch_identity(&old.launch) {
            // Records from before tags were made by the launch that is going.
            for r in self.records.iter_mut().filter(|r| r.launch.is_none()) {
                r.launch = Some(self.launch.clone());
                self.changed.insert(r.id.clone());
            }
            self.launch = launch_identity(&group.launch);
            if group.instance_refresh.on_launch_change {
                let p = group.instance_refresh;
                self.start_refresh(
                    group,
                    (p.min_healthy_percent, p.max_healthy_percent),
                    "a reload changed launch",
                    false,
                    metrics,
                );
            } else {
                self.stop_refresh(
                    group,
                    "stopped: a reload changed launch (on_launch_change = false)",
                    metrics,
                );
            }
        }
    }

    /// One round: the operators' requests, the instances' lifecycle from their nodes' reports, the
    /// scheduled actions, an evaluation when one is due, and launches or terminations toward desired.
    pub fn step(
        &mut self,
        group: &ScalingGroup,
        view: &GroupView,
        nodes: &[NodeInfo],
        metrics: &ScalingMetrics,
    ) {
        let (now, now_ms) = (Instant::now(), now_ms());
        self.requests(group, view, now, metrics);
        self.lifecycle(group, view, nodes, now, now_ms, metrics);
        self.scheduled(group, now, metrics);
        if now >= self.next_evaluation {
            self.evaluate(group, view, now, now_ms, metrics);
            self.last_evaluation = now;
            self.next_evaluation = now + group.evaluation_period;
        }
        self.converge(group, nodes, now, now_ms, metrics);
        self.tend_pool(group, nodes, now, now_ms, metrics);
    }

    /// Command provider: the instances to launch now, by id.
    pub fn take_launches(&mut self) -> Vec<String> {
        std::mem::take(&mut self.to_launch)
    }

    /// Command provider: the launch hook made instance `id`.
    pub fn launched_machine(
        &mut self,
        group: &ScalingGroup,
        id: &str,
        (provider_id, address): (String, SocketAddr),
        metrics: &ScalingMetrics,
    ) {
        self.records.push(InstanceRecord {
            id: id.to_string(),
            node: self.node.clone(),
            provider_id: Some(provider_id.clone()),
            address,
            launched_at_ms: now_ms(),
            in_service_at_ms: None,
            protected: false,
            terminating: false,
            launch: Some(self.launch.clone()),
            admitted: false,
            warm: false,
        });
        self.changed.insert(id.to_string());
        let text = format!("instance {id} launched at {address} (id {provider_id})");
        self.activity(group, metrics, "launch", text);
    }

    /// Command provider: the launch hook failed; the next launch waits (back-off).
    pub fn launch_failed(
        &mut self,
        group: &ScalingGroup,
        id: &str,
        error: &str,
        metrics: &ScalingMetrics,
    ) {
        let wait = self.backoff.failed(Instant::now());
        let text = format!("cannot launch {id}: {error}; next try in {wait:?}");
        self.activity(group, metrics, "launch_failed", text);
    }

    /// Command provider: the terminate hook stopped instance `id`; its record goes.
    pub fn machine_terminated(
        &mut self,
        group: &ScalingGroup,
        id: &str,
        how: String,
        metrics: &ScalingMetrics,
    ) {
        self.remove(id);
        self.activity(
            group,
            metrics,
            "terminated",
            format!("instance {id} stopped: {how}"),
        );
    }

    pub fn machine_terminate_failed(
        &mut self,
        group: &ScalingGroup,
        id: &str,
        error: &str,
        metrics: &ScalingMetrics,
    ) {
        let text = format!("instance {id}: {error}; retrying in 5s");
        self.activity(group, metrics, "terminate_failed", text);
    }

    /// The group left the configuration: every instance leaves (drains, then stops).
    pub fn terminate_all(&mut self) {
        for r in &mut self.records {
            if !r.terminating {
                r.terminating = true;
                r.protected = false;
                self.changed.insert(r.id.clone());
            }
        }
    }

    /// What must be written now (nothing when etcd already holds it all).
    pub fn write(&self) -> OwnerWrite {
        let state = self.state();
        OwnerWrite {
            state: (self.written.as_ref() != Some(&state)).then_some(state),
            instances: self
                .records
                .iter()
                .filter(|r| self.changed.contains(&r.id))
                .cloned()
                .collect(),
            removed: self.removed.iter().cloned().collect(),
        }
    }

    /// `write` went through.
    pub fn written(&mut self, write: OwnerWrite) {
        if let Some(state) = write.state {
            self.written = Some(state);
        }
        for r in write.instances {
            self.changed.remove(&r.id);
        }
        for id in write.removed {
            self.removed.remove(&id);
        }
    }

    fn state(&self) -> GroupState {
        let (min, max) = self.decider.bounds();
        let (now, now_ms) = (Instant::now(), now_ms());
        GroupState {
            desired: self.decider.desired(),
            min,
            max,
            next_id: self.next_id,
            last_activity_ms: self
                .decider
                .last_activity()
                .map(|at| ms_at(at, now_ms, now)),
            requests_applied: self.requests_applied,
            activities: self.activities.clone(),
            refresh: self.refresh.as_ref().map(refresh::FleetRefresh::snapshot),
        }
    }

    fn activity(
        &mut self,
        group: &ScalingGroup,
        metrics: &ScalingMetrics,
        kind: &'static str,
        text: String,
    ) {
        tracing::info!(scaling_group = %group.name, activity = kind, owner = %self.node, "{text}");
        metrics
            .activities
            .with_label_values(&[&group.name, kind])
            .inc();
        self.activities.push(ActivityRecord {
            at: trellis_fleet::now(),
            kind: kind.to_string(),
            description: text,
            node: self.node.clone(),
        });
        let excess = self.activities.len().saturating_sub(ACTIVITIES);
        self.activities.drain(..excess);
    }

    fn requests(
        &mut self,
        group: &ScalingGroup,
        view: &GroupView,
        now: Instant,
        metrics: &ScalingMetrics,
    ) {
        let mut newest = self.requests_applied;
        if let Some((desired, revision)) = view.desired_request {
            if revision > self.requests_applied {
                newest = newest.max(revision);
                if let Some(d) = self.decider.set_desired(desired, now, "set by an operator") {
                    let text = format!("desired {} → {}: {}", d.from, d.to, d.cause);
                    self.activity(group, metrics, "scale", text);
                }
            }
        }
        if let Some((node, revision)) = &view.wake_request {
            if *revision > self.requests_applied {
                newest = newest.max(*revision);
                self.last_request = now;
                let cause = format!("a request is waiting at node {node}");
                if let Some(text) = wake(&mut self.decider, now, &cause) {
                    self.activity(group, metrics, "wake", text);
                }
            }
        }
        if let Some((request, revision)) = &view.refresh_request {
            if *revision > self.requests_applied {
                newest = newest.max(*revision);
                let running = self
                    .refresh
                    .as_ref()
                    .filter(|r| !r.refresh.status.is_done())
                    .map(|r| r.record.id);
                match (request.cancel, running) {
                    (true, Some(_)) => {
                        self.stop_refresh(group, "cancelled by an operator", metrics)
                    }
                    (true, None) => {}
                    (false, Some(id)) => {
                        let text =
                            format!("a refresh request was ignored: refresh {id} is in progress");
                        self.activity(group, metrics, "refresh", text);
                    }
                    (false, None) => {
                        let p = group.instance_refresh;
                        self.start_refresh(
                            group,
                            (
                                request.min_healthy_percent.unwrap_or(p.min_healthy_percent),
                                request.max_healthy_percent.unwrap_or(p.max_healthy_percent),
                            ),
                            "requested through the API",
                            true,
                            metrics,
                        );
                    }
                }
            }
        }
        for (id, protected, revision) in &view.protect_requests {
            if *revision <= self.requests_applied {
                continue;
            }
            newest = newest.max(*revision);
            if let Some(r) = self.records.iter_mut().find(|r| &r.id == id) {
                r.protected = *protected;
                self.changed.insert(id.clone());
            }
        }
        self.requests_applied = newest;
    }

    fn remove(&mut self, id: &str) {
        self.records.retain(|r| r.id != id);
        self.changed.remove(id);
        self.removed.insert(id.to_string());
    }

    /// Follows each instance through its node's reports: in service on its first healthy check,
    /// replaced when it exits, stays unhealthy past the grace period, or its node is gone; a terminating
    /// one is forgotten once its node has stopped it.
    fn lifecycle(
        &mut self,
        group: &ScalingGroup,
        view: &GroupView,
        nodes: &[NodeInfo],
        now: Instant,
        now_ms: u64,
        metrics: &ScalingMetrics,
    ) {
        let settled = now.saturating_duration_since(self.took_over) >= self.settle;
        let alive = |node: &str| !settled || nodes.iter().any(|n| n.node == node);
        let grace = group.health_check_grace_period;
        let mut events = Vec::new();
        // For a refresh: (the record's tag, why it failed before service, or None: it went in service).
        let mut outcomes: Vec<(String, Option<String>)> = Vec::new();
        let current = self.launch.clone();
        let mut ready_warm = BTreeSet::new();
        self.unreported.retain(|id, _| {
            self.records.iter().any(|r| &r.id == id) && !view.reports.contains_key(id)
        });
        for record in &mut self.records {
            let report = view.reports.get(&record.id);
            let unreported_for = match report {
                Some(_) => Duration::ZERO,
                None => now.saturating_duration_since(
                    *self.unreported.entry(record.id.clone()).or_insert(now),
                ),
            };
            // A machine of the command provider lives apart from the nodes; it is stopped by the owner's
            // terminate hook (see `vm_terminated`).
            let machine = record.provider_id.is_some();
            if record.terminating && machine {
                continue;
            }
            if record.terminating {
                let gone =
                    !alive(&record.node) || report.is_some_and(|r| r.stopped || r.exited.is_some());
                if gone {
                    events.push((
                        record.id.clone(),
                        "terminated",
                        "stopped".to_string(),
                        false,
                    ));
                }
                continue;
            }
            if !machine && !alive(&record.node) {
                events.push((
                    record.id.clone(),
                    "replace",
                    format!("its node {} is gone; replacing it", record.node),
                    false,
                ));
                continue;
            }
            if record.warm && report.is_some_and(|r| r.warm_ready && r.exited.is_none()) {
                ready_warm.insert(record.id.clone());
            }
            if report.is_some_and(|r| r.admitted) && !record.admitted {
                record.admitted = true;
                self.changed.insert(record.id.clone());
            }
            let tag = record.launch.clone().unwrap_or_else(|| current.clone());
            if let Some(how) = report.and_then(|r| r.exited.as_deref()) {
                let pending = record.in_service_at_ms.is_none();
                if pending {
                    outcomes.push((tag, Some(format!("{} {how}", record.id))));
                }
                events.push((record.id.clone(), "exited", how.to_string(), pending));
                continue;
            }
            if unreported_for >= grace.max(REPORT_DEADLINE) {
                outcomes.push((tag, Some(format!("{} never reported", record.id))));
                events.push((
                    record.id.clone(),
                    "replace",
                    format!("node {} never reported it; replacing it", record.node),
                    true,
                ));
                continue;
            }
            // Warm: out of routing, so no node's checks speak for it (its node's probe does, above).
            if record.warm {
                continue;
            }
            let Some(state) = health(report) else {
                continue;
            };
            let mut instance = instance_of(record, now_ms, now);
            let reason = format!("reported {} by node {}", state.as_str(), record.node);
            let replace = instance.on_health(state, &reason, grace, now);
            if instance.state == Lifecycle::InService && record.in_service_at_ms.is_none() {
                record.in_service_at_ms = Some(now_ms);
                self.changed.insert(record.id.clone());
                self.backoff.succeeded();
                outcomes.push((tag.clone(), None));
            }
            if let Some(Replace::Unhealthy(reason) | Replace::Exited(reason)) = replace {
                if record.in_service_at_ms.is_none() {
                    outcomes.push((tag, Some(format!("{} unhealthy: {reason}", record.id))));
                }
                record.terminating = true;
                self.changed.insert(record.id.clone());
                events.push((
                    record.id.clone(),
                    "replace",
                    format!("unhealthy ({reason}); replacing it"),
                    false,
                ));
            }
        }
        self.ready_warm = ready_warm;
        for (tag, failure) in outcomes {
            match failure {
                Some(why) => self.refresh_failed(group, &tag, &why, metrics),
                None => self.refresh_succeeded(&tag),
            }
        }
        for (id, kind, text, failed_launch) in events {
            match kind {
                "terminated" => {
                    self.remove(&id);
                    self.activity(
                        group,
                        metrics,
                        "terminated",
                        format!("instance {id} {text}"),
                    );
                }
                "exited" if failed_launch => {
                    self.remove(&id);
                    let wait = self.backoff.failed(now);
                    let text = format!(
                        "instance {id} {text} before going in service; next launch in {wait:?}"
                    );
                    self.activity(group, metrics, "launch_failed", text);
                }
                "exited" => {
                    self.remove(&id);
                    let text = format!("instance {id} {text}; replacing it");
                    self.activity(group, metrics, "replace", text);
                }
                _ => {
                    // Unhealthy ones were marked terminating above and drain first; the others are
                    // gone already.
                    let terminating = self.records.iter().any(|r| r.id == id && r.terminating);
                    if !terminating {
                        self.remove(&id);
                    }
                    if failed_launch {
                        self.backoff.failed(now);
                    }
                    self.activity(group, metrics, "replace", format!("instance {id} {text}"));
                }
            }
        }
    }

    fn scheduled(&mut self, group: &ScalingGroup, now: Instant, metrics: &ScalingMetrics) {
        let Some(scheduler) = self.scheduler.as_mut() else {
            return;
        };
        for text in fire_scheduled(scheduler, &mut self.decider, now) {
            self.activity(group, metrics, "scheduled", text);
        }
    }

    /// One sample of the fleet's requests to the group over the last period: every node's counters for
    /// each in-service instance past its warm-up, summed. Load that arrives only at another node counts
    /// as much as load here.
    fn evaluate(
        &mut self,
        group: &ScalingGroup,
        view: &GroupView,
        now: Instant,
        now_ms: u64,
        metrics: &ScalingMetrics,
    ) {
        let period = now.saturating_duration_since(self.last_evaluation);
        let mut tally = Tally::default();
        for record in self.records.iter().filter(|r| !r.terminating && !r.warm) {
            let address = record.address.to_string();
            let (mut delta, mut in_flight) = (0, 0);
            for (node, load) in &view.loads {
                let completed = load.completed.get(&address).copied().unwrap_or(0);
                let key = (node.clone(), address.clone());
                // A counter seen for the first time is a baseline; one that went down is a node
                // that restarted.
                let last = self.last_completed.insert(key, completed);
                delta += last.map_or(0, |l| completed.saturating_sub(l));
                in_flight += load.in_flight.get(&address).copied().unwrap_or(0);
            }
            let cpu = view.reports.get(&record.id).and_then(|r| r.cpu_ticks);
            let cpu_delta = cpu
                .zip(self.last_cpu.get(&record.id).copied())
                .map(|(now, then)| now.saturating_sub(then));
            if let Some(ticks) = cpu {
                self.last_cpu.insert(record.id.clone(), ticks);
            }
            let instance = instance_of(record, now_ms, now);
            tally.busy |= delta > 0 || in_flight > 0;
            if instance.warming(group.instance_warmup, now) {
                tally.warming += 1;
                continue;
            }
            tally.measured(delta, in_flight, cpu_delta);
        }
        let sample = tally.sample(period);
        match idle_to_zero(
            &mut self.decider,
            group.scale_to_zero,
            tally.busy,
            &mut self.last_request,
            now,
        ) {
            Zero::Policies => {}
            Zero::Held => return,
            Zero::Scaled(text) => {
                self.activity(group, metrics, "scale", text);
                return;
            }
        }
        if let Some(d) = self.decider.decide(group, now, &sample, tally.warming) {
            let text = format!("desired {} → {}: {}", d.from, d.to, d.cause);
            self.activity(group, metrics, "scale", text);
        }
    }

    /// Launches toward desired (each new instance on the live node that runs the fewest of the group,
    /// as an Auto Scaling group balances its zones) or terminates the excess.
    fn converge(
        &mut self,
        group: &ScalingGroup,
        nodes: &[NodeInfo],
        now: Instant,
        now_ms: u64,
        metrics: &ScalingMetrics,
    ) {
        let desired = match self.refresh_step(group, now, now_ms, metrics) {
            Some(capacity) => capacity,
            None => self.renew(group, now, now_ms, metrics),
        };
        let live = self
            .records
            .iter()
            .filter(|r| !r.terminating && !r.warm)
            .count() as u32;
        if live <= desired {
            self.protection_noted = false;
        }
        // A scale-out takes ready warm instances first.
        let live = live + self.take_warm(group, desired.saturating_sub(live), metrics);
        if live < desired && self.backoff.ready(now) && matches!(group.launch, Launch::Command(_)) {
            for _ in live..desired {
                self.to_launch
                    .push(format!("{}-{}", group.name, self.next_id));
                self.next_id += 1;
            }
        } else if live < desired && self.backoff.ready(now) && !nodes.is_empty() {
            for _ in live..desired {
                if let Err(id) = self.place_instance(group, nodes, now_ms, false, metrics) {
                    let wait = self.backoff.failed(now);
                    let text =
                        format!("cannot launch {id}: no free port left; next try in {wait:?}");
                    self.activity(group, metrics, "launch_failed", text);
                    break;
                }
            }
        } else if live > desired {
            let mut candidates: Vec<usize> = (0..self.records.len())
                .filter(|&i| {
                    let r = &self.records[i];
                    !r.terminating && !r.protected && !r.warm
                })
                .collect();
            candidates.sort_by_key(|&i| self.records[i].launched_at_ms);
            if group.termination_policy == TerminationPolicy::Newest {
                candidates.reverse();
            }
            let excess = (live - desired) as usize;
            if candidates.len() < excess && !self.protection_noted {
                self.protection_noted = true;
                let text = format!(
                    "{} instance(s) over desired {desired} are protected from scale-in; they stay until unprotected",
                    excess - candidates.len()
                );
                self.activity(group, metrics, "scale_in_blocked", text);
            }
            let mut terminated = Vec::new();
            for &i in candidates.iter().take(excess) {
                self.records[i].terminating = true;
                terminated.push(self.records[i].id.clone());
            }
            for id in terminated {
                self.changed.insert(id.clone());
                let text = format!("instance {id} terminating (scale-in): draining");
                self.activity(group, metrics, "terminate", text);
            }
        }
    }

    /// Takes up to `wanted` ready warm records of the current launch into service, oldest first:
    /// every node routes to them from now on. Returns how many.
    fn take_warm(&mut self, group: &ScalingGroup, wanted: u32, metrics: &ScalingMetrics) -> u32 {
        let mut ready: Vec<usize> = (0..self.records.len())
            .filter(|&i| {
                let r = &self.records[i];
                r.warm
                    && !r.terminating
                    && self.ready_warm.contains(&r.id)
                    && r.launch.as_deref().unwrap_or(&self.launch) == self.launch
            })
            .collect();
        ready.sort_by_key(|&i| self.records[i].launched_at_ms);
        ready.truncate(wanted as usize);
        for &i in &ready {
            let record = &mut self.records[i];
            record.warm = false;
            let id = record.id.clone();
            self.ready_warm.remove(&id);
            self.changed.insert(id.clone());
            let text = format!("instance {id} taken from the warm pool into service");
            self.activity(group, metrics, "warm_to_service", text);
        }
        ready.len() as u32
    }

    /// Keeps `warm_pool.size` warm records of the current launch (ready ones first, then the oldest);
    /// the others leave, and the pool refills on the nodes that run the fewest.
    fn tend_pool(
        &mut self,
        group: &ScalingGroup,
        nodes: &[NodeInfo],
        now: Instant,
        now_ms: u64,
        metrics: &ScalingMetrics,
    ) {
        let size = group.warm_pool.map_or(0, |p| p.size as usize);
        let mut pool: Vec<usize> = (0..self.records.len())
            .filter(|&i| self.records[i].warm && !self.records[i].terminating)
            .collect();
        pool.sort_by_key(|&i| {
            let r = &self.records[i];
            (
                r.launch.as_deref().unwrap_or(&self.launch) != self.launch,
                !self.ready_warm.contains(&r.id),
                r.launched_at_ms,
            )
        });
        let mut kept = 0;
        let mut leaving = Vec::new();
        for &i in &pool {
            let r = &self.records[i];
            if kept < size && r.launch.as_deref().unwrap_or(&self.launch) == self.launch {
                kept += 1;
            } else {
                leaving.push(i);
            }
        }
        for i in leaving {
            let record = &mut self.records[i];
            record.terminating = true;
            let id = record.id.clone();
            self.changed.insert(id.clone());
            let text = format!("warm instance {id} terminating: the pool no longer needs it");
            self.activity(group, metrics, "terminate", text);
        }
        if kept >= size || !self.backoff.ready(now) || nodes.is_empty() {
            return;
        }
        for _ in kept..size {
            if self
                .place_instance(group, nodes, now_ms, true, metrics)
                .is_err()
            {
                break;
            }
        }
    }

    /// A new record of the current launch on the node [`Owner::place`] picks, in service or into the
    /// warm pool; the id it would have had when no node has a free port.
    fn place_instance(
        &mut self,
        group: &ScalingGroup,
        nodes: &[NodeInfo],
        now_ms: u64,
        warm: bool,
        metrics: &ScalingMetrics,
    ) -> Result<(), String> {
        let id = format!("{}-{}", group.name, self.next_id);
        let (node, address) = self.place(group, nodes).ok_or_else(|| id.clone())?;
        self.next_id += 1;
        self.records.push(InstanceRecord {
            id: id.clone(),
            node: node.clone(),
            provider_id: None,
            address,
            launched_at_ms: now_ms,
            in_service_at_ms: None,
            protected: false,
            terminating: false,
            launch: Some(self.launch.clone()),
            admitted: false,
            warm,
        });
        self.changed.insert(id.clone());
        let into = if warm { ", into the warm pool" } else { "" };
        let text = format!("instance {id} placed on node {node} at {address}{into}");
        self.activity(group, metrics, "launch", text);
        Ok(())
    }

    /// `max_instance_lifetime`, as on a single node (see `trellis_scaler::renewal`): one over desired
    /// while an old instance's replacement starts, then the old one drains. Returns the capacity to
    /// converge to.
    fn renew(
        &mut self,
        group: &ScalingGroup,
        now: Instant,
        now_ms: u64,
        metrics: &ScalingMetrics,
    ) -> u32 {
        let desired = self.decider.desired();
        let live: Vec<usize> = (0..self.records.len())
            .filter(|&i| !self.records[i].terminating && !self.records[i].warm)
            .collect();
        let instances: Vec<Instance> = live
            .iter()
            .map(|&i| instance_of(&self.records[i], now_ms, now))
            .collect();
        let refs: Vec<&Instance> = instances.iter().collect();
        match renewal(&refs, desired, group.max_instance_lifetime, now) {
            Renewal::None => desired,
            Renewal::Replace => desired + 1,
            Renewal::Retire(k) => {
                let record = &mut self.records[live[k]];
                record.terminating = true;
                let id = record.id.clone();
                self.changed.insert(id.clone());
                let life = group.max_instance_lifetime.unwrap_or_default();
                let text = format!(
                    "instance {id} terminating (max_instance_lifetime {} reached; its replacement is in service): draining",
                    humantime::format_duration(life)
                );
                self.activity(group, metrics, "terminate", text);
                desired
            }
        }
    }

    /// The node for the next instance (fewest of the group's live instances, then by name) and its
    /// address there: the node's host and the lowest port of the range that no instance of the group
    /// on that host holds.
    fn place(&self, group: &ScalingGroup, nodes: &[NodeInfo]) -> Option<(String, SocketAddr)> {
        let Launch::Process(launch) = &group.launch else {
            return None;
        };
        let (lo, hi) = launch.ports.unwrap_or((0, 0));
        let mut running: BTreeMap<&str, usize> =
            nodes.iter().map(|n| (n.node.as_str(), 0)).collect();
        for r in self.records.iter().filter(|r| !r.terminating) {
            if let Some(n) = running.get_mut(r.node.as_str()) {
                *n += 1;
            }
        }
        let (node, _) = running.iter().min_by_key(|(name, n)| (**n, **name))?;
        let info = nodes.iter().find(|n| n.node == *node)?;
        let host: IpAddr = info
            .host
            .as_deref()
            .and_then(|h| h.parse().ok())
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let taken: BTreeSet<u16> = self
            .records
            .iter()
            .filter(|r| r.address.ip() == host)
            .map(|r| r.address.port())
            .collect();
        let port = (lo..=hi).find(|p| *p != 0 && !taken.contains(p))?;
        Some((node.to_string(), SocketAddr::new(host, port)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_fleet::GroupState;

    fn group() -> ScalingGroup {
        let text = r#"
[[service]]
name = "s"
hosts = ["*"]
  [[service.listener]]
  name = "l"
  protocol = "http"
  port = 8080
  default_action = { forward = [{ target_group = "web" }] }
[[target_group]]
name = "web"
targets = []
[[scaling_group]]
name = "pool"
target_group = "web"
min = 1
max = 6
desired = 3
  [scaling_group.launch]
  provider = "process"
  command = ["{self}", "echo", "--listen", "{host}:{port}"]
  ports = "20000-20009"
"#;
        let config = trellis_config::parse(text, std::path::Path::new("t.toml")).expect("valid");
        config.scaling_groups[0].clone()
    }

    fn node(name: &str, host: &str) -> NodeInfo {
        NodeInfo {
            node: name.into(),
            revision: 1,
            contact: 0,
            stale: false,
            host: Some(host.into()),
        }
    }

    fn metrics() -> ScalingMetrics {
        ScalingMetrics::new(&prometheus::Registry::new()).expect("metrics")
    }

    #[test]
    fn instances_are_spread_over_the_nodes_at_their_own_addresses() {
        let (g, m) = (group(), metrics());
        let nodes = [node("a", "127.0.0.2"), node("b", "127.0.0.3")];
        let mut owner = Owner::take_over(&g, (7, Duration::ZERO), "a", &GroupView::default(), &m);
        owner.step(&g, &GroupView::default(), &nodes, &m);
        let placed: Vec<(String, String)> = owner
            .records()
            .iter()
            .map(|r| (r.node.clone(), r.address.to_string()))
            .collect();
        // Fewest first, then by name: a, b, a; ports are per host.
        assert_eq!(
            placed,
            [
                ("a".into(), "127.0.0.2:20000".into()),
                ("b".into(), "127.0.0.3:20000".into()),
                ("a".into(), "127.0.0.2:20001".into()),
            ]
        );
        // Everything is in the first write: the records and the state a next owner continues from.
        let write = owner.write();
        assert_eq!(write.instances.len(), 3);
        let state = write.state.clone().expect("state");
        assert_eq!((state.desired, state.next_id), (3, 4));
        owner.written(write);
        assert!(owner.write().is_empty(), "nothing left to write");
    }

    #[test]
    fn a_new_owner_continues_from_the_state_and_replaces_a_dead_node_s_instances_after_settling() {
        let (g, m) = (group(), metrics());
        let nodes = [node("a", "127.0.0.2"), node("b", "127.0.0.3")];
        let mut first = Owner::take_over(&g, (7, Duration::ZERO), "a", &GroupView::default(), &m);
        first.step(&g, &GroupView::default(), &nodes, &m);
        let view = GroupView {
            state: Some(first.state()),
            instances: first.records().to_vec(),
            ..GroupView::default()
        };
        // Node a died; b takes over. It does not take a for dead while it settles...
        let survivors = [node("b", "127.0.0.3")];
        let mut second = Owner::take_over(&g, (9, Duration::from_secs(3600)), "b", &view, &m);
        second.step(&g, &view, &survivors, &m);
        assert_eq!(second.records(), first.records(), "nothing replaced yet");
        assert_eq!(second.state().next_id, 4, "continues the numbering");
        // ...and once settled, a's two instances are replaced on b, with new ids.
        let mut third = Owner::take_over(&g, (9, Duration::ZERO), "b", &view, &m);
        third.step(&g, &view, &survivors, &m);
        let ids: Vec<(&str, &str)> = third
            .records()
            .iter()
            .map(|r| (r.id.as_str(), r.node.as_str()))
            .collect();
        assert_eq!(ids, [("pool-2", "b"), ("pool-4", "b"), ("pool-5", "b")]);
        let write = third.write();
        assert_eq!(write.removed, ["pool-1", "pool-3"]);
        let GroupState { activities, .. } = write.state.expect("state");
        assert!(
            activities
                .iter()
                .any(|a| a.description.contains("its node a is gone")),
            "{activities:?}"
        );
    }

    #[test]
    fn an_operator_request_is_applied_once() {
        let (g, m) = (group(), metrics());
        let nodes = [node("a", "127.0.0.2")];
        let mut owner = Owner::take_over(&g, (7, Duration::ZERO), "a", &GroupView::default(), &m);
        let view = GroupView {
            desired_request: Some((5, 40)),
            ..GroupView::default()
        };
        owner.step(&g, &view, &nodes, &m);
        assert_eq!(owner.desired(), (1, 5, 6));
        // Someone set it back by another way; the same request read again changes nothing.
        owner.decider.set_desired(2, Instant::now(), "test");
        owner.step(&g, &view, &nodes, &m);
        assert_eq!(owner.desired().1, 2);
        assert_eq!(owner.state().requests_applied, 40);
    }
}
