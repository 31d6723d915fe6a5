//! Choosing a target inside a group.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use trellis_config::Algorithm;

use crate::{SmoothSchedule, Target};

/// The targets already tried for one request (the first attempt and at most two retries), so a retry
/// goes to another target.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tried {
    indices: [usize; 8],
    len: usize,
}

impl Tried {
    pub fn insert(&mut self, index: usize) {
        if self.len < self.indices.len() {
            self.indices[self.len] = index;
            self.len += 1;
        }
    }

    pub fn contains(&self, index: usize) -> bool {
        self.indices[..self.len].contains(&index)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every target may be picked again (a retry policy with more tries than the group has targets).
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// What a pick may choose from: targets not tried yet, with fewer than `limit` requests in flight.
struct Within<'a> {
    tried: &'a Tried,
    limit: u32,
}

/// A pick: which target, and whether it was chosen only because no routable candidate was left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    pub index: usize,
    pub failed_open: bool,
}

/// The targets of one group in one snapshot and the policy that spreads requests over them.
#[derive(Debug)]
pub struct Balancer {
    targets: Box<[Target]>,
    algorithm: Algorithm,
    schedule: SmoothSchedule,
    /// Where least-outstanding starts scanning, so ties rotate instead of piling on the first target.
    rotation: AtomicUsize,
    /// `slow_start`: zero when off.
    slow_start: Duration,
    /// State of the generator that thins out the picks of targets in slow start.
    dice: AtomicU64,
}

impl Balancer {
    pub fn new(targets: Vec<Target>, algorithm: Algorithm) -> Self {
        let weights: Vec<u16> = targets.iter().map(|t| t.weight).collect();
        Balancer {
            schedule: SmoothSchedule::new(&weights),
            targets: targets.into_boxed_slice(),
            algorithm,
            rotation: AtomicUsize::new(0),
            slow_start: Duration::ZERO,
            dice: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
        }
    }

    /// A target that becomes routable (new, recovered, back from ejection) then gets a share of its
    /// weight that grows linearly over `window` (ALB's slow start, Envoy's slow start mode). Composes
    /// with both algorithms: a pick that lands on a ramping target keeps it with the probability of its
    /// ramp, else moves on.
    pub fn with_slow_start(mut self, window: Duration) -> Self {
        self.slow_start = window;
        self
    }

    /// Whether a pick that landed on `index` keeps it, given its slow start (`now` is `None` when off).
    fn ramped(&self, index: usize, now: Option<Instant>) -> bool {
        let Some(now) = now else { return true };
        let share = self.targets[index].stats.ramp(now, self.slow_start);
        share >= 1.0 || self.roll() < share
    }

