//! The warm pool (`[scaling_group.warm_pool]`): instances launched ahead of need and kept running out of
//! service, so that a scale-out takes one that has already booted and passed its health check instead
//! of waiting for a boot. The pool always holds the current launch: instances of an older generation
//! leave it, and it refills after every scale-out.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use trellis_config::HealthCheck;
use trellis_scaler::Lifecycle;
use trellis_targets::ProbeResult;

use super::Controller;
use crate::daemon::Daemon;

/// The health check of `target_group` as the configuration has it now, when it is on.
pub(super) fn enabled_check(daemon: &Daemon, target_group: &str) -> Option<HealthCheck> {
    daemon
        .current()
        .file
        .target_groups
        .iter()
        .find(|t| t.name == target_group)
        .map(|t| t.health_check.clone())
        .filter(|c| c.enabled)
}

/// A warm instance's own health checking, on a single node and on a fleet's node alike (no prober of
/// the health checker looks at it: it is in no target group). It is probed with its target group's
/// check every tick until it passes (a boot is what the pool hides), then every `interval`, so that
/// one that stops answering is not put in service.
#[derive(Default)]
pub(super) struct WarmProbe {
    probe: Option<JoinHandle<ProbeResult>>,
    passed_at: Option<Instant>,
    ready: bool,
}

/// What one step of a [`WarmProbe`] saw.
pub(super) enum Probed {
    Same,
    /// It passed, and was not ready before: the probe's detail.
    Ready(String),
    /// It failed, and was ready before.
    Lost(String),
}

impl WarmProbe {
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Health checks off: ready at once, as a target that is `unavailable` takes requests. Whether it
    /// was not before.
    pub fn ready_unchecked(&mut self) -> bool {
        !std::mem::replace(&mut self.ready, true)
    }

    /// Whether it last passed within `window`.
    pub fn passed_within(&self, window: Duration) -> bool {
        self.passed_at.is_some_and(|at| at.elapsed() <= window)
    }

    /// Takes a finished probe's result, or starts the next probe when one is due.
    pub async fn step(&mut self, check: &HealthCheck, address: SocketAddr, now: Instant) -> Probed {
        match self.probe.take() {
            Some(probe) if !probe.is_finished() => {
                self.probe = Some(probe);
                Probed::Same
            }
            Some(probe) => {
                let Ok(result) = probe.await else {
                    return Probed::Same;
                };
                match (result.passed, self.ready) {
                    (true, was_ready) => {
                        self.passed_at = Some(now);
                        self.ready = true;
                        if was_ready {
                            Probed::Same
                        } else {
                            Probed::Ready(result.detail)
                        }
                    }
                    (false, true) => {
                        self.ready = false;
                        Probed::Lost(result.detail)
                    }
                    (false, false) => Probed::Same,
                }
            }
            None if !self.ready
                || self
                    .passed_at
                    .is_none_or(|at| now.saturating_duration_since(at) >= check.interval) =>
            {
                let check = check.clone();
                self.probe = Some(tokio::spawn(async move {
                    trellis_health::probe(&check, address).await
                }));
                Probed::Same
            }
            None => Probed::Same,
        }
    }
}

impl Controller {
    /// Warm instances that may go in service now: launching hooks done, health check passed.
    pub(super) fn warm_ready(&self) -> usize {
        self.instances
            .iter()
            .filter(|i| {
                i.meta.state == Lifecycle::Warmed
                    && i.warm.is_ready()
                    && i.generation == self.generation
            })
            .count()
    }

