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

/// The next target not in `tried`; with a concurrency limit, one with a free slot, waiting for one in
/// the group's queue if need be. `queued` gets the time spent waiting.
pub async fn admit(group: &Group, tried: &Tried, queued: &mut Option<Duration>) -> Admitted {
    let targets = group.balancer.targets();
    let Some(limit) = &group.concurrency else {
        return match group.balancer.pick(tried) {
            Some(pick) => Admitted::Target(pick, targets[pick.index].begin()),
            None => Admitted::NoTarget,
        };
    };
    let Concurrency {
        max_per_target,
        queue,
        queue_timeout,
    } = *limit;
    let mut place = None;
    let mut since = None;
    loop {
        // A pick sees a free slot that another request may take first: a few tries, then the queue.
        for _ in 0..3 {
            let Some(pick) = group.balancer.pick_within(tried, max_per_target) else {
                break;
            };
            if let Some(in_flight) = targets[pick.index].try_begin(max_per_target) {
                if let Some(since) = since {
                    *queued = Some(Instant::now().saturating_duration_since(since));
                }
                return Admitted::Target(pick, in_flight);
            }
        }
        if group.balancer.pick(tried).is_none() {
            return Admitted::NoTarget;
        }
        let started = *since.get_or_insert_with(Instant::now);
        if place.is_none() {
            let Some(entered) = group.stats.queue.enter(queue) else {
                group.metrics.refused_queue_full.inc();
                return Admitted::Overloaded;
            };
            place = Some(Queued::new(entered, &group.metrics.waiting));
            group.metrics.queued.inc();
            // A slot may have freed between the look above and entering: look again before waiting.
            continue;
        }
        let deadline = tokio::time::Instant::from_std(started + queue_timeout);
        if tokio::time::timeout_at(deadline, group.stats.queue.freed())
            .await
            .is_err()
        {
            group.metrics.refused_queue_timeout.inc();
            *queued = Some(Instant::now().saturating_duration_since(started));
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
