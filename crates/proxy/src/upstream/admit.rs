//! Choosing the target for a try, within the group's concurrency limit: a target with a free slot at
//! once, else a place in the group's queue until one frees up (HAProxy's `maxconn` per server with its
//! queue, Envoy's circuit breakers with a pending queue).

use std::time::{Duration, Instant};

use trellis_config::Concurrency;
use trellis_targets::{InFlight, Pick, Tried, Waiting};

use super::Group;

pub enum Admitted {
    /// The target, and its in-flight slot (held until the response has been sent on).
    Target(Pick, InFlight),
    /// Nothing left to pick: no target, or every one tried.
    NoTarget,
    /// Every candidate is at `max_per_target`, and the queue was full or the wait too long.
    Overloaded,
}

/// The next target not in `tried`, when one can take the request now: with a concurrency limit, one
/// with a free slot. `None` when every candidate is at its limit: then [`admit_queued`] waits for one.
/// Not async, so that the request's future carries no queue state unless it has to wait.
pub fn admit(group: &Group, tried: &Tried) -> Option<Admitted> {
    let targets = group.balancer.targets();
    let Some(limit) = &group.concurrency else {
        return Some(match group.balancer.pick(tried) {
            Some(pick) => Admitted::Target(pick, targets[pick.index].begin()),
            None => Admitted::NoTarget,
        });
    };
    if let Some(admitted) = free_slot(group, tried, limit.max_per_target) {
        return Some(admitted);
    }
    if !group.balancer.any_candidate(tried) {
        return Some(Admitted::NoTarget);
    }
    None
}

/// A target below `max` in flight, its slot taken. A pick sees a free slot that another request may
/// take first: a few tries, then give up.
fn free_slot(group: &Group, tried: &Tried, max: u32) -> Option<Admitted> {
    for _ in 0..3 {
        let pick = group.balancer.pick_within(tried, max)?;
        if let Some(in_flight) = group.balancer.targets()[pick.index].try_begin(max) {
            return Some(Admitted::Target(pick, in_flight));
        }
    }
    None
}

/// Waits in the group's queue for a target below `max_per_target` (first come, first served), up to
/// `queue_timeout`; refused at once when the queue is full. `queued` gets the time spent waiting.
pub async fn admit_queued(group: &Group, tried: &Tried, queued: &mut Option<Duration>) -> Admitted {
    let Some(Concurrency {
        max_per_target,
        queue,
        queue_timeout,
    }) = group.concurrency
    else {
        return admit(group, tried).unwrap_or(Admitted::NoTarget);
    };
    let started = Instant::now();
    let Some(place) = group.stats.queue.enter(queue) else {
        group.metrics.refused_queue_full.inc();
        return Admitted::Overloaded;
    };
    let _place = Queued::new(place, &group.metrics.waiting);
    group.metrics.queued.inc();
    let deadline = tokio::time::Instant::from_std(started + queue_timeout);
    loop {
        // A slot may have freed between the caller's look and entering: look before each wait.
        if let Some(admitted) = free_slot(group, tried, max_per_target) {
            *queued = Some(started.elapsed());
            return admitted;
        }
        if !group.balancer.any_candidate(tried) {
            return Admitted::NoTarget;
        }
        if tokio::time::timeout_at(deadline, group.stats.queue.freed())
            .await
            .is_err()
        {
            group.metrics.refused_queue_timeout.inc();
            *queued = Some(started.elapsed());
            return Admitted::Overloaded;
        }
    }
}

/// A place in the queue, counted in the group's `trellis_requests_waiting` while held (also when the
/// client goes away while it waits).
struct Queued<'a> {
    _place: Waiting<'a>,
    gauge: &'a prometheus::IntGauge,
}

impl<'a> Queued<'a> {
    fn new(place: Waiting<'a>, gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        Queued {
            _place: place,
            gauge,
        }
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Target `index` for a sticky request, when it can take it now: it has weight, is routable (healthy,
/// not ejected) and, with a concurrency limit, has a free slot. A sticky request never queues for its
/// target: it is balanced instead.
pub fn admit_sticky(group: &Group, index: usize) -> Option<(Pick, InFlight)> {
    let target = group.balancer.targets().get(index)?;
    if target.weight == 0 || !target.stats.is_routable() {
        return None;
    }
    let in_flight = match &group.concurrency {
        None => target.begin(),
        Some(limit) => target.try_begin(limit.max_per_target)?,
    };
    let pick = Pick {
        index,
        failed_open: false,
    };
    Some((pick, in_flight))
}
