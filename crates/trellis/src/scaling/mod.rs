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
use trellis_config::{HookResult, HookTransition, Launch, ScalingGroup, TerminationPolicy};
use trellis_scaler::{
    renewal, Backoff, CommandProvider, Decider, Instance, Lifecycle, ProcessInstance,
    ProcessProvider, Renewal, Replace, Sample, Scheduler,
};

use crate::daemon::Daemon;
use crate::state::StateDir;

mod fleet;
mod hooks;
mod refresh;
mod warm;
pub use fleet::FleetScaling;
pub use refresh::Overrides as RefreshOverrides;

/// How often instances are looked at (exits, health, draining), between evaluations too.
const TICK: Duration = Duration::from_millis(200);
/// `/proc` CPU times are in clock ticks; Linux reports 100 per second (`getconf CLK_TCK`) everywhere
/// but on exotic builds.
const CLOCK_TICKS: f64 = 100.0;
/// Activities kept for the status page.
const ACTIVITIES: usize = 20;

/// A running scaling group as the rest of the daemon sees it: what `/v1/status` shows (the controller
/// keeps it current) and a way to tell the controller what an operator wants.
pub struct GroupHandle {
    pub name: String,
    target_group: String,
    launch: Launch,
    view: Mutex<Value>,
    commands: mpsc::UnboundedSender<Command>,
}

/// Why an operator's request was not taken.
pub enum Refused {
    /// The group's controller has stopped.
    Stopped,
    /// Fleet mode: the store cannot be written now.
    Unavailable(String),
    /// Not in the group's current state (a refresh already running, none to cancel).
    Conflict(String),
    /// The request's values do not fit together.
    Invalid(String),
}

/// Operator requests, answered by the controller between two of its ticks.
enum Command {
    SetDesired(u32, oneshot::Sender<Result<(u32, u32, u32), Refused>>),
    Protect(String, bool, oneshot::Sender<Result<bool, Refused>>),
    /// New settings from a reload.
    Reconfigure(Box<ScalingGroup>),
    /// Gone from the configuration: terminate every instance, then stop.
    Retire,
    /// A request is waiting for a group that scaled to zero.
    Wake,
    StartRefresh(RefreshOverrides, oneshot::Sender<Result<Value, Refused>>),
    CancelRefresh(oneshot::Sender<Result<Value, Refused>>),
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

    /// Sets desired (clamped); returns (min, desired, max) as they are now.
    pub async fn set_desired(&self, desired: u32) -> Result<(u32, u32, u32), Refused> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::SetDesired(desired, tx))
            .map_err(|_| Refused::Stopped)?;
        rx.await.map_err(|_| Refused::Stopped)?
    }

    /// The target group this scaling group fills.
    pub fn target_group(&self) -> &str {
        &self.target_group
    }

    /// A request waits for the group: if it has scaled to zero, it goes back to (at least) one.
    pub fn wake(&self) {
        let _ = self.commands.send(Command::Wake);
    }

    /// Starts an instance refresh; answers its view.
    pub async fn start_refresh(&self, overrides: RefreshOverrides) -> Result<Value, Refused> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::StartRefresh(overrides, tx))
            .map_err(|_| Refused::Stopped)?;
        rx.await.map_err(|_| Refused::Stopped)?
    }

    /// Cancels the refresh in progress; answers its view.
    pub async fn cancel_refresh(&self) -> Result<Value, Refused> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::CancelRefresh(tx))
            .map_err(|_| Refused::Stopped)?;
        rx.await.map_err(|_| Refused::Stopped)?
    }

    /// Protects (or not) an instance from scale-in; `Ok(false)` when there is no such instance.
    pub async fn protect(&self, instance: &str, protected: bool) -> Result<bool, Refused> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Protect(instance.to_string(), protected, tx))
            .map_err(|_| Refused::Stopped)?;
        rx.await.map_err(|_| Refused::Stopped)?
    }
}

/// Group metrics, resolved per group when its controller starts.
#[derive(Clone)]
pub struct ScalingMetrics {
    /// Instances by lifecycle state: a count, so a sum by group is the group's instances.
    instances: IntGaugeVec,
    /// The setpoints: min, desired, max.
    bounds: IntGaugeVec,
    activities: IntCounterVec,
}

impl ScalingMetrics {
    pub fn new(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let instances = IntGaugeVec::new(
            Opts::new(
                "trellis_scaling_group_instances",
                "Scaling group instances by lifecycle state (in_service, pending, terminating, warmed)",
            ),
            &["scaling_group", "state"],
        )?;
        let bounds = IntGaugeVec::new(
            Opts::new(
                "trellis_scaling_group_capacity",
                "Scaling group capacity: its min, desired and max number of instances",
            ),
            &["scaling_group", "bound"],
        )?;
        let activities = IntCounterVec::new(
            Opts::new(
                "trellis_scaling_activities_total",
                "Scaling activities by kind (scale, scheduled, scale_in_blocked, reconfigure, launch, launch_failed, \
                 replace, terminate, terminate_failed, terminated, adopt, adopt_failed, retire, retired, lifecycle_hook, \
                 launch_abandoned, wake, refresh, warmed, warm_failed, to_warm_pool, warm_to_service; fleet: owner)",
            ),
            &["scaling_group", "kind"],
        )?;
        registry.register(Box::new(instances.clone()))?;
        registry.register(Box::new(bounds.clone()))?;
        registry.register(Box::new(activities.clone()))?;
        Ok(ScalingMetrics {
            instances,
            bounds,
            activities,
        })
    }

    /// `trellis_scaling_group_capacity` of `group`: (min, desired, max).
    fn set_bounds(&self, group: &str, (min, desired, max): (u32, u32, u32)) {
        for (bound, n) in [("min", min), ("desired", desired), ("max", max)] {
            self.bounds
                .with_label_values(&[group, bound])
                .set(i64::from(n));
        }
    }
}

/// Starts a controller for every scaling group; returns their handles.
pub fn start(daemon: &Arc<Daemon>, metrics: &ScalingMetrics) -> Vec<Arc<GroupHandle>> {
    let current = daemon.current();
    current
        .file
        .scaling_groups
        .iter()
        .map(|group| spawn_group(daemon, metrics, group))
        .collect()
}

