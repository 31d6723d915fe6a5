//! Running the scaling groups: one controller task per `[[scaling_group]]` launches instances with the
//! group's provider, registers them in its target group, follows them through their lifecycle, feeds
//! the group's own request metrics to its policies, and converges on `desired`.
//!
//! The decisions themselves (capacity, lifecycle, back-off) are trellis-scaler's pure code; this is the
//! part that touches processes, the clock and the daemon.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime};

use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use trellis_config::{Launch, ScalingGroup, TerminationPolicy};
use trellis_scaler::{
    Backoff, Decider, Instance, Lifecycle, ProcessInstance, ProcessProvider, Replace, Sample,
};

use crate::daemon::Daemon;

/// How often instances are looked at (exits, health, draining), between evaluations too.
const TICK: Duration = Duration::from_millis(200);
/// Activities kept for the status page.
const ACTIVITIES: usize = 20;

/// A running scaling group as the rest of the daemon sees it: what `/v1/status` shows (the controller
/// keeps it current) and a way to tell the controller what an operator wants.
pub struct GroupHandle {
    pub name: String,
    view: Mutex<Value>,
    commands: mpsc::UnboundedSender<Command>,
}

/// Operator requests, answered by the controller between two of its ticks.
enum Command {
    SetDesired(u32, oneshot::Sender<(u32, u32, u32)>),
    Protect(String, bool, oneshot::Sender<bool>),
}

impl GroupHandle {
    pub fn get(&self) -> Value {
        self.view
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, v: Value) {
        *self.view.lock().unwrap_or_else(PoisonError::into_inner) = v;
    }

    /// Sets desired (clamped); returns (min, desired, max) as they are now, or `None` if the group
    /// has stopped.
    pub async fn set_desired(&self, desired: u32) -> Option<(u32, u32, u32)> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::SetDesired(desired, tx)).ok()?;
        rx.await.ok()
    }

    /// Protects (or not) an instance from scale-in; `Some(false)` when there is no such instance.
    pub async fn protect(&self, instance: &str, protected: bool) -> Option<bool> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Protect(instance.to_string(), protected, tx))
            .ok()?;
        rx.await.ok()
    }
}

/// Group metrics, resolved per group when its controller starts.
#[derive(Clone)]
pub struct ScalingMetrics {
    capacity: IntGaugeVec,
    activities: IntCounterVec,
}

impl ScalingMetrics {
    pub fn new(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let capacity = IntGaugeVec::new(
            Opts::new(
                "trellis_scaling_group_instances",
                "Scaling group capacity: desired, and instances by lifecycle state (in_service, pending, terminating)",
            ),
            &["scaling_group", "state"],
        )?;
        let activities = IntCounterVec::new(
            Opts::new(
                "trellis_scaling_activities_total",
                "Scaling activities by kind (scale, launch, launch_failed, replace, terminate, terminated)",
            ),
            &["scaling_group", "kind"],
        )?;
        registry.register(Box::new(capacity.clone()))?;
        registry.register(Box::new(activities.clone()))?;
        Ok(ScalingMetrics {
            capacity,
            activities,
        })
    }
}

/// Starts a controller for every scaling group with the process provider; returns their handles.
pub fn start(daemon: &Arc<Daemon>, metrics: &ScalingMetrics) -> Vec<Arc<GroupHandle>> {
    let current = daemon.current();
    let self_exe = std::env::current_exe().unwrap_or_else(|_| "trellis".into());
    let mut statuses = Vec::new();
    for group in &current.file.scaling_groups {
        let Launch::Process(launch) = &group.launch else {
            tracing::warn!(scaling_group = %group.name, "the command provider is not running yet in this version; the group is not started");
            continue;
        };
        let (commands, inbox) = mpsc::unbounded_channel();
        let status = Arc::new(GroupHandle {
            name: group.name.clone(),
            view: Mutex::new(Value::Null),
            commands,
        });
        let controller = Controller {
            inbox,
            metrics: metrics.clone(),
            daemon: Arc::downgrade(daemon),
            provider: ProcessProvider::new(launch.clone(), &group.name, self_exe.clone()),
            decider: Decider::new(group),
            group: group.clone(),
            instances: Vec::new(),
            backoff: Backoff::default(),
            activities: VecDeque::new(),
            next_id: 1,
            status: status.clone(),
        };
        tokio::spawn(controller.run());
        statuses.push(status);
    }
    statuses
}

