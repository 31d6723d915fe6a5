//! The controller's side of an instance refresh: starting one (a reload that changed `launch`, or the
//! API), feeding it the group's instances every tick, acting on its steps, and turning around to the
//! previous launch when it rolls back. The decisions are `trellis_scaler::Refresh`'s.

use std::time::SystemTime;

use serde_json::{json, Value};
use trellis_config::{InstanceRefresh, Launch};
use trellis_scaler::{Lifecycle, Member, Refresh, RefreshFailure, RefreshStatus};

use super::{provider, Controller, Refused};

/// What `POST /v1/scaling-groups/{name}/refresh` may override of the group's `instance_refresh`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Overrides {
    pub min_healthy_percent: Option<u32>,
    pub max_healthy_percent: Option<u32>,
    pub auto_rollback: Option<bool>,
}

impl Overrides {
    /// From the request's JSON object: only `instance_refresh` keys, in their ranges.
    pub fn from_json(body: &Value) -> Result<Self, String> {
        let Some(object) = body.as_object() else {
            return Err("the body must be a JSON object (or empty)".into());
        };
        let mut o = Overrides::default();
        for (key, value) in object {
            let percent = |lo: u64, hi: u64| {
                value
                    .as_u64()
                    .filter(|v| (lo..=hi).contains(v))
                    .map(|v| v as u32)
                    .ok_or_else(|| format!("{key} must be an integer in {lo}..={hi}"))
            };
            match key.as_str() {
                "min_healthy_percent" => o.min_healthy_percent = Some(percent(0, 100)?),
                "max_healthy_percent" => o.max_healthy_percent = Some(percent(100, 200)?),
                "auto_rollback" => {
                    o.auto_rollback = Some(
                        value
                            .as_bool()
                            .ok_or_else(|| format!("{key} must be true or false"))?,
                    )
                }
                // Meaningful only in the file; accepted so that a table can be posted as it is.
                "on_launch_change" => {}
                other => return Err(format!(
                    "{other:?} is not one of min_healthy_percent, max_healthy_percent, auto_rollback"
                )),
            }
        }
        Ok(o)
    }

    pub(super) fn apply(self, base: InstanceRefresh) -> Result<InstanceRefresh, String> {
        let p = InstanceRefresh {
            min_healthy_percent: self.min_healthy_percent.unwrap_or(base.min_healthy_percent),
            max_healthy_percent: self.max_healthy_percent.unwrap_or(base.max_healthy_percent),
            auto_rollback: self.auto_rollback.unwrap_or(base.auto_rollback),
            on_launch_change: base.on_launch_change,
        };
        let (min, max) = (p.min_healthy_percent, p.max_healthy_percent);
        if max - min > 100 {
            return Err(format!(
                "max_healthy_percent {max} is more than 100 above min_healthy_percent {min}"
            ));
        }
        if min == 100 && max == 100 {
            return Err(
                "with min_healthy_percent 100, max_healthy_percent must be above 100".into(),
            );
        }
        Ok(p)
    }
}

/// A refresh with its wall-clock times, for the status.
pub(super) struct Running {
    pub refresh: Refresh,
    pub started_at: SystemTime,
    pub ended_at: Option<SystemTime>,
    /// Why it started: "a reload changed launch" or "requested through the API".
    pub cause: &'static str,
}

impl Running {
    pub fn view(&self) -> Value {
        let r = &self.refresh;
        json!({
            "id": r.id,
            "status": r.status.as_str(),
            "percentage_complete": r.percentage_complete(),
            "reason": r.reason,
            "cause": self.cause,
            "rolling_back": r.rolling_back,
            "started_at": humantime::format_rfc3339_seconds(self.started_at).to_string(),
            "ended_at": self.ended_at.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            "min_healthy_percent": r.preferences.min_healthy_percent,
            "max_healthy_percent": r.preferences.max_healthy_percent,
            "auto_rollback": r.preferences.auto_rollback,
            "skipped_protected": r.skipped,
        })
    }
}

impl Controller {
    /// The launch configuration of a generation this group has run (kept for a rollback).
    pub(super) fn launch_of(&self, generation: u64) -> Option<&Launch> {
        self.launches
            .iter()
            .find(|(g, _)| *g == generation)
            .map(|(_, l)| l)
    }