/// After a reload: running groups take their new settings (bounds, timings, policies; a new launch
/// configuration applies to the next launches), new groups start, and groups gone from the file (or
/// moved to another target group or provider kind) terminate their instances and stop.
pub fn reconcile(daemon: &Arc<Daemon>, metrics: &ScalingMetrics) {
    let current = daemon.current();
    let mut handles = daemon
        .scaling
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let mut next = Vec::new();
    for handle in handles.drain(..) {
        let same = current.file.scaling_groups.iter().find(|g| {
            g.name == handle.name
                && g.target_group == handle.target_group
                && same_provider_kind(&g.launch, &handle.launch)
        });
        match same {
            Some(group) => {
                let _ = handle
                    .commands
                    .send(Command::Reconfigure(Box::new(group.clone())));
                next.push(handle);
            }
            None => {
                let _ = handle.commands.send(Command::Retire);
            }
        }
    }
    for group in &current.file.scaling_groups {
        if !next.iter().any(|h| h.name == group.name) {
            next.push(spawn_group(daemon, metrics, group));
        }
    }
    *handles = next;
}

fn same_provider_kind(a: &Launch, b: &Launch) -> bool {
    matches!(
        (a, b),
        (Launch::Process(_), Launch::Process(_)) | (Launch::Command(_), Launch::Command(_))
    )
}

fn provider(group: &str, launch: &Launch) -> Provider {
    match launch {
        Launch::Process(launch) => Provider::Process(ProcessProvider::new(
            launch.clone(),
            group,
            std::env::current_exe().unwrap_or_else(|_| "trellis".into()),
        )),
        Launch::Command(hooks) => Provider::Command(CommandProvider::new(hooks.clone(), group)),
    }
}

fn scheduler(group: &ScalingGroup) -> Option<Scheduler> {
    match Scheduler::new(&group.policies) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(scaling_group = %group.name, "scheduled policies disabled: {e}");
            None
        }
    }
}

fn spawn_group(
    daemon: &Arc<Daemon>,
    metrics: &ScalingMetrics,
    group: &ScalingGroup,
) -> Arc<GroupHandle> {
    let (commands, inbox) = mpsc::unbounded_channel();
    let status = Arc::new(GroupHandle {
        name: group.name.clone(),
        target_group: group.target_group.clone(),
        launch: group.launch.clone(),
        view: Mutex::new(Value::Null),
        commands,
    });
    if let Some(fleet) = daemon.fleet.get() {
        fleet::spawn(daemon, fleet, metrics, group, status.clone(), inbox);
        return status;
    }
    let controller = Controller {
        inbox,
        metrics: metrics.clone(),
        daemon: Arc::downgrade(daemon),
        provider: provider(&group.name, &group.launch),
        generation: 1,
        generations_made: 1,
        launches: vec![(1, group.launch.clone())],
        refresh: None,
        vouch: Vec::new(),
        warm_fresh: Duration::ZERO,
        older_marks: Default::default(),
        records: StateDir::choose(Some(daemon.state_dir().to_path_buf())),
        dirty: false,
        scheduler: scheduler(group),
        retiring: false,
        protection_noted: false,
        decider: Decider::new(group),
        last_sample: None,
        last_request: Instant::now(),
        group: group.clone(),
        instances: Vec::new(),
        backoff: Backoff::default(),
        activities: VecDeque::new(),
        next_id: 1,
        status: status.clone(),
    };
    tokio::spawn(controller.run());
    status
}

/// One evaluation period's figures, summed over the instances measured (in service and past their
/// warm-up); the warming ones are only counted. Both the single node's controller and a fleet's owner
/// feed their policies through it.
#[derive(Default)]
struct Tally {
    /// Any instance, warming or not, completed or had a request in flight: the group is not idle.
    busy: bool,
    requests: u64,
    in_flight: u64,
    measured: u32,
    warming: u32,
    cpu_ticks: u64,
    cpu_measured: u32,
}

impl Tally {
    /// A measured instance: requests it completed over the period, in flight now, CPU ticks used over
    /// the period (when its CPU can be read).
    fn measured(&mut self, requests: u64, in_flight: u64, cpu_ticks: Option<u64>) {
        self.requests += requests;
        self.in_flight += in_flight;
        self.measured += 1;
        if let Some(ticks) = cpu_ticks {
            self.cpu_ticks += ticks;
            self.cpu_measured += 1;
        }
    }

    fn sample(&self, period: Duration) -> Sample {
        let seconds = period.as_secs_f64().max(0.001);
        Sample {
            requests_per_second: self.requests as f64 / seconds,
            in_flight: self.in_flight as f64,
            // Average over the instances whose CPU could be read (process provider only).
            cpu_percent: (self.cpu_measured > 0).then(|| {
                self.cpu_ticks as f64 / CLOCK_TICKS / seconds * 100.0 / f64::from(self.cpu_measured)
            }),
            measured: self.measured,
        }
    }
}

/// What scale to zero makes of one evaluation.
enum Zero {
    /// Not at zero and not idle long enough (or no scale to zero): the policies decide.
    Policies,
    /// At zero: nothing is measured, only a wake brings the group back.
    Held,
    /// Idle for `idle`: desired went to 0 (the activity's text).
    Scaled(String),
}

/// Scale to zero, for a single node's controller and a fleet's owner alike: `last_request` moves with
/// every evaluation that saw a request (completed or in flight, on any instance, warming ones too);
/// after `idle` without one, desired goes to 0.
fn idle_to_zero(
    decider: &mut Decider,
    zero: Option<trellis_config::ScaleToZero>,
    busy: bool,
    last_request: &mut Instant,
    now: Instant,
) -> Zero {
    if busy {
        *last_request = now;
    }
    let Some(zero) = zero else {
        return Zero::Policies;
    };
    if decider.desired() == 0 {
        return Zero::Held;
    }
    if now.saturating_duration_since(*last_request) < zero.idle {
        return Zero::Policies;
    }
    let cause = format!(
        "no request for {}: scaling to zero",
        humantime::format_duration(zero.idle)
    );
    match decider.set_desired(0, now, &cause) {
        Some(d) => Zero::Scaled(format!("desired {} → {}: {}", d.from, d.to, d.cause)),
        None => Zero::Held,
    }
}