struct Live {
    meta: Instance,
    address: SocketAddr,
    process: Option<ProcessInstance>,
    /// The target's completed-request counter at the last evaluation.
    last_completed: u64,
    stop_signal: i32,
}

struct Activity {
    at: SystemTime,
    kind: &'static str,
    text: String,
}

struct Controller {
    inbox: mpsc::UnboundedReceiver<Command>,
    metrics: ScalingMetrics,
    daemon: Weak<Daemon>,
    provider: ProcessProvider,
    decider: Decider,
    group: ScalingGroup,
    instances: Vec<Live>,
    backoff: Backoff,
    activities: VecDeque<Activity>,
    next_id: u64,
    status: Arc<GroupHandle>,
}

impl Controller {
    async fn run(mut self) {
        let mut next_evaluation = Instant::now() + self.group.evaluation_period;
        let mut last_evaluation = Instant::now();
        loop {
            let Some(daemon) = self.daemon.upgrade() else {
                return;
            };
            let now = Instant::now();
            self.answer(now);
            self.reap(now);
            self.follow_health(&daemon, now);
            if now >= next_evaluation {
                self.evaluate(&daemon, now, now - last_evaluation);
                last_evaluation = now;
                next_evaluation = now + self.group.evaluation_period;
            }
            let changed = self.converge(now);
            if changed {
                let members: Vec<SocketAddr> = self
                    .instances
                    .iter()
                    .filter(|i| matches!(i.meta.state, Lifecycle::Pending | Lifecycle::InService))
                    .map(|i| i.address)
                    .collect();
                if let Err(e) = daemon.set_scaled(&self.group.target_group, members).await {
                    tracing::error!(scaling_group = %self.group.name, error = %e, "cannot update the target group");
                }
            }
            self.finish_terminations(&daemon).await;
            self.publish(now);
            drop(daemon);
            tokio::time::sleep(TICK).await;
        }
    }

    fn answer(&mut self, now: Instant) {
        while let Ok(command) = self.inbox.try_recv() {
            match command {
                Command::SetDesired(n, reply) => {
                    if let Some(d) = self.decider.set_desired(n, now, "set by an operator") {
                        self.activity(
                            "scale",
                            format!("desired {} → {}: {}", d.from, d.to, d.cause),
                        );
                    }
                    let (min, max) = self.decider.bounds();
                    let _ = reply.send((min, self.decider.desired(), max));
                }
                Command::Protect(id, protected, reply) => {
                    let found = self.instances.iter_mut().find(|i| i.meta.id == id);
                    let ok = found.is_some();
                    if let Some(live) = found {
                        live.meta.protected = protected;
                    }
                    let _ = reply.send(ok);
                }
            }
        }
    }

    fn activity(&mut self, kind: &'static str, text: String) {
        tracing::info!(scaling_group = %self.group.name, activity = kind, "{text}");
        self.metrics
            .activities
            .with_label_values(&[&self.group.name, kind])
            .inc();
        self.activities.push_front(Activity {
            at: SystemTime::now(),
            kind,
            text,
        });
        self.activities.truncate(ACTIVITIES);
    }

    /// Instances whose process exited are replaced; one that never made it into service counts as a
    /// failed launch (back-off).
    fn reap(&mut self, now: Instant) {
        let mut exited = Vec::new();
        for (i, live) in self.instances.iter_mut().enumerate() {
            if live.meta.state == Lifecycle::Terminated {
                continue;
            }
            if let Some(how) = live.process.as_mut().and_then(|p| p.exited()) {
                exited.push((i, how));
            }
        }
        for (i, how) in exited.into_iter().rev() {
            let live = self.instances.remove(i);
            if live.meta.state == Lifecycle::Pending {
                let wait = self.backoff.failed(now);
                self.activity(
                    "launch_failed",
                    format!(
                        "instance {} {how} before going in service; next launch in {wait:?}",
                        live.meta.id
                    ),
                );
            } else if live.meta.state != Lifecycle::Terminating {
                self.activity(
                    "replace",
                    format!("instance {} {how}; replacing it", live.meta.id),
                );
            }
        }
    }