    /// New launches use `launch` from now on, as a new generation; returns it.
    pub(super) fn new_generation(&mut self, launch: Launch) -> u64 {
        let before = self.generation;
        self.generations_made += 1;
        self.generation = self.generations_made;
        self.provider = provider(&self.group.name, &launch);
        self.launches.push((self.generation, launch));
        // The current generation, the one before, and the one a running refresh may roll back to are
        // all that can be needed.
        let (current, keep) = (self.generation, self.refresh_previous());
        self.launches
            .retain(|(g, _)| *g == current || *g == before || Some(*g) == keep);
        self.generation
    }

    /// The file's `launch` changed only in how instances are run (timeouts, stop signal, ports, log
    /// directory): it applies from now on, without replacing anyone. Not while the group runs another
    /// launch than the file's (after a rollback): that one's settings stay.
    pub(super) fn resettle_launch(&mut self) {
        let launch = self.group.launch.clone();
        let current = self.generation;
        let runs_the_file = self
            .launch_of(current)
            .is_some_and(|l| super::launch_identity(l) == super::launch_identity(&launch));
        if !runs_the_file {
            return;
        }
        self.provider = provider(&self.group.name, &launch);
        for (g, l) in &mut self.launches {
            if *g == current {
                *l = launch.clone();
            }
        }
        self.activity(
            "reconfigure",
            "new launch settings (not what makes an instance) apply from now on; no instance is replaced"
                .into(),
        );
    }

    fn refresh_previous(&self) -> Option<u64> {
        self.refresh
            .as_ref()
            .filter(|r| !r.refresh.status.is_done())
            .map(|r| r.refresh.previous)
    }

    /// Starts a refresh to the current generation from `previous`; a refresh in progress is superseded
    /// (an operator's request is refused before, in `requested_refresh`). Answers its view.
    pub(super) fn start_refresh(
        &mut self,
        preferences: InstanceRefresh,
        cause: &'static str,
        previous: u64,
    ) -> Value {
        let mut previous = previous;
        if let Some(running) = self.refresh.as_ref() {
            if !running.refresh.status.is_done() {
                // A rollback goes to the last launch known to serve, not to the one superseded.
                previous = if running.refresh.rolling_back {
                    running.refresh.target
                } else {
                    running.refresh.previous
                };
                self.stop_refresh("superseded by a newer refresh");
            }
        }
        let id = self.refresh.as_ref().map_or(1, |r| r.refresh.id + 1);
        let target = self.generation;
        self.refresh = Some(Running {
            refresh: trellis_scaler::Refresh::new(id, preferences, previous, target),
            started_at: SystemTime::now(),
            ended_at: None,
            cause,
        });
        self.activity(
            "refresh",
            format!(
                "instance refresh {id} started ({cause}): min_healthy_percent {}, max_healthy_percent {}, auto_rollback {}",
                preferences.min_healthy_percent,
                preferences.max_healthy_percent,
                preferences.auto_rollback
            ),
        );
        self.refresh_view()
    }

    /// `POST …/refresh`: the current launch again, as a new generation.
    pub(super) fn requested_refresh(&mut self, overrides: Overrides) -> Result<Value, Refused> {
        let preferences = overrides
            .apply(self.group.instance_refresh)
            .map_err(Refused::Invalid)?;
        if let Some(running) = &self.refresh {
            if !running.refresh.status.is_done() {
                return Err(Refused::Conflict(format!(
                    "refresh {} is {}; cancel it first (DELETE)",
                    running.refresh.id,
                    running.refresh.status.as_str()
                )));
            }
        }
        let previous = self.generation;
        let launch = self
            .launch_of(previous)
            .cloned()
            .unwrap_or_else(|| self.group.launch.clone());
        self.new_generation(launch);
        Ok(self.start_refresh(preferences, "requested through the API", previous))
    }

    pub(super) fn cancel_refresh(&mut self) -> Result<Value, Refused> {
        let Some(running) = self.refresh.as_ref() else {
            return Err(Refused::Conflict("no instance refresh has run".into()));
        };
        if running.refresh.status.is_done() {
            return Err(Refused::Conflict(format!(
                "refresh {} is already {}",
                running.refresh.id,
                running.refresh.status.as_str()
            )));
        }
        self.stop_refresh("cancelled by an operator");
        Ok(self.refresh_view())
    }

