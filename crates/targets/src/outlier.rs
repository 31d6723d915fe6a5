//! Passive ejection: a target that fails requests in a row is taken out of rotation for a while, without
//! waiting for the next probe.

use std::time::{Duration, Instant};

use trellis_config::OutlierDetection;

/// One target's ejection history.
#[derive(Debug, Clone, Default)]
pub struct Ejections {
    /// Ejections so far; each lasts `base_ejection_time` times this, capped at `max_ejection_time`.
    count: u32,
    until: Option<Instant>,
    returned_at: Option<Instant>,
    /// Numbers every ejection, so a timer set for an earlier one cannot end a later one.
    serial: u64,
}

impl Ejections {
    pub fn ejected_until(&self) -> Option<Instant> {
        self.until
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// The current (or last) ejection's number.
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// Ejects the target and returns for how long. A target that then behaved for a whole
    /// `max_ejection_time` is forgiven: its next ejection counts from one again.
    pub fn eject(&mut self, cfg: &OutlierDetection, now: Instant) -> Duration {
        self.serial += 1;
        if self
            .returned_at
            .is_some_and(|back| now.saturating_duration_since(back) >= cfg.max_ejection_time)
        {
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        let time = cfg
            .base_ejection_time
            .saturating_mul(self.count)
            .min(cfg.max_ejection_time);
        self.until = Some(now + time);
        time
    }

    /// Brings the target back; `false` when it was not ejected.
    pub fn end(&mut self, now: Instant) -> bool {
        if self.until.take().is_none() {
            return false;
        }
        self.returned_at = Some(now);
        true
    }
}

/// How many of a group's `members` may be ejected at once.
pub fn ejection_budget(members: usize, max_ejection_percent: u8) -> usize {
    members * usize::from(max_ejection_percent) / 100
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OutlierDetection {
        OutlierDetection {
            enabled: true,
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(100),
            max_ejection_percent: 50,
        }
    }

    #[test]
    fn ejection_time_grows_with_each_ejection_and_is_capped() {
        let t0 = Instant::now();
        let mut e = Ejections::default();
        let mut now = t0;
        let mut times = Vec::new();
        for _ in 0..5 {
            let d = e.eject(&cfg(), now);
            assert_eq!(e.ejected_until(), Some(now + d));
            now += d;
            assert!(e.end(now));
            assert!(!e.end(now), "ending twice is a no-op");
            now += Duration::from_secs(1);
            times.push(d.as_secs());
        }
        assert_eq!(times, [30, 60, 90, 100, 100]);
    }

    #[test]
    fn a_target_that_behaves_long_enough_is_forgiven() {
        let t0 = Instant::now();
        let mut e = Ejections::default();
        e.eject(&cfg(), t0);
        e.end(t0 + Duration::from_secs(30));
        let later = t0 + Duration::from_secs(30 + 100);
        assert_eq!(e.eject(&cfg(), later), Duration::from_secs(30));
        assert_eq!(e.count(), 1);
    }

    #[test]
    fn budget_is_a_floor_of_the_percentage() {
        assert_eq!(ejection_budget(3, 50), 1);
        assert_eq!(ejection_budget(4, 50), 2);
        assert_eq!(ejection_budget(1, 50), 0);
        assert_eq!(ejection_budget(10, 100), 10);
        assert_eq!(ejection_budget(10, 0), 0);
    }
}
