//! Instance refresh in a fleet, on the group's owner: the same decisions as on a single node
//! (`trellis_scaler::Refresh`), over the instance records. A record names the launch that makes it (its
//! tag: the launch's identity, with `#N` added for a refresh an operator asked for, so that the same
//! launch is replaced too); nodes start a record only under that launch.
//!
//! Unlike a single node there is no rollback: the nodes know only the fleet's current configuration,
//! not the launch before it. A refresh whose new instances keep failing ends `failed`.

use std::hash::{Hash, Hasher};
use std::time::Instant;

use trellis_config::{InstanceRefresh, ScalingGroup};
use trellis_fleet::{InstanceRecord, RefreshRecord};
use trellis_scaler::{Instance, Member, Refresh, RefreshFailure};

use super::{instance_of, now_ms, Owner};
use crate::scaling::ScalingMetrics;

/// A tag as the refresh's number: stable within this owner's process, which is all a `Refresh` needs.
pub(super) fn generation(tag: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    tag.hash(&mut hasher);
    hasher.finish()
}

/// The launch identity a tag is for (what a node compares with its own configuration).
pub fn tag_launch(tag: &str) -> &str {
    tag.split('#').next().unwrap_or(tag)
}

pub(super) struct FleetRefresh {
    pub refresh: Refresh,
    pub record: RefreshRecord,
    /// Finished before this owner took over: only its record is shown.
    restored: bool,
}

impl FleetRefresh {
    /// The record with the decision's current status.
    pub fn snapshot(&self) -> RefreshRecord {
        let mut record = self.record.clone();
        if self.restored {
            return record;
        }
        record.status = self.refresh.status.as_str().to_string();
        record.percentage_complete = self.refresh.percentage_complete();
        record.reason = self.refresh.reason.clone();
        record.skipped_protected = self.refresh.skipped.clone();
        record
    }
}

impl Owner {
    /// The tag of a record: its own, or (records from before tags) the current launch's.
    fn tag_of<'a>(&'a self, record: &'a InstanceRecord) -> &'a str {
        record.launch.as_deref().unwrap_or(&self.launch)
    }

    /// A refresh this owner continues from the stored state (its counts start over).
    pub(super) fn resume_refresh(&mut self, group: &ScalingGroup, record: &RefreshRecord) {
        let mut record = record.clone();
        let running = record.in_progress();
        if running && tag_launch(&record.target) != super::launch_identity(&group.launch) {
            // Its launch is not the configuration's any more (it changed while no node owned the
            // group): no node would start its instances. Ended; the check for older instances in
            // `take_over` starts the refresh the new launch needs.
            record.status = "cancelled".into();
            record.reason = "stopped: the launch changed while no node owned the group".into();
            record.ended_at_ms = Some(now_ms());
        }
        let record = &record;
        if !record.in_progress() {
            let mut refresh = Refresh::new(record.id, group.instance_refresh, 0, 0);
            // Done: it never steps again.
            refresh.cancel(&record.reason);
            self.refresh = Some(FleetRefresh {
                refresh,
                record: record.clone(),
                restored: true,
            });
            return;
        }
        let preferences = InstanceRefresh {
            min_healthy_percent: record.min_healthy_percent,
            max_healthy_percent: record.max_healthy_percent,
            auto_rollback: false,
            on_launch_change: group.instance_refresh.on_launch_change,
        };
        self.launch = record.target.clone();
        self.refresh = Some(FleetRefresh {
            refresh: Refresh::new(record.id, preferences, 0, generation(&record.target)),
            record: record.clone(),
            restored: false,
        });
    }

    /// Starts a refresh to `tag` (the new launch, or the current one with a new `#N`); one in progress
    /// is superseded.
    pub(super) fn start_refresh(
        &mut self,
        group: &ScalingGroup,
        preferences: (u32, u32),
        cause: &str,
        fresh_tag: bool,
        metrics: &ScalingMetrics,
    ) {
        self.stop_refresh(group, "superseded by a newer refresh", metrics);
        let id = self.refresh.as_ref().map_or(1, |r| r.record.id + 1);
        if fresh_tag {
            self.launch = format!("{}#{id}", tag_launch(&self.launch));
        }
        let (min, max) = preferences;
        let settings = InstanceRefresh {
            min_healthy_percent: min,
            max_healthy_percent: max,
            auto_rollback: false,
            on_launch_change: group.instance_refresh.on_launch_change,
        };
        self.refresh = Some(FleetRefresh {
            refresh: Refresh::new(id, settings, 0, generation(&self.launch)),
            record: RefreshRecord {
                id,
                status: "pending".into(),
                reason: String::new(),
                cause: cause.to_string(),
                target: self.launch.clone(),
                min_healthy_percent: min,
                max_healthy_percent: max,
                percentage_complete: 0,
                skipped_protected: Vec::new(),
                started_at_ms: now_ms(),
                ended_at_ms: None,
            },
            restored: false,
        });
        let text = format!(
            "instance refresh {id} started ({cause}): min_healthy_percent {min}, max_healthy_percent {max} (no rollback in fleet mode)"
        );
        self.activity(group, metrics, "refresh", text);
    }

