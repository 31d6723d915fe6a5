//! The target side: connection pools per target and the exchange of one request with one target.

mod admit;
mod exchange;
mod group;
mod pool;
mod tls;

pub use admit::{admit, Admitted};
pub use exchange::{exchange, ExchangeError, Exchanged, Timing};
pub use group::Group;
pub use pool::{PoolRegistry, PooledSender, TargetPool};
pub use tls::TlsClient;
