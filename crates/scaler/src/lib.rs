//! trellis-scaler: the Auto Scaling group behind a target group, for one machine.
//!
//! This crate starts with the parts that must be exactly right and are therefore pure: the capacity
//! decision ([`Decider`]), fed one [`Sample`] of the group's own request metrics per evaluation period,
//! and the instance lifecycle ([`Instance`], [`Backoff`]). Time is always passed in, so every rule —
//! cooldown, warm-up, the scale-in margin, crash-loop back-off — is tested with simulated time.
// Unsafe only where the kernel is asked for something std cannot (parent-death signal, signalling a process
// group), each with its justification.
#![deny(unsafe_code)]

mod command;
mod decide;
mod lifecycle;
mod policy;
mod process;
mod refresh;
mod schedule;

pub use command::{CommandProvider, HookInstance};
pub use decide::{Decider, Decision, Sample};
pub use lifecycle::{renewal, Backoff, Instance, Lifecycle, Renewal, Replace};
pub use policy::{value as metric_value, Proposal};
pub use process::{ProcessInstance, ProcessProvider};
pub use refresh::{Failure as RefreshFailure, Member, Refresh, RefreshStatus, Step as RefreshStep};
pub use schedule::{CronSchedule, ScheduledAction, Scheduler};

/// What can go wrong launching or stopping instances.
#[derive(Debug, thiserror::Error)]
pub enum ScalerError {
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("the process provider has no `ports` range to give instances a port from")]
    NoPorts,
    #[error("no free port left in {lo}-{hi}")]
    PortsExhausted { lo: u16, hi: u16 },
}
