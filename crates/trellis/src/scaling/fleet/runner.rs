//! What every node of a fleet does for a scaling group, owner or not: it runs the instances whose
//! records name it, stops the ones told to terminate once they have drained here, stops the ones whose
//! record is gone, and says how each is doing (its report).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::task::JoinHandle;
use trellis_config::{HookResult, HookTransition, Launch, LifecycleHook, ScalingGroup};
use trellis_fleet::{InstanceRecord, NodeLoad, Report};
use trellis_scaler::{ProcessInstance, ProcessProvider};

use super::super::hooks::{self, HookRun};
use super::super::warm::{enabled_check, WarmProbe};
use crate::daemon::Daemon;

pub(super) struct Runner {
    node: String,
    host: IpAddr,
    provider: Option<ProcessProvider>,
    stop_signal: i32,
    stop_timeout: Duration,
    /// The identity of the launch this node's configuration has (see `launch_identity`).
    identity: String,
    /// The group's lifecycle hooks: run here, on the node that runs the instance.
    launching: Vec<LifecycleHook>,
    terminating: Vec<LifecycleHook>,
    local: BTreeMap<String, Local>,
}

struct Local {
    address: std::net::SocketAddr,
    process: Option<ProcessInstance>,
    /// Stopping in the background: its outcome, once done.
    stopping: Option<JoinHandle<String>>,
    /// Its launching or terminating hooks, running.
    hook: Option<JoinHandle<HookRun>>,
    /// Its terminating hooks have run (or there were none when it drained).
    terminate_hooked: bool,
    /// Its launching hooks abandoned it: reported as exited once it has stopped (so that its port is
    /// free before the owner places a replacement).
    abandoned: Option<String>,
    /// In the warm pool: its own health checking.
    warm: WarmProbe,
    report: Report,
    /// The report as last written to the store.
    published: Option<Report>,
}

impl Runner {
    pub fn new(group: &ScalingGroup, node: &str, host: IpAddr) -> Runner {
        let mut runner = Runner {
            node: node.to_string(),
            host,
            provider: None,
            stop_signal: libc::SIGTERM,
            stop_timeout: Duration::from_secs(10),
            identity: String::new(),
            launching: Vec::new(),
            terminating: Vec::new(),
            local: BTreeMap::new(),
        };
        runner.reconfigure(group);
        runner
    }

    /// New launch settings apply to the next launches, as on a single node; new hooks to the next
    /// transitions.
    pub fn reconfigure(&mut self, group: &ScalingGroup) {
        self.identity = super::super::launch_identity(&group.launch);
        self.launching = hooks::for_transition(&group.lifecycle_hooks, HookTransition::Launching);
        self.terminating =
            hooks::for_transition(&group.lifecycle_hooks, HookTransition::Terminating);
        if let Launch::Process(launch) = &group.launch {
            self.provider = Some(
                ProcessProvider::new(
                    launch.clone(),
                    &group.name,
                    std::env::current_exe().unwrap_or_else(|_| "trellis".into()),
                )
                .with_host(self.host),
            );
            self.stop_signal = launch.stop_signal;
            self.stop_timeout = launch.stop_timeout;
        }
    }

    /// The instances this node runs now.
    pub fn is_empty(&self) -> bool {
        self.local.is_empty()
    }

    pub fn pid(&self, id: &str) -> Option<i32> {
        self.local.get(id)?.process.as_ref().map(|p| p.pid())
    }