/// A request waits for a group at zero: desired goes to (at least) one. The activity's text, if it
/// changed anything.
fn wake(decider: &mut Decider, now: Instant, cause: &str) -> Option<String> {
    if decider.desired() > 0 {
        return None;
    }
    let (min, _) = decider.bounds();
    let d = decider.set_desired(min.max(1), now, cause)?;
    Some(format!("desired {} → {}: {}", d.from, d.to, d.cause))
}

/// Applies the scheduled actions that fell due since the last call to `decider`; returns one activity
/// text per action that changed something.
fn fire_scheduled(scheduler: &mut Scheduler, decider: &mut Decider, now: Instant) -> Vec<String> {
    let mut texts = Vec::new();
    for action in scheduler.due(SystemTime::now()) {
        let (min, max) = decider.bounds();
        let cause = format!("scheduled policy {}", action.policy);
        let mut changes = Vec::new();
        if action.min.is_some() || action.max.is_some() {
            let (new_min, new_max) = (action.min.unwrap_or(min), action.max.unwrap_or(max));
            decider.set_bounds(new_min, new_max, now);
            changes.push(format!("bounds {min}..={max} → {new_min}..={new_max}"));
        }
        let before = decider.desired();
        if let Some(d) = action.desired {
            decider.set_desired(d, now, &cause);
        }
        if decider.desired() != before {
            changes.push(format!("desired {before} → {}", decider.desired()));
        }
        if !changes.is_empty() {
            texts.push(format!("{}: {cause}", changes.join(", ")));
        }
    }
    texts
}

/// A command provider's machine as the state directory records it: (instance name, provider id,
/// address).
pub type MachineRecord = (String, String, SocketAddr);

fn machines_file(group: &str) -> String {
    format!("scaling-{group}.json")
}

/// The machines a single node's command provider recorded for `group` (what a restart adopts, and what
/// `trellis fleet import` takes into a fleet). Unreadable records are reported and ignored.
pub fn load_machines(state: &StateDir, group: &str) -> Vec<MachineRecord> {
    load_marked(state, group)
        .into_iter()
        .map(|(machine, _)| machine)
        .collect()
}

/// The recorded machines with their marks (records from before marks have default ones).
fn load_marked(state: &StateDir, group: &str) -> Vec<(MachineRecord, Mark)> {
    let file = machines_file(group);
    let Ok(Some(bytes)) = state.read(&file) else {
        return Vec::new();
    };
    let Ok(Value::Array(list)) = serde_json::from_slice::<Value>(&bytes) else {
        tracing::error!(scaling_group = %group, file = %file, "instance records are unreadable; ignoring them");
        return Vec::new();
    };
    list.iter()
        .filter_map(|r| {
            let machine = (
                r["name"].as_str()?.to_string(),
                r["id"].as_str()?.to_string(),
                r["address"].as_str()?.parse().ok()?,
            );
            let mark = Mark {
                launch: r["launch"].as_str().map(str::to_string),
                warm: r["warm"].as_bool().unwrap_or(false),
            };
            Some((machine, mark))
        })
        .collect()
}

pub fn save_machines(
    state: &StateDir,
    group: &str,
    machines: &[MachineRecord],
) -> std::io::Result<()> {
    let marked: Vec<(MachineRecord, Mark)> = machines
        .iter()
        .map(|m| (m.clone(), Mark::default()))
        .collect();
    save_marked(state, group, &marked)
}

/// What a restart must know of a machine besides where it is: the launch that made it (a
/// [`launch_identity`]), and whether it waits in the warm pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mark {
    pub launch: Option<String>,
    pub warm: bool,
}

fn save_marked(
    state: &StateDir,
    group: &str,
    machines: &[(MachineRecord, Mark)],
) -> std::io::Result<()> {
    let list: Vec<Value> = machines
        .iter()
        .map(|((name, id, address), mark)| {
            let mut record = json!({"name": name, "id": id, "address": address.to_string()});
            if let Some(launch) = &mark.launch {
                record["launch"] = json!(launch);
            }
            if mark.warm {
                record["warm"] = json!(true);
            }
            record
        })
        .collect();
    let bytes = serde_json::to_vec_pretty(&list).unwrap_or_default();
    state.write_atomic(&machines_file(group), &bytes)
}

