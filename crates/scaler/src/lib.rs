//! trellis-scaler: the Auto Scaling group behind a target group, for one machine.
//!
//! This crate starts with the parts that must be exactly right and are therefore pure: the capacity
//! decision ([`Decider`]), fed one [`Sample`] of the group's own request metrics per evaluation period,
//! and the instance lifecycle ([`Instance`], [`Backoff`]). Time is always passed in, so every rule —
//! cooldown, warm-up, the scale-in margin, crash-loop back-off — is tested with simulated time.
#![forbid(unsafe_code)]

mod decide;
mod lifecycle;
mod policy;

pub use decide::{Decider, Decision, Sample};
pub use lifecycle::{Backoff, Instance, Lifecycle, Replace};
pub use policy::Proposal;
