//! The allocator, and handing freed memory back to the system.
//!
//! A burst of connections allocates about 30 KiB each while they have a request (hyper's buffers, the
//! request's future) and keeps well under 1 KiB once they are idle and parked. glibc's malloc keeps what
//! is freed in the middle of its heaps for good (measured with `deploy/loadtest/run.sh`, SCENARIO=idle:
//! 9,000 idle keep-alive connections held the burst's peak, 28 KiB each; with `malloc_trim` every 5 s,
//! 9.9 KiB each). jemalloc keeps small blocks of one size together and returns pages nobody uses on a
//! timer (decay): 2.0 KiB each, with the same 9,000 connections parked.
//!
//! Why these settings: `background_thread` purges on a thread of jemalloc's own, so memory also comes
//! back while trellis is idle (otherwise decay advances only when something allocates);
//! `dirty_decay_ms:1000` returns freed pages after about a second instead of ten; `muzzy_decay_ms:0`
//! skips the lazily-freed stage, so RSS shows what is used. `MALLOC_CONF` in the environment can still
//! override any of them (`_RJEM_MALLOC_CONF`).

use prometheus::{IntGauge, Opts, Registry};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A pointer to a C string, which Rust does not let a `static` hold as `*const c_char` (not `Sync`).
#[repr(transparent)]
pub struct Conf(&'static u8);

/// Read by jemalloc when it starts (before `main`); the variable's name is jemalloc's, prefixed.
#[allow(unsafe_code, non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: Conf =
    Conf(&b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0]);

/// What the allocator reports, read when `/metrics` is scraped.
pub struct MemoryGauges {
    allocated: IntGauge,
    resident: IntGauge,
}

impl MemoryGauges {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let allocated = IntGauge::with_opts(Opts::new(
            "trellis_memory_allocated_bytes",
            "Bytes the process has allocated and not freed (jemalloc stats.allocated)",
        ))?;
        let resident = IntGauge::with_opts(Opts::new(
            "trellis_memory_resident_bytes",
            "Bytes of the allocator's pages that are resident, its own bookkeeping included (jemalloc \
             stats.resident); the rest of process_resident_memory_bytes is code, stacks and what \
             other libraries map",
        ))?;
        registry.register(Box::new(allocated.clone()))?;
        registry.register(Box::new(resident.clone()))?;
        Ok(MemoryGauges {
            allocated,
            resident,
        })
    }

    pub fn refresh(&self) {
        // jemalloc's statistics are a snapshot taken at the last epoch: take a new one.
        if tikv_jemalloc_ctl::epoch::advance().is_err() {
            return;
        }
        if let Ok(n) = tikv_jemalloc_ctl::stats::allocated::read() {
            self.allocated.set(n as i64);
        }
        if let Ok(n) = tikv_jemalloc_ctl::stats::resident::read() {
            self.resident.set(n as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    /// The settings above reach jemalloc (a misspelt symbol would leave its defaults in silence).
    #[test]
    fn jemalloc_runs_with_the_settings_of_this_file() {
        // SAFETY: the names are jemalloc's documented options, read with the types it documents.
        #[allow(unsafe_code)]
        let (decay, muzzy) = unsafe {
            (
                tikv_jemalloc_ctl::raw::read::<isize>(b"opt.dirty_decay_ms\0").unwrap(),
                tikv_jemalloc_ctl::raw::read::<isize>(b"opt.muzzy_decay_ms\0").unwrap(),
            )
        };
        assert_eq!((decay, muzzy), (1000, 0));
        assert!(tikv_jemalloc_ctl::background_thread::read().unwrap());
    }
}
