//! Handing freed memory back to the system.
//!
//! glibc's malloc keeps what the program frees for its own next allocations, and trims a heap only from
//! its top: after a burst of connections (each holds about 30 KiB while it has a request, a few KiB once
//! idle and parked), the freed pages in the middle of the heap stay resident for good. Measured with
//! `deploy/loadtest/run.sh` (SCENARIO=idle): 9,000 idle keep-alive connections held RSS at the burst's
//! peak, and so did closing all of them. Every few seconds the pages malloc holds free are released
//! (`malloc_trim`), so what trellis holds is what it uses.

use std::time::Duration;

/// How often freed pages are released. Rare enough to cost nothing measurable (a walk of the heap's free
/// lists), often enough that a burst's memory is back within seconds.
const EVERY: Duration = Duration::from_secs(5);

/// Starts the release loop on the runtime (the work itself on a blocking thread).
pub fn spawn_trim() {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim takes a plain integer (the padding to keep at the heap's top) and touches only
    // malloc's own state, under malloc's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators (musl's) return freed memory themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
