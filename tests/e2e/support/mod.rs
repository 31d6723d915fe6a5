//! The harness of the end-to-end suite: the real `trellis` binary, real backends, real clients, all on
//! 127.0.0.1. Nothing here mocks the proxy.
//!
//! Waiting is always a bounded poll on an observable event (a port accepting, a line printed, a counter
//! moving), never a blind sleep.

pub mod certs;
pub mod client;
pub mod compose;
pub mod config;
pub mod dockerfile;
pub mod echo;
pub mod etcd;
pub mod process;
pub mod raw;
pub mod recorder;
pub mod rss;
pub mod servers;
pub mod tls;
pub mod tools;
pub mod trellis;

use std::future::Future;
use std::time::{Duration, Instant};

pub use echo::Echo;
pub use trellis::{Options, Trellis};

/// How often bounded polling loops look again.
pub const POLL: Duration = Duration::from_millis(10);

/// A port that was free a moment ago on 127.0.0.1.
///
/// Binds `127.0.0.1:0`, reads the port the kernel chose and releases it. Between this call and the
/// moment trellis binds it, another process could take it: that race is accepted (the kernel hands out
/// ephemeral ports in rotation, so a collision within milliseconds is very unlikely). Backends started by
/// the tests themselves bind port 0 directly and have no such race.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// A block of 40 ports for the instances a test's scaling group launches (`ports = "LO-HI"`).
///
/// Below the kernel's ephemeral range (32768 and up by default), from which [`free_port`] and every
/// outgoing connection take their ports: an instance that binds a port of its block can then never take
/// the port another test just chose for its own trellis (which happened with blocks taken next to a
/// [`free_port`]). Each call gets the next block, so the tests of one run do not share blocks either;
/// the provider still skips a port that something else holds.
pub fn instance_ports() -> (u16, u16) {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20200; // above config/example.toml's 20000-20199
    const BLOCKS: u16 = (32700 - FIRST) / 40;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let block =
        (std::process::id() as u16 % BLOCKS + NEXT.fetch_add(1, Ordering::Relaxed)) % BLOCKS;
    let lo = FIRST + block * 40;
    (lo, lo + 39)
}

/// Polls `probe` every [`POLL`] until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// True when something accepts TCP connections on `127.0.0.1:port`.
pub async fn accepts(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}
