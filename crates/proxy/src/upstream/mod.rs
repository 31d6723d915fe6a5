//! The target side: connection pools per target and the exchange of one request with one target.

mod admit;
mod exchange;
mod group;
mod pool;
mod sticky;
mod tls;

pub use admit::{admit, admit_queued, admit_sticky, Admitted};
pub use exchange::{exchange, ExchangeError, Exchanged, Timing};
pub use group::Group;
pub use pool::{PoolRegistry, PooledSender, TargetPool};
pub use sticky::{Lookup, Sticky};
pub use tls::TlsClient;
