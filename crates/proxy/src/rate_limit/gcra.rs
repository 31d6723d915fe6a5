//! The token bucket as GCRA (the generic cell rate algorithm): one number per bucket, pure arithmetic
//! on nanoseconds, no clock of its own.
//!
//! A bucket holds `burst` tokens and gains one every `interval` (1 / rate). Instead of a token count and
//! a last-refill time, GCRA keeps the bucket's *theoretical arrival time* (TAT): the moment at which the
//! bucket would be full again if no request came. Taking a token moves the TAT one interval later; the
//! bucket is empty when the TAT is a whole bucket (`burst × interval`) ahead of now. Same behaviour as a
//! classic bucket refilled continuously, in 8 bytes, and with two properties the limiter relies on:
//! a bucket whose TAT has passed is full and carries no state at all (it can be forgotten), and the TAT
//! orders buckets by how far from full they are (the eviction order at the key cap).

/// Nanoseconds since the limiter's epoch.
pub type Nanos = u64;

const NANOS_PER_SECOND: f64 = 1e9;

/// The longest interval between tokens: one a day. Rates below that (validation allows any rate above 0)
/// behave as one a day, and no sum of intervals can overflow.
const MAX_INTERVAL: Nanos = 86_400 * 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Time for one token to come back.
    interval: Nanos,
    /// Time for an empty bucket to fill: `burst × interval`.
    capacity: Nanos,
}

impl Gcra {
    pub fn new(requests_per_second: f64, burst: u32) -> Self {
        let interval = (NANOS_PER_SECOND / requests_per_second).round();
        // NaN and infinities cannot pass validation; clamp anyway rather than trust a float cast.
        let interval = if interval.is_finite() && interval >= 1.0 {
            (interval as Nanos).min(MAX_INTERVAL)
        } else if interval.is_finite() {
            1
        } else {
            MAX_INTERVAL
        };
        Gcra {
            interval,
            capacity: interval.saturating_mul(u64::from(burst.max(1))),
        }
    }

    #[cfg(test)]
    pub fn interval(&self) -> Nanos {
        self.interval
    }

    /// Takes one token from the bucket whose TAT is `tat` (`None`: a bucket never used, or forgotten,
    /// which is the same thing: full) at `now`. `Ok(new TAT)` when there was a token; else
    /// `Err(how long until there is one)`, and the bucket is left as it was.
    #[inline]
    pub fn take(&self, tat: Option<Nanos>, now: Nanos) -> Result<Nanos, Nanos> {
        let start = tat.map_or(now, |t| t.max(now));
        let next = start.saturating_add(self.interval);
        let ahead = next - now;
        if ahead <= self.capacity {
            Ok(next)
        } else {
            Err(ahead - self.capacity)
        }
    }

    /// A bucket with this TAT is full at `now`: it carries no state and may be forgotten.
    #[inline]
    pub fn is_full(tat: Nanos, now: Nanos) -> bool {
        tat <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;
    const S: Nanos = 1_000_000_000;

    /// Takes tokens at `now` until one is refused; how many were given and the wait then.
    fn drain(g: &Gcra, tat: &mut Option<Nanos>, now: Nanos) -> (u32, Nanos) {
        let mut given = 0;
        loop {
            match g.take(*tat, now) {
                Ok(t) => {
                    *tat = Some(t);
                    given += 1;
                }
                Err(wait) => return (given, wait),
            }
        }
    }

    #[test]
    fn a_full_bucket_gives_its_burst_then_refuses() {
        let g = Gcra::new(10.0, 5);
        let mut tat = None;
        let now = 7 * S;
        assert_eq!(drain(&g, &mut tat, now), (5, 100 * MS));
        assert_eq!(tat, Some(now + 500 * MS), "refusals leave the bucket alone");
        assert_eq!(g.take(tat, now), Err(100 * MS));
    }

    #[test]
    fn refills_at_the_rate() {
        let g = Gcra::new(10.0, 5);
        let mut tat = None;
        drain(&g, &mut tat, 0);
        assert_eq!(g.take(tat, 99 * MS), Err(MS), "not before one interval");
        assert_eq!(drain(&g, &mut tat, 100 * MS), (1, 100 * MS));
        assert_eq!(
            drain(&g, &mut tat, 350 * MS),
            (2, 50 * MS),
            "2.5 intervals: 2 tokens"
        );
        // Idle long enough to fill up again: the whole burst, never more.
        assert_eq!(drain(&g, &mut tat, 10 * S), (5, 100 * MS));
        // Steady traffic at exactly the rate is never refused.
        let mut tat = None;
        for i in 0..1000 {
            tat = Some(g.take(tat, i * 100 * MS).expect("at the rate"));
        }
    }

    #[test]
    fn wait_is_until_the_next_token() {
        let g = Gcra::new(2.0, 3);
        let mut tat = None;
        assert_eq!(drain(&g, &mut tat, 0), (3, 500 * MS));
        assert_eq!(g.take(tat, 200 * MS), Err(300 * MS));
        assert!(g.take(tat, 500 * MS).is_ok());
    }

    #[test]
    fn fractional_rates() {
        // One every 2 s, a burst of one.
        let g = Gcra::new(0.5, 1);
        assert_eq!(g.interval(), 2 * S);
        let mut tat = None;
        assert_eq!(drain(&g, &mut tat, 0), (1, 2 * S));
        assert_eq!(g.take(tat, 1500 * MS), Err(500 * MS));
        assert_eq!(drain(&g, &mut tat, 2 * S), (1, 2 * S));
        // 1/3 per second does not drift: 30 tokens in 90 s, to the nanosecond's rounding.
        let g = Gcra::new(1.0 / 3.0, 1);
        let mut tat = None;
        let given: u32 = (0..=90).map(|s| drain(&g, &mut tat, s * S).0).sum();
        assert_eq!(given, 31);
    }

    #[test]
    fn burst_one_paces_evenly() {
        let g = Gcra::new(100.0, 1);
        let mut tat = None;
        assert_eq!(drain(&g, &mut tat, 0), (1, 10 * MS));
        assert_eq!(drain(&g, &mut tat, 5 * MS), (0, 5 * MS));
        assert_eq!(drain(&g, &mut tat, 10 * MS), (1, 10 * MS));
    }

    #[test]
    fn a_bucket_is_full_again_once_its_tat_has_passed() {
        let g = Gcra::new(10.0, 5);
        let mut tat = None;
        drain(&g, &mut tat, S);
        let tat = tat.unwrap();
        assert_eq!(tat, S + 500 * MS);
        assert!(!Gcra::is_full(tat, S + 499 * MS));
        assert!(Gcra::is_full(tat, S + 500 * MS));
        // Forgetting it then changes nothing: a full bucket and no bucket give the same answers.
        let (mut kept, mut forgotten) = (Some(tat), None);
        let later = S + 600 * MS;
        assert_eq!(
            drain(&g, &mut kept, later),
            drain(&g, &mut forgotten, later)
        );
    }

    #[test]
    fn extreme_rates_do_not_overflow() {
        let g = Gcra::new(1e-12, 1_000_000);
        assert_eq!(g.interval(), MAX_INTERVAL);
        assert!(g.take(None, u64::MAX - 5).is_ok());
        let g = Gcra::new(1_000_000.0, 1_000_000);
        assert_eq!(g.interval(), 1000);
        let mut tat = None;
        assert_eq!(drain(&g, &mut tat, 0).0, 1_000_000);
    }
}