    /// Brings this node's instances in line with `records`. With `retiring`, every instance here is
    /// leaving, whatever the records say.
    pub async fn step(
        &mut self,
        group: &ScalingGroup,
        records: &[InstanceRecord],
        retiring: bool,
        daemon: &Daemon,
    ) {
        // The command provider's machines are the owner's to launch and stop, not a node's.
        let mine = records
            .iter()
            .filter(|r| r.node == self.node && r.provider_id.is_none());
        for record in mine {
            if self.local.contains_key(&record.id) {
                continue;
            }
            // Placed under another launch than this node's configuration has: it has not reached this
            // node yet (or has moved on); started once they agree.
            let other_launch = record
                .launch
                .as_deref()
                .is_some_and(|tag| super::owner::tag_launch(tag) != self.identity);
            if other_launch && !record.terminating && !retiring {
                continue;
            }
            let mut report = Report {
                node: self.node.clone(),
                pid: None,
                health: None,
                exited: None,
                stopped: false,
                cpu_ticks: None,
                admitted: false,
                warm_ready: false,
            };
            let mut process = None;
            let mut hook = None;
            if record.terminating || retiring {
                // Told to stop something that is not running here (this node restarted): done.
                report.stopped = true;
            } else {
                match self.launch(record) {
                    Ok(p) => {
                        tracing::info!(scaling_group = %group.name, instance = %record.id, address = %record.address, pid = p.pid(), "instance launched on this node");
                        report.pid = Some(p.pid());
                        process = Some(p);
                        // Launching hooks hold it out of every node's routing until they continue.
                        if self.launching.is_empty() {
                            report.admitted = true;
                        } else {
                            hook = Some(tokio::spawn(hooks::run(
                                self.launching.clone(),
                                record.id.clone(),
                                record.address.to_string(),
                                group.name.clone(),
                            )));
                        }
                    }
                    Err(e) => report.exited = Some(format!("could not be started: {e}")),
                }
            }
            self.local.insert(
                record.id.clone(),
                Local {
                    address: record.address,
                    process,
                    stopping: None,
                    hook,
                    terminate_hooked: false,
                    abandoned: None,
                    warm: WarmProbe::default(),
                    report,
                    published: None,
                },
            );
        }
        let (stop_signal, stop_timeout) = (self.stop_signal, self.stop_timeout);
        let check = enabled_check(daemon, &group.target_group);
        let now = std::time::Instant::now();
        let mut forget = Vec::new();
        for (id, local) in &mut self.local {
            let record = records.iter().find(|r| &r.id == id);
            if let Some(run) = finished(&mut local.hook).await {
                if local.report.admitted {
                    // The terminating hooks: the stop follows whatever they returned.
                    tracing::info!(scaling_group = %group.name, instance = %id, "terminating hooks: {}", run.detail);
                    local.terminate_hooked = true;
                } else if local.report.exited.is_some() {
                    // It exited while its launching hooks ran: the owner replaces it anyway.
                    local.terminate_hooked = true;
                } else if run.result == HookResult::Continue {
                    tracing::info!(scaling_group = %group.name, instance = %id, "launching hooks: {}; the fleet routes to it", run.detail);
                    local.report.admitted = true;
                } else {
                    // Abandoned: stopped here, and reported as a launch that failed (the owner backs off
                    // and replaces it).
                    tracing::warn!(scaling_group = %group.name, instance = %id, "launching hooks: {}; abandoned", run.detail);
                    local.abandoned =
                        Some(format!("abandoned by its launching hooks ({})", run.detail));
                    local.terminate_hooked = true;
                    let process = local.process.take();
                    local.stopping = Some(tokio::spawn(async move {
                        match process {
                            Some(p) => p.stop(stop_signal, stop_timeout).await,
                            None => "not running".to_string(),
                        }
                    }));
                }
            }
            if let Some(p) = local.process.as_mut() {
                if let Some(how) = p.exited() {
                    tracing::warn!(scaling_group = %group.name, instance = %id, "instance {how}");
                    local.process = None;
                    local.report.exited = Some(how);
                }
            }
            let warm = record.is_some_and(|r| r.warm && !r.terminating);
            if warm && local.process.is_some() && local.report.admitted {
                match check.as_ref() {
                    Some(check) => {
                        local.warm.step(check, local.address, now).await;
                    }
                    None => {
                        local.warm.ready_unchecked();
                    }
                }
                local.report.warm_ready = local.warm.is_ready();
            }
            let leaving = retiring || record.is_none_or(|r| r.terminating);
            if leaving && local.stopping.is_none() && !local.report.stopped {
                // Drained here first: out of this node's routing, and no longer draining. A record that is
                // gone was replaced (its process already exited) or its group retired: no one routes to
                // it any more either way.
                if record.is_some() && daemon.routes_or_drains(&group.target_group, local.address) {
                    continue;
                }
                // Drained and still running: the terminating hooks first (as configured now), then
                // the stop.
                if !local.terminate_hooked && self.terminating.is_empty() {
                    local.terminate_hooked = true;
                }
                if !local.terminate_hooked && local.process.is_some() {
                    if local.hook.is_none() {
                        local.hook = Some(tokio::spawn(hooks::run(
                            self.terminating.clone(),
                            id.clone(),
                            local.address.to_string(),
                            group.name.clone(),
                        )));
                    }
                    continue;
                }
                let process = local.process.take();
                local.stopping = Some(tokio::spawn(async move {
                    match process {
                        Some(p) => p.stop(stop_signal, stop_timeout).await,
                        None => "not running".to_string(),
                    }
                }));
            }
            if local.stopping.as_ref().is_some_and(|s| s.is_finished()) {
                local.stopping = None;
                local.report.pid = None;
                match local.abandoned.take() {
                    // Not a stop the owner asked for: a launch that failed.
                    Some(why) => local.report.exited = Some(why),
                    None => local.report.stopped = true,
                }
                tracing::info!(scaling_group = %group.name, instance = %id, "instance stopped on this node");
                if record.is_none() {
                    forget.push(id.clone());
                }
            }
            if let Some(stats) = daemon.targets.get(&group.target_group, local.address) {
                local.report.health = Some(stats.view().health.state.as_str().to_string());
            }
            local.report.cpu_ticks = local.process.as_ref().and_then(|p| p.cpu_ticks());
        }
        for id in forget {
            self.local.remove(&id);
        }
        // A stopped instance whose record is gone (or was never launched here and is gone) is forgotten.
        self.local.retain(|id, l| {
            l.stopping.is_some()
                || l.process.is_some()
                || records
                    .iter()
                    .any(|r| &r.id == id && r.node == self.node && r.provider_id.is_none())
        });
    }