/// What makes an instance what it is, as a short digest: the command line and environment of a
/// process, the launch hook of a machine. Timeouts, stop signals and the working directory are left
/// out: changing them does not make the running instances out of date.
pub fn launch_identity(launch: &Launch) -> String {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    let mut put = |part: &str| {
        digest.update(part.as_bytes());
        digest.update([0]);
    };
    match launch {
        Launch::Process(p) => {
            put("process");
            p.command.iter().for_each(|a| put(a));
            for (k, v) in &p.env {
                put(k);
                put(v);
            }
            // Not `workdir`: a relative one resolves against each fleet node's own directory, and
            // nodes must agree on what a launch is.
        }
        Launch::Command(c) => {
            put("command");
            c.launch.iter().for_each(|a| put(a));
        }
    }
    digest.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

enum Provider {
    Process(ProcessProvider),
    Command(CommandProvider),
}

/// What stops an instance: the child process, or the id the launch hook gave it.
enum Handle {
    Process(Box<ProcessInstance>),
    Vm(String),
}

struct Live {
    meta: Instance,
    address: SocketAddr,
    handle: Option<Handle>,
    /// A failed terminate hook is retried from then on.
    retry_at: Option<Instant>,
    /// The target's completed-request counter at the last evaluation.
    last_completed: u64,
    /// The process's CPU time (clock ticks) at the last evaluation.
    last_cpu: Option<u64>,
    stop_signal: i32,
    /// Lifecycle hooks running for it now (launching or terminating).
    hook: Option<tokio::task::JoinHandle<hooks::HookRun>>,
    /// The launch generation it was launched from (see `refresh`).
    generation: u64,
    /// In the warm pool: its own health checking.
    warm: warm::WarmProbe,
    /// In the warm pool with its launching hooks done: since when (its check's deadline runs from here).
    warm_since: Option<Instant>,
    /// Terminating for a scale-in: may go back to the warm pool once drained.
    reuse: bool,
    /// Registered in the target group: false while its launching hooks run.
    admitted: bool,
    /// Its terminating hooks have run (or it has none, or its launch was abandoned).
    terminate_hooked: bool,
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
    provider: Provider,
    /// The launch generation new instances get, and how many generations were made so far.
    generation: u64,
    generations_made: u64,
    /// The launch configuration of the current generation and of those a refresh may go back to.
    launches: Vec<(u64, Launch)>,
    /// The latest instance refresh (kept once done, for its status).
    refresh: Option<refresh::Running>,
    /// Instances taken from the warm pool, to be vouched for once registered.
    vouch: Vec<SocketAddr>,
    /// How recent a warm instance's last pass must be for it to go in service already healthy.
    warm_fresh: Duration,
    /// Adopted machines made by an older launch: the launch identity they were recorded with.
    older_marks: std::collections::HashMap<String, String>,
    /// Where the command provider's instance records are kept.
    records: StateDir,
    /// The set of members changed: the target group must be updated.
    dirty: bool,
    /// The group's `scheduled` policies (`None` when they could not be set up: logged at start).
    scheduler: Option<Scheduler>,
    /// Removed by a reload: scaling to zero, then stopping.
    retiring: bool,
    /// Said once that protection blocks scale-in (reset when capacity matches again).
    protection_noted: bool,
    decider: Decider,
    /// The last evaluation's sample, for the status (each policy's metric against its target).
    last_sample: Option<trellis_scaler::Sample>,
    /// When the group last had a request (or was woken): scale to zero counts its idle time from here.
    last_request: Instant,
    group: ScalingGroup,
    instances: Vec<Live>,
    backoff: Backoff,
    activities: VecDeque<Activity>,
    next_id: u64,
    status: Arc<GroupHandle>,
}

impl Controller {
    async fn run(mut self) {
        self.adopt().await;
        let mut next_evaluation = Instant::now() + self.group.evaluation_period;
        let mut last_evaluation = Instant::now();
        loop {
            let Some(daemon) = self.daemon.upgrade() else {
                return;
            };
            let now = Instant::now();
            if self.answer(now) {
                // What an operator just asked for shows at once (`trellis refresh --wait` reads it
                // next), not after this tick's launches and stops.
                self.publish(&daemon, now);
            }
            self.scheduled(now);
            self.reap(now);
            self.follow_health(&daemon, now);
            if now >= next_evaluation {
                self.evaluate(&daemon, now, now - last_evaluation);
                last_evaluation = now;
                next_evaluation = now + self.group.evaluation_period;
            }
            self.hooks_done().await;
            self.converge(now).await;
            self.tend_pool(&daemon, now).await;
            if std::mem::take(&mut self.dirty) {
                let members: Vec<SocketAddr> = self
                    .instances
                    .iter()
                    .filter(|i| {
                        i.admitted
                            && matches!(i.meta.state, Lifecycle::Pending | Lifecycle::InService)
                    })
                    .map(|i| i.address)
                    .collect();
                if let Err(e) = daemon.set_scaled(&self.group.target_group, members).await {
                    tracing::error!(scaling_group = %self.group.name, error = %e, "cannot update the target group");
                }
                self.vouch_for_warmed(&daemon);
            }
            self.finish_terminations(&daemon).await;
            if self.retiring && self.instances.is_empty() {
                self.activity(
                    "retired",
                    "removed from the configuration: every instance terminated".into(),
                );
                return;
            }
            self.publish(&daemon, now);
            drop(daemon);
            tokio::time::sleep(TICK).await;
        }
    }

    /// Takes the operators' requests; whether there were any.
    fn answer(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Ok(command) = self.inbox.try_recv() {
            any = true;
            match command {
                Command::SetDesired(n, reply) => {
                    if let Some(d) = self.decider.set_desired(n, now, "set by an operator") {
                        self.activity(
                            "scale",
                            format!("desired {} → {}: {}", d.from, d.to, d.cause),
                        );
                    }
                    let (min, max) = self.decider.bounds();
                    let _ = reply.send(Ok((min, self.decider.desired(), max)));
                }
                Command::Reconfigure(group) => {
                    if let Some(d) = self.decider.set_bounds(group.min, group.max, now) {
                        self.activity(
                            "scale",
                            format!("desired {} → {}: {}", d.from, d.to, d.cause),
                        );
                    }
                    self.decider.reconfigure(&group);
                    // What makes an instance changed (its command, environment, launch hook), or
                    // only how it is run (timeouts, stop signal, ports, log directory)?
                    let launch_changed =
                        launch_identity(&group.launch) != launch_identity(&self.group.launch);
                    let settings_changed = !launch_changed && group.launch != self.group.launch;
                    if group.policies != self.group.policies {
                        self.scheduler = scheduler(&group);
                    }
                    self.group = *group;
                    if launch_changed {
                        let previous = self.generation;
                        self.new_generation(self.group.launch.clone());
                        if self.group.instance_refresh.on_launch_change {
                            self.start_refresh(
                                self.group.instance_refresh,
                                "a reload changed launch",
                                previous,
                            );
                        } else {
                            self.stop_refresh(
                                "stopped: a reload changed launch (on_launch_change = false)",
                            );
                            self.activity(
                                "reconfigure",
                                "new launch settings apply to the next launches (on_launch_change = false)".into(),
                            );
                        }
                    } else if settings_changed {
                        self.resettle_launch();
                    }
                }
                Command::StartRefresh(overrides, reply) => {
                    let _ = reply.send(self.requested_refresh(overrides));
                }
                Command::CancelRefresh(reply) => {
                    let _ = reply.send(self.cancel_refresh());
                }
                Command::Wake => {
                    self.last_request = now;
                    if !self.retiring {
                        if let Some(text) = wake(&mut self.decider, now, "a request is waiting") {
                            self.activity("wake", text);
                        }
                    }
                }
                Command::Retire => {
                    self.retiring = true;
                    self.stop_refresh(
                        "stopped: the scaling group was removed from the configuration",
                    );
                    self.decider.set_bounds(0, 0, now);
                    for live in &mut self.instances {
                        live.meta.protected = false;
                    }
                    self.activity(
                        "retire",
                        "removed from the configuration: terminating every instance".into(),
                    );
                }
                Command::Protect(id, protected, reply) => {
                    let found = self.instances.iter_mut().find(|i| i.meta.id == id);
                    let ok = found.is_some();
                    if let Some(live) = found {
                        live.meta.protected = protected;
                    }
                    let _ = reply.send(Ok(ok));
                }
            }
        }
        any
    }

    /// Scheduled policies that fired since the last tick set their bounds and desired capacity.
    fn scheduled(&mut self, now: Instant) {
        let Some(scheduler) = self.scheduler.as_mut() else {
            return;
        };
        for text in fire_scheduled(scheduler, &mut self.decider, now) {
            self.activity("scheduled", text);
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
            if let Some(Handle::Process(p)) = live.handle.as_mut() {
                let Some(how) = p.exited() else { continue };
                exited.push((i, how));
            }
        }
        for (i, how) in exited.into_iter().rev() {
            let live = self.instances.remove(i);
            self.dirty = true;
            let never_served = live.meta.state == Lifecycle::Pending
                || (live.meta.state == Lifecycle::Warmed && !live.warm.is_ready());
            if never_served {
                let wait = self.backoff.failed(now);
                self.activity(
                    "launch_failed",
                    format!(
                        "instance {} {how} before going in service; next launch in {wait:?}",
                        live.meta.id
                    ),
                );
                self.refresh_failure(live.generation, &format!("{} {how}", live.meta.id));
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
        let mut in_service = Vec::new();
        for live in &mut self.instances {
            if live.meta.state == Lifecycle::Warmed || !live.admitted {
                continue;
            }
            let Some(stats) = daemon.targets.get(&self.group.target_group, live.address) else {
                continue;
            };
            let view = stats.view();
            let was = live.meta.state;
            match live
                .meta
                .on_health(view.health.state, &view.health.reason, grace, now)
            {
                Some(Replace::Unhealthy(reason)) => {
                    replace.push((live.meta.id.clone(), reason, was, live.generation))
                }
                Some(Replace::Exited(_)) | None => {}
            }
            if was == Lifecycle::Pending && live.meta.state == Lifecycle::InService {
                live.last_completed = stats.completed();
                in_service.push(live.generation);
            }
        }
        // A launch that made it into service ends a crash loop; instances already serving say nothing
        // about the ones that keep failing next to them.
        if !in_service.is_empty() {
            self.backoff.succeeded();
        }
        for generation in in_service {
            self.refresh_success(generation);
        }
        for (id, reason, was, generation) in replace {
            if let Some(live) = self.instances.iter_mut().find(|i| i.meta.id == id) {
                live.meta.terminate();
                self.dirty = true;
            }
            self.activity(
                "replace",
                format!("instance {id} unhealthy ({reason}); replacing it"),
            );
            if was == Lifecycle::Pending {
                self.refresh_failure(generation, &format!("{id} unhealthy: {reason}"));
            }
        }
    }

    /// One sample of the group's own metrics over the last period, from in-service instances past
    /// their warm-up, and the policies' verdict.
    fn evaluate(&mut self, daemon: &Daemon, now: Instant, period: Duration) {
        let warmup = self.group.instance_warmup;
        let mut tally = Tally::default();
        for live in &mut self.instances {
            if !matches!(live.meta.state, Lifecycle::Pending | Lifecycle::InService) {
                continue;
            }
            let stats = daemon.targets.get(&self.group.target_group, live.address);
            let completed = stats.as_ref().map_or(0, |s| s.completed());
            let delta = completed.saturating_sub(live.last_completed);
            live.last_completed = completed;
            let cpu = match &live.handle {
                Some(Handle::Process(p)) => p.cpu_ticks(),
                _ => None,
            };
            let cpu_delta = cpu
                .zip(live.last_cpu)
                .map(|(now, then)| now.saturating_sub(then));
            live.last_cpu = cpu;
            let in_flight = stats.map_or(0, |s| u64::from(s.in_flight()));
            tally.busy |= delta > 0 || in_flight > 0;
            if live.meta.warming(warmup, now) {
                tally.warming += 1;
                continue;
            }
            tally.measured(delta, in_flight, cpu_delta);
        }
        let sample = tally.sample(period);
        self.last_sample = Some(sample);
        match idle_to_zero(
            &mut self.decider,
            self.group.scale_to_zero,
            tally.busy,
            &mut self.last_request,
            now,
        ) {
            Zero::Policies => {}
            Zero::Held => return,
            Zero::Scaled(text) => {
                self.activity("scale", text);
                return;
            }
        }
        if let Some(d) = self
            .decider
            .decide(&self.group, now, &sample, tally.warming)
        {
            self.activity(
                "scale",
                format!("desired {} → {}: {}", d.from, d.to, d.cause),
            );
        }
    }

    /// Instances past `max_instance_lifetime`: their replacement may take the group one over desired;
    /// once it is in service, the oldest of them drains and stops. Returns the capacity to converge to.
    fn renew(&mut self, now: Instant) -> u32 {
        let desired = self.decider.desired();
        let metas: Vec<&Instance> = self.instances.iter().map(|i| &i.meta).collect();
        match renewal(&metas, desired, self.group.max_instance_lifetime, now) {
            Renewal::None => desired,
            Renewal::Replace => desired + 1,
            Renewal::Retire(i) => {
                self.instances[i].meta.terminate();
                let id = self.instances[i].meta.id.clone();
                let life = self.group.max_instance_lifetime.unwrap_or_default();
                self.activity(
                    "terminate",
                    format!(
                        "instance {id} terminating (max_instance_lifetime {} reached; its replacement is in service): draining",
                        humantime::format_duration(life)
                    ),
                );
                self.dirty = true;
                desired
            }
        }
    }

    /// Launches or terminates toward `desired` (one over while an old instance is being replaced; what
    /// a refresh asks while one runs). A scale-out takes warm instances first.
    async fn converge(&mut self, now: Instant) {
        // First: an instance retired for its lifetime, or let go by a refresh, no longer counts below.
        let desired = match self.refresh_step() {
            Some(capacity) => capacity,
            None => self.renew(now),
        };
        let live = self
            .instances
            .iter()
            .filter(|i| matches!(i.meta.state, Lifecycle::Pending | Lifecycle::InService))
            .count() as u32;
        if live <= desired {
            self.protection_noted = false;
        }
        if live < desired {
            let taken = self.take_warm(desired - live);
            if self.backoff.ready(now) {
                for _ in live + taken..desired {
                    if !self.launch_instance(now, false).await {
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
            // Instances not serving yet go first (a scale-in never trades one that serves for one that
            // might), then the termination policy's choice.
            let newest = self.group.termination_policy == TerminationPolicy::Newest;
            candidates.sort_by(|&a, &b| {
                let (x, y) = (&self.instances[a].meta, &self.instances[b].meta);
                let by_age = if newest {
                    y.launched_at.cmp(&x.launched_at)
                } else {
                    x.launched_at.cmp(&y.launched_at)
                };
                let serving = |m: &Instance| m.state == Lifecycle::InService;
                serving(x).cmp(&serving(y)).then(by_age)
            });
            let excess = (live - desired) as usize;
            if candidates.len() < excess && !self.protection_noted {
                self.protection_noted = true;
                self.activity(
                    "scale_in_blocked",
                    format!(
                        "{} instance(s) over desired {desired} are protected from scale-in; they stay until unprotected",
                        excess - candidates.len()
                    ),
                );
            }
            let reuse = self
                .group
                .warm_pool
                .is_some_and(|pool| pool.reuse_on_scale_in);
            for &i in candidates.iter().take(excess) {
                self.instances[i].meta.terminate();
                self.instances[i].reuse = reuse;
                let id = self.instances[i].meta.id.clone();
                self.activity(
                    "terminate",
                    format!("instance {id} terminating (scale-in): draining"),
                );
                self.dirty = true;
            }
        }
    }

    /// Launches one instance of the current generation, into service or into the warm pool. False when
    /// the launch failed (the back-off has been started).
    async fn launch_instance(&mut self, now: Instant, warm: bool) -> bool {
        let name = format!("{}-{}", self.group.name, self.next_id);
        self.next_id += 1;
        match self.launch(&name).await {
            Ok((address, handle)) => {
                let detail = match &handle {
                    Handle::Process(p) => format!("pid {}", p.pid()),
                    Handle::Vm(id) => format!("id {id}"),
                };
                let into = if warm { " into the warm pool" } else { "" };
                self.activity(
                    "launch",
                    format!("instance {name} launched{into} at {address} ({detail})"),
                );
                let launching =
                    hooks::for_transition(&self.group.lifecycle_hooks, HookTransition::Launching);
                let hook = (!launching.is_empty()).then(|| {
                    tokio::spawn(hooks::run(
                        launching,
                        name.clone(),
                        address.to_string(),
                        self.group.name.clone(),
                    ))
                });
                let mut meta = Instance::launched(name, now);
                if warm {
                    meta.state = Lifecycle::Warmed;
                }
                self.instances.push(Live {
                    admitted: hook.is_none() && !warm,
                    hook,
                    terminate_hooked: false,
                    meta,
                    address,
                    handle: Some(handle),
                    retry_at: None,
                    last_completed: 0,
                    last_cpu: None,
                    stop_signal: self.stop_signal(),
                    generation: self.generation,
                    warm: warm::WarmProbe::default(),
                    warm_since: None,
                    reuse: false,
                });
                self.dirty |= !warm;
                self.save_records();
                true
            }
            Err((e, no_room)) => {
                let wait = self.backoff.failed(Instant::now());
                self.activity(
                    "launch_failed",
                    format!("cannot launch {name}: {e}; next try in {wait:?}"),
                );
                if !no_room {
                    self.refresh_failure(self.generation, &format!("cannot launch {name}: {e}"));
                }
                false
            }
        }
    }

    /// Starts an instance; the error says why, and whether only room was missing (every port of the
    /// range taken, which says nothing about the launch itself).
    async fn launch(&self, name: &str) -> Result<(SocketAddr, Handle), (String, bool)> {
        match &self.provider {
            Provider::Process(p) => {
                let taken: HashSet<u16> = self.instances.iter().map(|i| i.address.port()).collect();
                let process = p.launch(name, &taken).map_err(|e| {
                    let no_room = matches!(e, trellis_scaler::ScalerError::PortsExhausted { .. });
                    (e.to_string(), no_room)
                })?;
                Ok((process.address(), Handle::Process(Box::new(process))))
            }
            Provider::Command(c) => {
                let vm = c.launch(name).await.map_err(|e| (e, false))?;
                Ok((vm.address, Handle::Vm(vm.id)))
            }
        }
    }

    /// Command provider: the instances a previous run launched (its records, checked against the
    /// `list` hook when there is one) are taken over instead of launched again.
    async fn adopt(&mut self) {
        let Provider::Command(c) = &self.provider else {
            return;
        };
        let marked = load_marked(&self.records, &self.group.name);
        let marks: std::collections::HashMap<String, Mark> = marked
            .iter()
            .map(|((_, id, _), mark)| (id.clone(), mark.clone()))
            .collect();
        let recorded: Vec<MachineRecord> = marked.into_iter().map(|(m, _)| m).collect();
        let current = launch_identity(&self.group.launch);
        let existing = match c.list().await {
            None => recorded,
            Some(Ok(listed)) => listed
                .into_iter()
                .map(|vm| {
                    let name = recorded
                        .iter()
                        .find(|(_, id, _)| *id == vm.id)
                        .map(|(name, _, _)| name.clone())
                        .unwrap_or_else(|| vm.id.clone());
                    (name, vm.id, vm.address)
                })
                .collect(),
            Some(Err(e)) => {
                self.activity(
                    "adopt_failed",
                    format!("{e}; adopting the recorded instances"),
                );
                recorded
            }
        };
        let now = Instant::now();
        let mut older = 0;
        for (name, id, address) in existing {
            let mark = marks.get(&id).cloned().unwrap_or_default();
            // Made by another launch than the file's now: generation 0, which a refresh replaces.
            let generation = match &mark.launch {
                Some(launch) if *launch != current => {
                    self.older_marks.insert(id.clone(), launch.clone());
                    older += 1;
                    0
                }
                _ => self.generation,
            };
            let what = match (generation, mark.warm) {
                (0, _) => " (made by an older launch)",
                (_, true) => " into the warm pool",
                _ => "",
            };
            self.activity(
                "adopt",
                format!("instance {name} ({id}) at {address} adopted{what}"),
            );
            let mut meta = Instance::launched(name.clone(), now);
            let warm = mark.warm && generation != 0;
            if warm {
                meta.state = Lifecycle::Warmed;
            } else if mark.warm {
                // Warm, of an older launch: it never served; it goes.
                meta.terminate();
            } else {
                // It served before the restart: in service (its checks replace it if it no longer
                // answers), so that a refresh launches its replacement before it goes.
                meta.state = Lifecycle::InService;
                meta.in_service_at = Some(now);
            }
            if let Some(n) = name.rsplit('-').next().and_then(|n| n.parse::<u64>().ok()) {
                self.next_id = self.next_id.max(n + 1);
            }
            self.instances.push(Live {
                hook: None,
                generation,
                warm: warm::WarmProbe::default(),
                warm_since: None,
                reuse: false,
                admitted: !mark.warm,
                terminate_hooked: false,
                meta,
                address,
                handle: Some(Handle::Vm(id)),
                retry_at: None,
                last_completed: 0,
                last_cpu: None,
                stop_signal: libc::SIGTERM,
            });
            self.dirty = true;
        }
        self.save_records();
        if older > 0 && self.group.instance_refresh.on_launch_change {
            // The launch changed while trellis was down: the same refresh a reload would start, but
            // with nothing known to roll back to.
            let mut preferences = self.group.instance_refresh;
            preferences.auto_rollback = false;
            self.start_refresh(preferences, "machines of an older launch were adopted", 0);
        }
    }

    fn save_records(&self) {
        if !matches!(self.provider, Provider::Command(_)) {
            return;
        }
        let list: Vec<(MachineRecord, Mark)> = self
            .instances
            .iter()
            .filter_map(|i| match &i.handle {
                Some(Handle::Vm(id)) => {
                    let launch = match self.launch_of(i.generation) {
                        Some(launch) => Some(launch_identity(launch)),
                        None => self.older_marks.get(id).cloned(),
                    };
                    let mark = Mark {
                        launch,
                        warm: i.meta.state == Lifecycle::Warmed,
                    };
                    Some(((i.meta.id.clone(), id.clone(), i.address), mark))
                }
                _ => None,
            })
            .collect();
        if let Err(e) = save_marked(&self.records, &self.group.name, &list) {
            tracing::error!(scaling_group = %self.group.name, error = %e, "cannot save instance records");
        }
    }

    /// Terminating instances whose target has finished draining are stopped.
    /// Takes the results of the lifecycle hooks that have finished: a launch they continue joins the
    /// target group, one they abandon is stopped and counts as a failed launch (the crash-loop back-off
    /// applies, and converge launches a replacement); a termination goes on to the stop either way.
    async fn hooks_done(&mut self) {
        let now = Instant::now();
        for i in 0..self.instances.len() {
            let live = &mut self.instances[i];
            if !live.hook.as_ref().is_some_and(|h| h.is_finished()) {
                continue;
            }
            let Some(handle) = live.hook.take() else {
                continue;
            };
            let run = handle.await.unwrap_or_else(|e| hooks::HookRun {
                result: HookResult::Abandon,
                detail: format!("hook task failed: {e}"),
            });
            let id = live.meta.id.clone();
            if live.meta.state == Lifecycle::Terminating {
                live.terminate_hooked = true;
                self.activity(
                    "lifecycle_hook",
                    format!("instance {id} terminating hooks: {}", run.detail),
                );
                continue;
            }
            match run.result {
                HookResult::Continue if live.meta.state == Lifecycle::Warmed => {
                    self.activity(
                        "lifecycle_hook",
                        format!(
                            "instance {id} launching hooks: {}; kept in the warm pool",
                            run.detail
                        ),
                    );
                }
                HookResult::Continue => {
                    live.admitted = true;
                    self.dirty = true;
                    self.activity(
                        "lifecycle_hook",
                        format!(
                            "instance {id} launching hooks: {}; registering it",
                            run.detail
                        ),
                    );
                }
                HookResult::Abandon => {
                    live.meta.terminate();
                    live.terminate_hooked = true;
                    let generation = live.generation;
                    let wait = self.backoff.failed(now);
                    self.activity(
                        "launch_abandoned",
                        format!("instance {id} abandoned by its launching hooks ({}); stopping it, next launch in {wait:?}", run.detail),
                    );
                    self.refresh_failure(
                        generation,
                        &format!("{id} abandoned by its launching hooks"),
                    );
                }
            }
        }
    }

    async fn finish_terminations(&mut self, daemon: &Daemon) {
        let stop_timeout = match &self.group.launch {
            Launch::Process(p) => p.stop_timeout,
            Launch::Command(_) => Duration::from_secs(10),
        };
        let now = Instant::now();
        let mut stopping = Vec::new();
        let mut returning = Vec::new();
        for (i, live) in self.instances.iter_mut().enumerate() {
            if live.meta.state != Lifecycle::Terminating || live.retry_at.is_some_and(|at| now < at)
            {
                continue;
            }
            if daemon.routes_or_drains(&self.group.target_group, live.address) {
                continue;
            }
            if live.reuse {
                returning.push(i);
                continue;
            }
            if !live.terminate_hooked {
                // Drained and still running: the terminating hooks first, then the stop.
                if live.hook.is_none() {
                    let terminating = hooks::for_transition(
                        &self.group.lifecycle_hooks,
                        HookTransition::Terminating,
                    );
                    if terminating.is_empty() {
                        live.terminate_hooked = true;
                    } else {
                        live.hook = Some(tokio::spawn(hooks::run(
                            terminating,
                            live.meta.id.clone(),
                            live.address.to_string(),
                            self.group.name.clone(),
                        )));
                    }
                }
                if !live.terminate_hooked {
                    continue;
                }
            }
            if let Some(handle) = live.handle.take() {
                stopping.push((i, handle, live.stop_signal));
            }
        }
        for i in returning {
            if !self.back_to_pool(i) {
                // No room in the pool (or it went away): stopped after all, on the next tick.
                self.instances[i].reuse = false;
            }
        }
        for (i, handle, signal) in stopping {
            let id = self.instances[i].meta.id.clone();
            let outcome = match (handle, &self.provider) {
                (Handle::Process(p), _) => Ok(p.stop(signal, stop_timeout).await),
                (Handle::Vm(vm), Provider::Command(c)) => match c.terminate(&vm).await {
                    Ok(()) => Ok(format!("terminate hook done for {vm}")),
                    Err(e) => Err((e, vm)),
                },
                (Handle::Vm(vm), Provider::Process(_)) => Ok(format!("{vm} forgotten")),
            };
            match outcome {
                Ok(how) => {
                    self.instances[i].meta.terminated();
                    self.activity("terminated", format!("instance {id} stopped: {how}"));
                }
                Err((e, vm)) => {
                    self.instances[i].handle = Some(Handle::Vm(vm));
                    self.instances[i].retry_at = Some(Instant::now() + Duration::from_secs(5));
                    self.activity(
                        "terminate_failed",
                        format!("instance {id}: {e}; retrying in 5s"),
                    );
                }
            }
        }
        let before = self.instances.len();
        self.instances
            .retain(|i| i.meta.state != Lifecycle::Terminated);
        if self.instances.len() != before {
            self.save_records();
        }
    }

    fn stop_signal(&self) -> i32 {
        match &self.group.launch {
            Launch::Process(p) => p.stop_signal,
            Launch::Command(_) => libc::SIGTERM,
        }
    }

    fn publish(&self, daemon: &Daemon, now: Instant) {
        let (min, max) = self.decider.bounds();
        let count = |s: Lifecycle| self.instances.iter().filter(|i| i.meta.state == s).count();
        let gauge = |state: &str, n: usize| {
            self.metrics
                .instances
                .with_label_values(&[&self.group.name, state])
                .set(n as i64)
        };
        let bounds = (min, self.decider.desired(), max);
        self.metrics.set_bounds(&self.group.name, bounds);
        gauge("in_service", count(Lifecycle::InService));
        gauge("pending", count(Lifecycle::Pending));
        gauge("terminating", count(Lifecycle::Terminating));
        gauge("warmed", count(Lifecycle::Warmed));
        self.status.set(json!({
            "name": self.group.name,
            "target_group": self.group.target_group,
            "min": min,
            "desired": self.decider.desired(),
            "max": max,
            "in_service": count(Lifecycle::InService),
            "pending": count(Lifecycle::Pending),
            "terminating": count(Lifecycle::Terminating),
            "warm_pool": self.group.warm_pool.map(|pool| json!({
                "size": pool.size,
                "reuse_on_scale_in": pool.reuse_on_scale_in,
                "warmed": count(Lifecycle::Warmed),
                "ready": self.warm_ready(),
            })),
            "launch_generation": self.generation,
            "instance_refresh": self.refresh_view(),
            // The latest evaluation wants fewer instances: how long the cooldown and the scale-in window
            // hold them still.
            "scale_in_held_seconds": self.decider.scale_in_held(now).map(|d| d.as_secs_f64()),
            "scale_in_window": humantime::format_duration(self.group.scale_in_window).to_string(),
            "policies": policy_status(&self.group, self.last_sample.as_ref()),
            "scheduled": self.group.policies.iter().filter_map(|p| {
                let next = self.scheduler.as_ref()?.next_fire(&p.name, SystemTime::now())?;
                Some(json!({"policy": p.name, "next": humantime::format_rfc3339_seconds(next).to_string()}))
            }).collect::<Vec<_>>(),
            "launch_backoff": {
                "failures": self.backoff.failures(),
                "next_launch_in_seconds": self.backoff.until().map(|u| u.saturating_duration_since(now).as_secs_f64()),
            },
            "instances": self.instances.iter().map(|i| json!({
                "id": i.meta.id,
                "address": i.address.to_string(),
                "lifecycle": i.meta.state.as_str(),
                "generation": i.generation,
                "warm_ready": (i.meta.state == Lifecycle::Warmed).then_some(i.warm.is_ready()),
                "health": daemon
                    .targets
                    .get(&self.group.target_group, i.address)
                    .map(|t| t.view().health.state.as_str()),
                "pid": match &i.handle { Some(Handle::Process(p)) => Some(p.pid()), _ => None },
                "provider_id": match &i.handle { Some(Handle::Vm(id)) => Some(id.as_str()), _ => None },
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

/// Each metric policy's metric as the last evaluation measured it, against its target (target
/// tracking) — what an operator looks at to see why a group is the size it is.
fn policy_status(
    group: &ScalingGroup,
    sample: Option<&trellis_scaler::Sample>,
) -> Vec<serde_json::Value> {
    use trellis_config::{PolicyKind, ScalingMetric};
    let name = |m: &ScalingMetric| match m {
        ScalingMetric::RequestCountPerTarget => "request_count_per_target",
        ScalingMetric::InFlightPerTarget => "in_flight_per_target",
        ScalingMetric::CpuUtilization => "cpu_utilization",
    };
    group
        .policies
        .iter()
        .filter_map(|p| {
            let (kind, metric, target) = match &p.kind {
                PolicyKind::TargetTracking { metric, target, .. } => {
                    ("target_tracking", metric, Some(*target))
                }
                PolicyKind::Step { metric, .. } => ("step", metric, None),
                PolicyKind::Scheduled { .. } => return None,
            };
            let value = sample.and_then(|s| trellis_scaler::metric_value(*metric, s));
            Some(json!({
                "name": p.name,
                "type": kind,
                "metric": name(metric),
                "value": value,
                "target": target,
            }))
        })
        .collect()
}
