//! The retry budget of a target group: retries within the last 10 seconds may not exceed a share of the
//! group's requests in that time (Envoy's and Linkerd's retry budgets, Finagle's before them). Without
//! one, a group whose targets all fail gets every request several times over exactly when it can least
//! take it. A floor lets a quiet group still retry its occasional failure.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Seconds the budget looks back over.
pub const WINDOW_SECS: u64 = 10;
/// Retries always allowed within the window, whatever the requests: one a second.
pub const FLOOR: u64 = 10;

/// Counts per second of the window, in a ring; a slot whose second has passed out of the window is
/// reset when its second comes round again. Approximate under races (two threads resetting one slot at
/// once lose a count or two), which a budget can afford; it takes no lock.
#[derive(Debug, Default)]
pub struct RetryBudget {
    slots: [Slot; WINDOW_SECS as usize],
}

#[derive(Debug, Default)]
struct Slot {
    /// 1 + the second this slot counts; 0 when unused.
    second: AtomicU64,
    requests: AtomicU32,
    retries: AtomicU32,
}

impl RetryBudget {
    /// A request to the group (its first try), at `second` (any monotonic count of seconds).
    pub fn request(&self, second: u64) {
        self.slot(second).requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a retry may be made now, `percent` of the window's requests being the budget; counts it
    /// when it may.
    pub fn try_retry(&self, second: u64, percent: u8) -> bool {
        let (mut requests, mut retries) = (0u64, 0u64);
        for slot in &self.slots {
            let s = slot.second.load(Ordering::Relaxed);
            if s != 0 && s - 1 + WINDOW_SECS > second {
                requests += u64::from(slot.requests.load(Ordering::Relaxed));
                retries += u64::from(slot.retries.load(Ordering::Relaxed));
            }
        }
        let allowed = (requests * u64::from(percent) / 100).max(FLOOR);
        if retries >= allowed {
            return false;
        }
        self.slot(second).retries.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn slot(&self, second: u64) -> &Slot {
        let slot = &self.slots[(second % WINDOW_SECS) as usize];
        let current = slot.second.load(Ordering::Relaxed);
        if current != second + 1
            && slot
                .second
                .compare_exchange(current, second + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            slot.requests.store(0, Ordering::Relaxed);
            slot.retries.store(0, Ordering::Relaxed);
        }
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_the_share_of_requests_above_the_floor() {
        let b = RetryBudget::default();
        for _ in 0..1000 {
            b.request(5);
        }
        let granted = (0..1000).filter(|_| b.try_retry(5, 20)).count();
        assert_eq!(granted, 200);
    }

    #[test]
    fn a_quiet_group_still_gets_the_floor() {
        let b = RetryBudget::default();
        b.request(0);
        let granted = (0..100).filter(|_| b.try_retry(0, 20)).count();
        assert_eq!(granted as u64, FLOOR);
        // A budget of 0% is the floor too.
        let b = RetryBudget::default();
        assert_eq!((0..100).filter(|_| b.try_retry(3, 0)).count() as u64, FLOOR);
    }

    #[test]
    fn the_window_moves_on() {
        let b = RetryBudget::default();
        assert_eq!((0..50).filter(|_| b.try_retry(0, 20)).count() as u64, FLOOR);
        // Still within 10 s of those retries: nothing more.
        assert!(!b.try_retry(9, 20));
        // 10 s later they are out of the window.
        assert!(b.try_retry(10, 20));
        // Requests from long ago do not count either.
        let b = RetryBudget::default();
        for _ in 0..1000 {
            b.request(0);
        }
        assert_eq!(
            (0..500).filter(|_| b.try_retry(20, 20)).count() as u64,
            FLOOR
        );
    }

    #[test]
    fn requests_spread_over_the_window_all_count() {
        let b = RetryBudget::default();
        for second in 100..110 {
            for _ in 0..100 {
                b.request(second);
            }
        }
        assert_eq!((0..1000).filter(|_| b.try_retry(109, 10)).count(), 100);
    }
}
