//! trellis-targets: target groups at run time — who the targets are, how healthy and how loaded they are,
//! and which one takes the next request. No I/O and no hyper here (the one TLS piece is a certificate verifier, a pure function): this is the part that must be exactly
//! right, so it is plain data and pure functions, tested without sockets.
#![forbid(unsafe_code)]

mod balancer;
mod budget;
mod health;
mod outlier;
mod registry;
mod schedule;
mod target;
mod tls;

pub use balancer::{Balancer, Pick, Tried};
pub use budget::RetryBudget;
pub use health::{CheckMode, HealthView, ProbeResult, TargetState, Transition};
pub use registry::TargetRegistry;
pub use schedule::SmoothSchedule;
pub use target::{Ejection, GroupStats, InFlight, Queue, Target, TargetStats, TargetView, Waiting};
pub use tls::AnyCertificate;
