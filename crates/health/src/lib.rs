//! trellis-health: active HTTP, HTTPS and TCP probes. Every checked target has its own prober, whose
//! results drive the target's state machine in trellis-targets; the balancer only ever reads the outcome.
#![forbid(unsafe_code)]

mod checker;
mod metrics;
mod probe;
mod schedule;
mod tls;

pub use checker::{log_transition, HealthChecker};
pub use probe::{probe, probe_address};
pub use schedule::ProbeSchedule;

/// What can go wrong setting health checking up.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("registering health metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}