    /// Ends the refresh in progress (cancelled, with `reason`): its new instances that are not in
    /// service yet are stopped, so that the scale-in that follows never takes an old instance that
    /// serves in their place; the ones in service stay.
    pub(super) fn stop_refresh(&mut self, reason: &str) {
        let Some(running) = self.refresh.as_mut() else {
            return;
        };
        if running.refresh.status.is_done() {
            return;
        }
        running.refresh.cancel(reason);
        running.ended_at = Some(SystemTime::now());
        let (id, target) = (running.refresh.id, running.refresh.target);
        let percent = running.refresh.percentage_complete();
        let mut stopped = Vec::new();
        for live in &mut self.instances {
            if live.generation == target && live.meta.state == Lifecycle::Pending {
                live.meta.terminate();
                stopped.push(live.meta.id.clone());
                self.dirty = true;
            }
        }
        let stopped = match stopped.len() {
            0 => String::new(),
            _ => format!(
                "; its instances not in service yet stop: {}",
                stopped.join(", ")
            ),
        };
        self.activity(
            "refresh",
            format!("instance refresh {id} {reason} at {percent}%; the instances replaced so far stay{stopped}"),
        );
    }

    /// One of the group's instances of `generation` failed before going in service.
    pub(super) fn refresh_failure(&mut self, generation: u64, why: &str) {
        let Some(running) = self.refresh.as_mut() else {
            return;
        };
        if running.refresh.status.is_done() || running.refresh.target != generation {
            return;
        }
        match running.refresh.failed(why) {
            RefreshFailure::Counted => {}
            RefreshFailure::RollingBack => {
                let (id, target) = (running.refresh.id, running.refresh.target);
                let reason = running.refresh.reason.clone();
                match self.launch_of(target).cloned() {
                    Some(launch) => {
                        self.provider = provider(&self.group.name, &launch);
                        self.generation = target;
                        self.activity("refresh", format!("instance refresh {id}: {reason}"));
                    }
                    None => {
                        // Cannot happen: the previous generation's launch is kept while a refresh runs.
                        if let Some(r) = self.refresh.as_mut() {
                            r.refresh.cancel("the previous launch is not known");
                        }
                    }
                }
            }
            RefreshFailure::Failed => {
                let (id, reason) = (running.refresh.id, running.refresh.reason.clone());
                running.ended_at = Some(SystemTime::now());
                // Its instances that are not serving yet go; the ones in service stay.
                for live in &mut self.instances {
                    if live.generation == generation && live.meta.state == Lifecycle::Pending {
                        live.meta.terminate();
                        self.dirty = true;
                    }
                }
                self.activity("refresh", format!("instance refresh {id} failed: {reason}"));
            }
        }
    }

    /// One of the group's instances of `generation` went in service.
    pub(super) fn refresh_success(&mut self, generation: u64) {
        if let Some(running) = self.refresh.as_mut() {
            if running.refresh.target == generation {
                running.refresh.succeeded();
            }
        }
    }

    /// While a refresh runs: drains the old instances it lets go now, and returns the capacity to
    /// converge to. `None` when no refresh runs.
    pub(super) fn refresh_step(&mut self) -> Option<u32> {
        let desired = self.decider.desired();
        let running = self.refresh.as_ref()?;
        if running.refresh.status.is_done() {
            return None;
        }
        if running.refresh.target != self.generation {
            // New launches are of another generation than the refresh's (a reload changed `launch`
            // without starting a refresh): it could only replace them as they come.
            self.stop_refresh("stopped: the launch changed under it");
            return None;
        }
        let running = self.refresh.as_mut()?;
        let members: Vec<Member> = self
            .instances
            .iter()
            .map(|l| Member {
                instance: &l.meta,
                generation: l.generation,
            })
            .collect();
        let step = running.refresh.step(&members, desired);
        let id = running.refresh.id;
        let target = running.refresh.target;
        let status = running.refresh.status;
        if status.is_done() {
            running.ended_at = Some(SystemTime::now());
            let text = match status {
                RefreshStatus::RolledBack => format!(
                    "instance refresh {id} rolled back: every instance runs the previous launch again ({})",
                    running.refresh.reason
                ),
                _ if running.refresh.reason.is_empty() => {
                    format!("instance refresh {id} successful: every instance replaced")
                }
                _ => format!(
                    "instance refresh {id} successful: {}",
                    running.refresh.reason
                ),
            };
            self.activity("refresh", text);
        }
        for &i in &step.terminate {
            let live = &mut self.instances[i];
            live.meta.terminate();
            let id_i = live.meta.id.clone();
            self.dirty = true;
            self.activity(
                "terminate",
                format!(
                    "instance {id_i} terminating (instance refresh {id}, replaced by launch generation {target}): draining"
                ),
            );
        }
        Some(step.capacity)
    }

    pub(super) fn refresh_view(&self) -> Value {
        self.refresh
            .as_ref()
            .map(Running::view)
            .unwrap_or(Value::Null)
    }
}