    fn follow_health(&mut self, daemon: &Daemon, now: Instant) {
        let grace = self.group.health_check_grace_period;
        let mut replace = Vec::new();
        for live in &mut self.instances {
            let Some(stats) = daemon.targets.get(&self.group.target_group, live.address) else {
                continue;
            };
            let view = stats.view();
            let was = live.meta.state;
            match live
                .meta
                .on_health(view.health.state, &view.health.reason, grace, now)
            {
                Some(Replace::Unhealthy(reason)) => replace.push((live.meta.id.clone(), reason)),
                Some(Replace::Exited(_)) | None => {}
            }
            if was == Lifecycle::Pending && live.meta.state == Lifecycle::InService {
                live.last_completed = stats.completed();
            }
        }
        if self
            .instances
            .iter()
            .any(|i| i.meta.state == Lifecycle::InService)
        {
            self.backoff.succeeded();
        }
        for (id, reason) in replace {
            if let Some(live) = self.instances.iter_mut().find(|i| i.meta.id == id) {
                live.meta.terminate();
            }
            self.activity(
                "replace",
                format!("instance {id} unhealthy ({reason}); replacing it"),
            );
        }
    }

    /// One sample of the group's own metrics over the last period, from in-service instances past
    /// their warm-up, and the policies' verdict.
    fn evaluate(&mut self, daemon: &Daemon, now: Instant, period: Duration) {
        let warmup = self.group.instance_warmup;
        let (mut requests, mut in_flight, mut measured, mut warming) = (0u64, 0u64, 0u32, 0u32);
        for live in &mut self.instances {
            if !matches!(live.meta.state, Lifecycle::Pending | Lifecycle::InService) {
                continue;
            }
            let stats = daemon.targets.get(&self.group.target_group, live.address);
            let completed = stats.as_ref().map_or(0, |s| s.completed());
            let delta = completed.saturating_sub(live.last_completed);
            live.last_completed = completed;
            if live.meta.warming(warmup, now) {
                warming += 1;
                continue;
            }
            requests += delta;
            in_flight += stats.map_or(0, |s| u64::from(s.in_flight()));
            measured += 1;
        }
        let sample = Sample {
            requests_per_second: requests as f64 / period.as_secs_f64().max(0.001),
            in_flight: in_flight as f64,
            cpu_percent: None,
            measured,
        };
        if let Some(d) = self.decider.decide(&self.group, now, &sample, warming) {
            self.activity(
                "scale",
                format!("desired {} → {}: {}", d.from, d.to, d.cause),
            );
        }
    }

    /// Launches or terminates toward `desired`; true when the set of members changed.
    fn converge(&mut self, now: Instant) -> bool {
        let live = self
            .instances
            .iter()
            .filter(|i| matches!(i.meta.state, Lifecycle::Pending | Lifecycle::InService))
            .count() as u32;
        let desired = self.decider.desired();
        let mut changed = self
            .instances
            .iter()
            .any(|i| i.meta.state == Lifecycle::Terminating && i.process.is_some());
        if live < desired && self.backoff.ready(now) {
            for _ in live..desired {
                let id = format!("{}-{}", self.group.name, self.next_id);
                self.next_id += 1;
                let taken: HashSet<u16> = self.instances.iter().map(|i| i.address.port()).collect();
                match self.provider.launch(&id, &taken) {
                    Ok(process) => {
                        let address = process.address();
                        self.activity(
                            "launch",
                            format!(
                                "instance {id} launched at {address} (pid {})",
                                process.pid()
                            ),
                        );
                        self.instances.push(Live {
                            meta: Instance::launched(id, now),
                            address,
                            process: Some(process),
                            last_completed: 0,
                            stop_signal: self.stop_signal(),
                        });
                        changed = true;
                    }
                    Err(e) => {
                        let wait = self.backoff.failed(now);
                        self.activity(
                            "launch_failed",
                            format!("cannot launch {id}: {e}; next try in {wait:?}"),
                        );
                        break;
                    }
                }
            }
        } else if live > desired {
            let mut candidates: Vec<usize> = (0..self.instances.len())
                .filter(|&i| {
                    let m = &self.instances[i].meta;
                    matches!(m.state, Lifecycle::Pending | Lifecycle::InService) && !m.protected
                })
                .collect();
            candidates.sort_by_key(|&i| self.instances[i].meta.launched_at);
            if self.group.termination_policy == TerminationPolicy::Newest {
                candidates.reverse();
            }
            for &i in candidates.iter().take((live - desired) as usize) {
                self.instances[i].meta.terminate();
                let id = self.instances[i].meta.id.clone();
                self.activity(
                    "terminate",
                    format!("instance {id} terminating (scale-in): draining"),
                );
                changed = true;
            }
        }
        changed
    }