    fn launch(&self, record: &InstanceRecord) -> Result<ProcessInstance, String> {
        let provider = self
            .provider
            .as_ref()
            .ok_or("the group has no process provider")?;
        provider
            .launch_on(&record.id, record.address.port())
            .map_err(|e| e.to_string())
    }

    /// Reports that changed since they were last written, except the CPU counter alone (which changes
    /// every time and is sent with the next real change or the next round of load).
    pub fn reports(&self, all: bool) -> Vec<(String, Report)> {
        self.local
            .iter()
            .filter(|(_, l)| {
                all || l.published.as_ref().is_none_or(|p| {
                    Report {
                        cpu_ticks: l.report.cpu_ticks,
                        ..p.clone()
                    } != l.report
                })
            })
            .map(|(id, l)| (id.clone(), l.report.clone()))
            .collect()
    }

    pub fn published(&mut self, id: &str, report: Report) {
        if let Some(l) = self.local.get_mut(id) {
            l.published = Some(report);
        }
    }

    /// This node's request counters for every instance of the group (it routes to all of them).
    pub fn load(group: &ScalingGroup, records: &[InstanceRecord], daemon: &Daemon) -> NodeLoad {
        let mut load = NodeLoad::default();
        for record in records {
            if let Some(stats) = daemon.targets.get(&group.target_group, record.address) {
                let address = record.address.to_string();
                load.completed.insert(address.clone(), stats.completed());
                load.in_flight.insert(address, u64::from(stats.in_flight()));
            }
        }
        load
    }
}

/// A hook run that has finished, taken out of `slot` (its result is ready: this does not wait).
async fn finished(slot: &mut Option<JoinHandle<HookRun>>) -> Option<HookRun> {
    if !slot.as_ref().is_some_and(|h| h.is_finished()) {
        return None;
    }
    let run = slot.take()?.await;
    Some(run.unwrap_or_else(|e| HookRun {
        result: HookResult::Abandon,
        detail: format!("hook task failed: {e}"),
    }))
}