    /// A number in [0, 1): xorshift64; concurrent rolls may see the same state, which only repeats a roll.
    fn roll(&self) -> f64 {
        let mut x = self.dice.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.dice.store(x, Ordering::Relaxed);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    fn slow_start_now(&self) -> Option<Instant> {
        (!self.slow_start.is_zero()).then(Instant::now)
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Picks a target not yet tried, preferring routable (healthy, not ejected) ones. When no untried
    /// candidate is routable, fails open over all of them, as ALB does: a possibly-down target beats a
    /// certain 503. `None` when nothing is left (no targets, all tried, or every weight 0).
    pub fn pick(&self, tried: &Tried) -> Option<Pick> {
        self.pick_within(tried, u32::MAX)
    }

    /// Whether [`Self::pick`] would find a target (failing open included), without picking one: the
    /// round-robin schedule does not move.
    pub fn any_candidate(&self, tried: &Tried) -> bool {
        let within = Within {
            tried,
            limit: u32::MAX,
        };
        (0..self.targets.len()).any(|i| self.candidate(i, &within, false))
    }

    /// [`Self::pick`] among the targets with fewer than `limit` requests in flight.
    pub fn pick_within(&self, tried: &Tried, limit: u32) -> Option<Pick> {
        let tried = &Within { tried, limit };
        let pick = |routable_only: bool| match self.algorithm {
            Algorithm::RoundRobin => self.round_robin(tried, routable_only),
            Algorithm::LeastOutstanding => self.least_outstanding(tried, routable_only),
        };
        if let Some(index) = pick(true) {
            return Some(Pick {
                index,
                failed_open: false,
            });
        }
        pick(false).map(|index| Pick {
            index,
            failed_open: true,
        })
    }

    fn candidate(&self, index: usize, within: &Within, routable_only: bool) -> bool {
        let t = &self.targets[index];
        t.weight > 0
            && !within.tried.contains(index)
            && (!routable_only || t.stats.is_routable())
            && (within.limit == u32::MAX || t.stats.in_flight() < within.limit)
    }

    fn round_robin(&self, tried: &Within, routable_only: bool) -> Option<usize> {
        let now = self.slow_start_now();
        // A candidate passed over for its slow start, taken when nothing else is left.
        let mut ramping = None;
        // Almost always the first draw is a candidate; a full period visits every positive weight.
        for _ in 0..self.schedule.period() {
            let index = self.schedule.next()?;
            if self.candidate(index, tried, routable_only) {
                if self.ramped(index, now) {
                    return Some(index);
                }
                ramping.get_or_insert(index);
            }
        }
        ramping
    }

    /// Fewest in-flight requests relative to weight (a target of weight 3 is "as loaded" with 3 in flight
    /// as one of weight 1 with 1); ties go to the heavier target, then to the scan order, which rotates.
    fn least_outstanding(&self, tried: &Within, routable_only: bool) -> Option<usize> {
        let n = self.targets.len();
        if n == 0 {
            return None;
        }
        let start = self.rotation.fetch_add(1, Ordering::Relaxed) % n;
        let now = self.slow_start_now();
        let mut ramping = None;
        let mut best: Option<(usize, u64, u64)> = None;
        for k in 0..n {
            let index = (start + k) % n;
            if !self.candidate(index, tried, routable_only) {
                continue;
            }
            if !self.ramped(index, now) {
                ramping.get_or_insert(index);
                continue;
            }
            let t = &self.targets[index];
            let (load, weight) = (u64::from(t.stats.in_flight()), u64::from(t.weight));
            let better = match best {
                None => true,
                Some((_, best_load, best_weight)) => {
                    let (lhs, rhs) = (load * best_weight, best_load * weight);
                    lhs < rhs || (lhs == rhs && weight > best_weight)
                }
            };
            if better {
                best = Some((index, load, weight));
            }
        }
        best.map(|(index, _, _)| index).or(ramping)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CheckMode, TargetRegistry};
    use proptest::prelude::*;
    use std::time::Instant;

    /// Targets of a group without health checks: all routable.
    fn group(weights: &[u16], algorithm: Algorithm) -> Balancer {
        let registry = TargetRegistry::default();
        let targets = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| {
                let address = format!("127.0.0.1:{}", 1000 + i).parse().unwrap();
                let stats = registry.stats("g", address);
                stats.configure(CheckMode::Disabled, Instant::now());
                Target {
                    address,
                    weight,
                    stats,
                }
            })
            .collect();
        Balancer::new(targets, algorithm)
    }

    fn counts(b: &Balancer, n: usize) -> Vec<usize> {
        let mut c = vec![0; b.targets().len()];
        for _ in 0..n {
            c[b.pick(&Tried::default()).unwrap().index] += 1;
        }
        c
    }

    #[test]
    fn a_target_in_slow_start_gets_a_small_share_under_both_algorithms() {
        for algorithm in [Algorithm::RoundRobin, Algorithm::LeastOutstanding] {
            let b = group(&[1, 1], algorithm).with_slow_start(Duration::from_secs(3600));
            // Target 0 has been routable for long; target 1 has just become routable.
            b.targets()[0].stats.routable_for_long();
            let c = counts(&b, 4000);
            // At the ramp's floor (5% of its weight): a few percent of the picks (round robin about
            // 5% / 105%; least outstanding, idle, half that: it wins only the ties it is scanned first in).
            assert!((40..=320).contains(&c[1]), "{algorithm:?}: {c:?}");
            // Every pick found a target: the ramp thins picks out, it never fails them open.
            assert_eq!(c[0] + c[1], 4000);
        }
        // All ramping together: even shares, as without slow start.
        let b = group(&[1, 1], Algorithm::RoundRobin).with_slow_start(Duration::from_secs(3600));
        let c = counts(&b, 2000);
        assert!(c[0].abs_diff(c[1]) < 300, "{c:?}");
        // Off: the ramp plays no part.
        let b = group(&[1, 1], Algorithm::RoundRobin);
        assert_eq!(counts(&b, 40), vec![20, 20]);
    }

    #[test]
    fn per_target_weights_round_robin() {
        let b = group(&[1, 3], Algorithm::RoundRobin);
        assert_eq!(counts(&b, 40), vec![10, 30]);
    }

    #[test]
    fn retries_skip_tried_targets() {
        let b = group(&[1, 1, 1], Algorithm::RoundRobin);
        let mut tried = Tried::default();
        for _ in 0..3 {
            let p = b.pick(&tried).unwrap();
            assert!(!tried.contains(p.index));
            tried.insert(p.index);
        }
        assert_eq!(b.pick(&tried), None);
    }

    #[test]
    fn unroutable_targets_are_avoided_then_failed_open() {
        let b = group(&[1, 1], Algorithm::RoundRobin);
        b.targets()[0].stats.drain("test", Instant::now());
        assert!(counts(&b, 10).eq(&vec![0, 10]));
        b.targets()[1].stats.drain("test", Instant::now());
        let p = b.pick(&Tried::default()).unwrap();
        assert!(p.failed_open);
    }

    #[test]
    fn least_outstanding_prefers_idle_targets() {
        let b = group(&[1, 1, 1], Algorithm::LeastOutstanding);
        let _busy = [
            b.targets()[0].begin(),
            b.targets()[0].begin(),
            b.targets()[2].begin(),
        ];
        for _ in 0..5 {
            assert_eq!(b.pick(&Tried::default()).unwrap().index, 1);
        }
    }

    #[test]
    fn least_outstanding_weighs_load_and_breaks_ties_by_weight() {
        let b = group(&[1, 3], Algorithm::LeastOutstanding);
        // Both idle: tie on load, the heavier wins.
        assert_eq!(b.pick(&Tried::default()).unwrap().index, 1);
        // 2 in flight on weight 3 (2/3) beats 1 in flight on weight 1 (1/1).
        let _a = b.targets()[0].begin();
        let _b = [b.targets()[1].begin(), b.targets()[1].begin()];
        assert_eq!(b.pick(&Tried::default()).unwrap().index, 1);
    }

    #[test]
    fn in_flight_guard_counts() {
        let b = group(&[1], Algorithm::LeastOutstanding);
        let g = b.targets()[0].begin();
        assert_eq!(b.targets()[0].stats.in_flight(), 1);
        assert_eq!(b.targets()[0].stats.completed(), 0);
        drop(g);
        assert_eq!(b.targets()[0].stats.in_flight(), 0);
        assert_eq!(b.targets()[0].stats.completed(), 1);
    }

    proptest! {
        #[test]
        fn full_period_counts_equal_weights(weights in proptest::collection::vec(1u16..=50, 1..8)) {
            let b = group(&weights, Algorithm::RoundRobin);
            let total: usize = weights.iter().map(|&w| w as usize).sum();
            let g = weights.iter().fold(0usize, |g, &w| num_gcd(g, w as usize));
            let c = counts(&b, total / g);
            for (i, &w) in weights.iter().enumerate() {
                prop_assert_eq!(c[i], w as usize / g);
            }
        }

        #[test]
        fn least_outstanding_never_picks_a_busier_target(loads in proptest::collection::vec(0usize..5, 2..6)) {
            let b = group(&vec![1; loads.len()], Algorithm::LeastOutstanding);
            let _guards: Vec<_> = loads.iter().enumerate()
                .flat_map(|(i, &n)| (0..n).map(move |_| i))
                .map(|i| b.targets()[i].begin())
                .collect();
            let p = b.pick(&Tried::default()).unwrap();
            prop_assert_eq!(loads[p.index], *loads.iter().min().unwrap());
        }
    }

    fn num_gcd(a: usize, b: usize) -> usize {
        if b == 0 {
            a
        } else {
            num_gcd(b, a % b)
        }
    }
}