    /// Terminating instances whose target has finished draining are stopped.
    async fn finish_terminations(&mut self, daemon: &Daemon) {
        let stop_timeout = match &self.group.launch {
            Launch::Process(p) => p.stop_timeout,
            Launch::Command(_) => Duration::from_secs(10),
        };
        let mut stopping = Vec::new();
        for live in &mut self.instances {
            if live.meta.state != Lifecycle::Terminating {
                continue;
            }
            let key = (self.group.target_group.clone(), live.address);
            let still_served = daemon
                .current()
                .effective
                .target_groups
                .iter()
                .any(|g| g.name == key.0 && g.targets.iter().any(|t| t.address == key.1));
            if still_served || daemon.draining.lock().contains(&key) {
                continue;
            }
            if let Some(process) = live.process.take() {
                stopping.push((live.meta.id.clone(), process, live.stop_signal));
            }
            live.meta.terminated();
        }
        self.instances
            .retain(|i| i.meta.state != Lifecycle::Terminated);
        for (id, process, signal) in stopping {
            let how = process.stop(signal, stop_timeout).await;
            self.activity("terminated", format!("instance {id} stopped: {how}"));
        }
    }

    fn stop_signal(&self) -> i32 {
        match &self.group.launch {
            Launch::Process(p) => p.stop_signal,
            Launch::Command(_) => libc::SIGTERM,
        }
    }

    fn publish(&self, now: Instant) {
        let (min, max) = self.decider.bounds();
        let count = |s: Lifecycle| self.instances.iter().filter(|i| i.meta.state == s).count();
        let gauge = |state: &str, n: usize| {
            self.metrics
                .capacity
                .with_label_values(&[&self.group.name, state])
                .set(n as i64)
        };
        gauge("desired", self.decider.desired() as usize);
        gauge("in_service", count(Lifecycle::InService));
        gauge("pending", count(Lifecycle::Pending));
        gauge("terminating", count(Lifecycle::Terminating));
        self.status.set(json!({
            "name": self.group.name,
            "target_group": self.group.target_group,
            "min": min,
            "desired": self.decider.desired(),
            "max": max,
            "in_service": count(Lifecycle::InService),
            "pending": count(Lifecycle::Pending),
            "terminating": count(Lifecycle::Terminating),
            "launch_backoff": {
                "failures": self.backoff.failures(),
                "next_launch_in_seconds": self.backoff.until().map(|u| u.saturating_duration_since(now).as_secs_f64()),
            },
            "instances": self.instances.iter().map(|i| json!({
                "id": i.meta.id,
                "address": i.address.to_string(),
                "lifecycle": i.meta.state.as_str(),
                "pid": i.process.as_ref().map(|p| p.pid()),
                "age_seconds": now.saturating_duration_since(i.meta.launched_at).as_secs_f64(),
                "warming": i.meta.warming(self.group.instance_warmup, now),
                "protected": i.meta.protected,
            })).collect::<Vec<_>>(),
            "activities": self.activities.iter().map(|a| json!({
                "at": humantime::format_rfc3339_seconds(a.at).to_string(),
                "kind": a.kind,
                "description": a.text,
            })).collect::<Vec<_>>(),
        }));
    }
}
