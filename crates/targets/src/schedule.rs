//! Smooth weighted round robin, precomputed.
//!
//! nginx's algorithm (every pick: add each weight to its current value, pick the largest, subtract the
//! total from it) interleaves picks instead of clumping them — 5:1:1 gives `a a b a c a a`, not
//! `a a a a a b c`. Its sequence is periodic with period = sum of weights, so we run it once when the
//! snapshot is built and then walk the result with one atomic counter: a pick per request is one
//! `fetch_add` and an index, no lock, and over any full period the counts equal the weights exactly.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Above this many slots the weights are scaled down (keeping ratios approximately) so that a group of
/// many heavily-weighted targets does not cost megabytes.
const MAX_PERIOD: u64 = 1 << 16;

#[derive(Debug)]
pub struct SmoothSchedule {
    order: Box<[u32]>,
    cursor: AtomicUsize,
}

impl SmoothSchedule {
    /// Builds the schedule for `weights` (index = position). Weight 0 entries never appear.
    pub fn new(weights: &[u16]) -> Self {
        let weights = reduce(weights);
        let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
        let mut current = vec![0i64; weights.len()];
        let mut order = Vec::with_capacity(total as usize);
        for _ in 0..total {
            let mut best = 0;
            for (i, &w) in weights.iter().enumerate() {
                current[i] += i64::from(w);
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            order.push(best as u32);
        }
        SmoothSchedule {
            order: order.into_boxed_slice(),
            cursor: AtomicUsize::new(0),
        }
    }

    /// The next index, or `None` when every weight is 0.
    #[inline]
    pub fn next(&self) -> Option<usize> {
        if self.order.is_empty() {
            return None;
        }
        let n = self.cursor.fetch_add(1, Ordering::Relaxed);
        Some(self.order[n % self.order.len()] as usize)
    }

    /// Length of one full period (sum of the reduced weights).
    pub fn period(&self) -> usize {
        self.order.len()
    }
}

/// Divides by the gcd (90:10 is 9:1) and, past [`MAX_PERIOD`], scales down proportionally (never to 0).
fn reduce(weights: &[u16]) -> Vec<u32> {
    let g = weights.iter().fold(0u32, |g, &w| gcd(g, u32::from(w)));
    if g == 0 {
        return vec![0; weights.len()];
    }
    let mut reduced: Vec<u32> = weights.iter().map(|&w| u32::from(w) / g).collect();
    let total: u64 = reduced.iter().map(|&w| u64::from(w)).sum();
    if total > MAX_PERIOD {
        for w in reduced.iter_mut().filter(|w| **w > 0) {
            *w = ((u64::from(*w) * MAX_PERIOD / total) as u32).max(1);
        }
    }
    reduced
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn picks(s: &SmoothSchedule, n: usize) -> Vec<usize> {
        (0..n).map(|_| s.next().unwrap()).collect()
    }

    #[test]
    fn interleaves_like_nginx() {
        let s = SmoothSchedule::new(&[5, 1, 1]);
        assert_eq!(picks(&s, 7), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn ninety_ten_is_nine_to_one_per_ten() {
        let s = SmoothSchedule::new(&[90, 10]);
        assert_eq!(s.period(), 10);
        let p = picks(&s, 100);
        assert_eq!(p.iter().filter(|&&i| i == 1).count(), 10);
        // Smooth: the light one is never picked twice in a row.
        assert!(p.windows(2).all(|w| !(w[0] == 1 && w[1] == 1)));
    }

    #[test]
    fn zero_weights_are_never_picked() {
        let s = SmoothSchedule::new(&[0, 3, 0]);
        assert!(picks(&s, 30).iter().all(|&i| i == 1));
        assert_eq!(SmoothSchedule::new(&[0, 0]).next(), None);
        assert_eq!(SmoothSchedule::new(&[]).next(), None);
    }

    #[test]
    fn huge_groups_stay_bounded() {
        let weights: Vec<u16> = (0..2000).map(|i| 999 - (i % 7) as u16).collect();
        let s = SmoothSchedule::new(&weights);
        assert!(s.period() as u64 <= MAX_PERIOD + weights.len() as u64);
        let mut seen = vec![false; weights.len()];
        for _ in 0..s.period() {
            seen[s.next().unwrap()] = true;
        }
        assert!(
            seen.iter().all(|&x| x),
            "every positive weight keeps at least one slot"
        );
    }

    proptest! {
        #[test]
        fn one_period_gives_exactly_the_weights(weights in proptest::collection::vec(0u16..=999, 1..12)) {
            let s = SmoothSchedule::new(&weights);
            let g = weights.iter().fold(0u32, |g, &w| gcd(g, u32::from(w)));
            prop_assume!(g > 0);
            let mut counts = vec![0u32; weights.len()];
            // Two full periods starting anywhere in the cycle.
            for _ in 0..(s.period() / 3) { s.next(); }
            for _ in 0..2 * s.period() {
                counts[s.next().unwrap()] += 1;
            }
            for (i, &w) in weights.iter().enumerate() {
                prop_assert_eq!(counts[i], 2 * u32::from(w) / g);
            }
        }
    }
}
