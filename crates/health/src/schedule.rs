//! When each target is probed.
//!
//! - The first probe comes within the first second (or interval, if shorter) after a target appears, so
//!   a new target leaves `initial` quickly.
//! - The second comes a random fraction of an interval after the first: that one draw spreads the probes
//!   of a whole group evenly over the interval, so 100 targets are not probed in one burst.
//! - After that, every interval minus up to 5% jitter, so targets do not fall back into step, and a probe
//!   is never more than one interval after the previous one: a recovered target is healthy again within
//!   `healthy_threshold × interval` plus one interval.

use std::time::Duration;

const FIRST_PROBE_WITHIN: Duration = Duration::from_secs(1);

/// Delays between the probes of one target.
#[derive(Debug)]
pub struct ProbeSchedule {
    interval: Duration,
    probes: u64,
    rng: fastrand::Rng,
}

impl ProbeSchedule {
    pub fn new(interval: Duration, rng: fastrand::Rng) -> Self {
        ProbeSchedule {
            interval,
            probes: 0,
            rng,
        }
    }

    /// How long to wait before the next probe.
    pub fn next_delay(&mut self) -> Duration {
        let n = self.probes;
        self.probes += 1;
        match n {
            0 => self
                .interval
                .min(FIRST_PROBE_WITHIN)
                .mul_f64(self.rng.f64()),
            1 => self.interval.mul_f64(self.rng.f64()),
            _ => self.interval.mul_f64(1.0 - 0.05 * self.rng.f64()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_probe_is_quick_and_later_ones_never_exceed_the_interval() {
        let interval = Duration::from_secs(30);
        for seed in 0..200 {
            let mut s = ProbeSchedule::new(interval, fastrand::Rng::with_seed(seed));
            assert!(s.next_delay() < Duration::from_secs(1));
            assert!(s.next_delay() < interval);
            for _ in 0..10 {
                let d = s.next_delay();
                assert!(d <= interval && d >= interval.mul_f64(0.95), "{d:?}");
            }
        }
    }

    #[test]
    fn short_intervals_bound_the_first_probe_too() {
        let interval = Duration::from_millis(200);
        for seed in 0..50 {
            let mut s = ProbeSchedule::new(interval, fastrand::Rng::with_seed(seed));
            assert!(s.next_delay() < interval);
        }
    }

    #[test]
    fn a_group_is_spread_over_the_interval() {
        // 100 targets appear together: where in the interval does each one's steady probe phase land?
        let interval = Duration::from_secs(30);
        let mut buckets = [0usize; 10];
        for seed in 0..100 {
            let mut s = ProbeSchedule::new(interval, fastrand::Rng::with_seed(seed));
            let phase = s.next_delay() + s.next_delay();
            let slot = (phase.as_secs_f64() / interval.as_secs_f64() * 10.0) as usize;
            buckets[slot.min(9)] += 1;
        }
        // A burst would put everything in the first slot; spread out, no tenth of the interval holds
        // more than a quarter of the group.
        assert!(buckets.iter().all(|&n| n < 25), "{buckets:?}");
    }
}