    /// Every tick: probes the warm instances that have not passed their check yet, lets go of those the
    /// pool no longer wants (an older launch, a smaller pool, a retiring group), and refills it.
    pub(super) async fn tend_pool(&mut self, daemon: &Daemon, now: Instant) {
        let size = match (self.group.warm_pool, self.retiring) {
            (Some(pool), false) => pool.size as usize,
            _ => 0,
        };
        let check = enabled_check(daemon, &self.group.target_group);
        self.warm_fresh = check
            .as_ref()
            .map_or(Duration::ZERO, |c| c.interval + c.timeout);
        // Which warm instances the pool keeps: of the current launch, ready ones first (an instance
        // back from a scale-in beats one still booting), then the oldest.
        let mut pool: Vec<usize> = (0..self.instances.len())
            .filter(|&i| self.instances[i].meta.state == Lifecycle::Warmed)
            .collect();
        pool.sort_by_key(|&i| {
            let live = &self.instances[i];
            (
                live.generation != self.generation,
                !live.warm.is_ready(),
                live.meta.launched_at,
            )
        });
        // Past max_instance_lifetime in the pool: replaced there, not taken into service to be
        // replaced at once.
        let lifetime = self.group.max_instance_lifetime;
        let expired = |i: usize| {
            lifetime.is_some_and(|l| {
                now.saturating_duration_since(self.instances[i].meta.launched_at) >= l
            })
        };
        let leaving: Vec<usize> = pool
            .iter()
            .enumerate()
            .filter(|&(rank, &i)| {
                rank >= size || self.instances[i].generation != self.generation || expired(i)
            })
            .map(|(_, &i)| i)
            .collect();
        let kept = pool.len() - leaving.len();
        let mut warmed = Vec::new();
        let mut cooled = Vec::new();
        let mut never = Vec::new();
        let grace = self.group.health_check_grace_period;
        for &i in &pool {
            let live = &mut self.instances[i];
            if leaving.contains(&i) || live.hook.is_some() {
                continue;
            }
            let since = *live.warm_since.get_or_insert(now);
            // As a pending instance is replaced when unhealthy past the grace period: a warm one that
            // has not passed by then (and the checks an unhealthy verdict takes), counted from when it
            // entered the pool with its hooks done, is not going to.
            if let Some(check) = check.as_ref().filter(|_| !live.warm.is_ready()) {
                let limit = grace + check.interval * check.unhealthy_threshold;
                if now.saturating_duration_since(since) >= limit {
                    never.push((i, limit));
                    continue;
                }
            }
            let Some(check) = check.as_ref() else {
                if live.warm.ready_unchecked() {
                    warmed.push((live.meta.id.clone(), "health checks are off".into()));
                }
                continue;
            };
            match live.warm.step(check, live.address, now).await {
                Probed::Same => {}
                Probed::Ready(detail) => warmed.push((live.meta.id.clone(), detail)),
                Probed::Lost(detail) => cooled.push((live.meta.id.clone(), detail)),
            }
        }
        for (i, limit) in never {
            let live = &mut self.instances[i];
            live.meta.terminate();
            let (id, generation) = (live.meta.id.clone(), live.generation);
            let wait = self.backoff.failed(now);
            self.activity(
                "replace",
                format!(
                    "warm instance {id} did not pass its health check within {}; replacing it, next launch in {wait:?}",
                    humantime::format_duration(limit)
                ),
            );
            self.refresh_failure(generation, &format!("{id} never passed its health check"));
        }
        for (id, detail) in cooled {
            self.activity(
                "warm_failed",
                format!("warm instance {id} failed its health check ({detail}); not ready until it passes again"),
            );
        }
        if !warmed.is_empty() {
            self.backoff.succeeded();
        }
        for (id, detail) in warmed {
            self.activity(
                "warmed",
                format!("instance {id} is warm: passed its health check ({detail}); ready for a scale-out"),
            );
        }
        for &i in &leaving {
            let live = &mut self.instances[i];
            live.meta.terminate();
            let id = live.meta.id.clone();
            self.activity(
                "terminate",
                format!("warm instance {id} terminating: the pool no longer needs it"),
            );
        }
        if kept < size && self.backoff.ready(now) {
            for _ in kept..size {
                if !self.launch_instance(now, true).await {
                    break;
                }
            }
        }
    }

    /// Takes up to `wanted` ready warm instances into service, oldest first; returns how many.
    pub(super) fn take_warm(&mut self, wanted: u32) -> u32 {
        let mut ready: Vec<usize> = (0..self.instances.len())
            .filter(|&i| {
                let live = &self.instances[i];
                live.meta.state == Lifecycle::Warmed
                    && live.warm.is_ready()
                    && live.generation == self.generation
            })
            .collect();
        ready.sort_by_key(|&i| self.instances[i].meta.launched_at);
        ready.truncate(wanted as usize);
        let fresh = self.warm_fresh;
        for &i in &ready {
            let live = &mut self.instances[i];
            live.meta.state = Lifecycle::Pending;
            live.admitted = true;
            // Healthy at once only on a pass within the check's interval; else its prober decides.
            if live.warm.passed_within(fresh) {
                self.vouch.push(live.address);
            }
            live.warm = WarmProbe::default();
            let id = live.meta.id.clone();
            self.dirty = true;
            self.activity(
                "warm_to_service",
                format!("instance {id} taken from the warm pool into service"),
            );
        }
        if !ready.is_empty() {
            // A restart must adopt them as serving now, not as warm.
            self.save_records();
        }
        ready.len() as u32
    }

    /// After the target group took the instances from the pool: their check passed in the pool, so
    /// they are healthy at once instead of waiting for their prober's first turn.
    pub(super) fn vouch_for_warmed(&mut self, daemon: &Daemon) {
        for address in std::mem::take(&mut self.vouch) {
            daemon.vouch(
                &self.group.target_group,
                address,
                ProbeResult::pass("passed its health check in the warm pool"),
            );
        }
    }

    /// A drained instance of a scale-in goes back to the pool when it has room (`reuse_on_scale_in`).
    pub(super) fn back_to_pool(&mut self, i: usize) -> bool {
        let size = match self.group.warm_pool {
            Some(pool) if pool.reuse_on_scale_in && !self.retiring => pool.size as usize,
            _ => return false,
        };
        // Room: fewer ready instances than the pool's size (one still booting gives way to it).
        let room = self.warm_ready() < size;
        let live = &mut self.instances[i];
        if !room || !live.reuse || live.generation != self.generation {
            return false;
        }
        live.reuse = false;
        live.meta.state = Lifecycle::Warmed;
        live.meta.in_service_at = None;
        live.admitted = false;
        // Checked again before it serves: it may have changed while it drained.
        live.warm = WarmProbe::default();
        live.warm_since = None;
        let id = live.meta.id.clone();
        self.save_records();
        self.activity(
            "to_warm_pool",
            format!("instance {id} drained and returned to the warm pool (reuse_on_scale_in)"),
        );
        true
    }
}