    /// Ends the refresh in progress; its records not in service yet leave.
    pub(super) fn stop_refresh(
        &mut self,
        group: &ScalingGroup,
        reason: &str,
        metrics: &ScalingMetrics,
    ) {
        let Some(running) = self.refresh.as_mut() else {
            return;
        };
        if running.refresh.status.is_done() {
            return;
        }
        running.refresh.cancel(reason);
        running.record.ended_at_ms = Some(now_ms());
        let (id, target) = (running.record.id, running.record.target.clone());
        self.stop_pending(&target);
        let text = format!("instance refresh {id} {reason}; the instances replaced so far stay");
        self.activity(group, metrics, "refresh", text);
    }

    fn stop_pending(&mut self, tag: &str) {
        let mut stopped = Vec::new();
        for r in &mut self.records {
            let tagged = r.launch.as_deref().unwrap_or(&self.launch) == tag;
            if tagged && !r.terminating && !r.warm && r.in_service_at_ms.is_none() {
                r.terminating = true;
                stopped.push(r.id.clone());
            }
        }
        self.changed.extend(stopped);
    }

    /// A record of the refresh's launch failed before going in service.
    pub(super) fn refresh_failed(
        &mut self,
        group: &ScalingGroup,
        tag: &str,
        why: &str,
        metrics: &ScalingMetrics,
    ) {
        let Some(running) = self.refresh.as_mut() else {
            return;
        };
        if running.refresh.status.is_done() || running.record.target != tag {
            return;
        }
        if running.refresh.failed(why) == RefreshFailure::Failed {
            running.record.ended_at_ms = Some(now_ms());
            let (id, reason) = (running.record.id, running.refresh.reason.clone());
            self.stop_pending(tag);
            let text = format!(
                "instance refresh {id} failed: {reason} (no rollback in fleet mode: the nodes know only the current launch)"
            );
            self.activity(group, metrics, "refresh", text);
        }
    }

    pub(super) fn refresh_succeeded(&mut self, tag: &str) {
        if let Some(running) = self.refresh.as_mut() {
            if running.record.target == tag {
                running.refresh.succeeded();
            }
        }
    }

    /// While a refresh runs: the old records it lets go now leave, and the capacity to converge to.
    pub(super) fn refresh_step(
        &mut self,
        group: &ScalingGroup,
        now: Instant,
        now_ms: u64,
        metrics: &ScalingMetrics,
    ) -> Option<u32> {
        let running = self.refresh.as_ref()?;
        if running.refresh.status.is_done() {
            return None;
        }
        if tag_launch(&running.record.target) != tag_launch(&self.launch) {
            self.stop_refresh(group, "stopped: the launch changed under it", metrics);
            return None;
        }
        let live: Vec<usize> = (0..self.records.len())
            .filter(|&i| !self.records[i].terminating && !self.records[i].warm)
            .collect();
        let instances: Vec<(Instance, u64)> = live
            .iter()
            .map(|&i| {
                let r = &self.records[i];
                (instance_of(r, now_ms, now), generation(self.tag_of(r)))
            })
            .collect();
        let members: Vec<Member> = instances
            .iter()
            .map(|(instance, generation)| Member {
                instance,
                generation: *generation,
            })
            .collect();
        let desired = self.decider.desired();
        let running = self.refresh.as_mut()?;
        let step = running.refresh.step(&members, desired);
        let id = running.record.id;
        let done = running.refresh.status.is_done();
        if done {
            running.record.ended_at_ms = Some(now_ms);
            let text = match running.refresh.reason.as_str() {
                "" => format!("instance refresh {id} successful: every instance replaced"),
                reason => format!("instance refresh {id} successful: {reason}"),
            };
            self.activity(group, metrics, "refresh", text);
        }
        for k in step.terminate {
            let record = &mut self.records[live[k]];
            record.terminating = true;
            let rid = record.id.clone();
            self.changed.insert(rid.clone());
            let text =
                format!("instance {rid} terminating (instance refresh {id}, replaced): draining");
            self.activity(group, metrics, "terminate", text);
        }
        Some(step.capacity)
    }
}
