//! Keep-alive connections to one target, kept across snapshots.
//!
//! HTTP/1.1: a lock-free stack of idle connections; a connection is taken for one exchange and given
//! back when its response body has been read to the end. HTTP/2: one multiplexed connection shared by
//! every request, replaced when it closes. Targets of `https` groups are reached over TLS first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::body::RequestBody;
use crossbeam_queue::ArrayQueue;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::tls::TlsClient;

/// Idle HTTP/1.1 connections kept per target; more are closed when their exchange ends.
const MAX_IDLE_PER_TARGET: usize = 256;

pub enum Sender {
    H1(http1::SendRequest<RequestBody>),
    H2(http2::SendRequest<RequestBody>),
}

pub struct TargetPool {
    address: SocketAddr,
    http2: bool,
    /// `https` groups: the TLS client connections start with.
    tls: Option<Arc<TlsClient>>,
    idle: ArrayQueue<http1::SendRequest<RequestBody>>,
    shared_h2: Mutex<Option<http2::SendRequest<RequestBody>>>,
    /// Cancelled when the target's drain deadline passes: every connection to it (and every tunnel
    /// through it) is closed, whatever it is doing.
    closed: CancellationToken,
}

/// Why no connection could be had; either way nothing was sent, so another target may be tried.
#[derive(Debug)]
pub enum ConnectError {
    Refused(std::io::Error),
    /// The TCP connect and TLS handshake together took longer than `connect_timeout`.
    Timeout,
    /// The TLS handshake failed: a certificate that does not verify, no common protocol version, ...
    Tls(std::io::Error),
    Handshake(hyper::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Refused(e) => write!(f, "connect: {e}"),
            ConnectError::Timeout => f.write_str("connect timed out"),
            ConnectError::Tls(e) => write!(f, "TLS handshake: {e}"),
            ConnectError::Handshake(e) => write!(f, "HTTP handshake: {e}"),
        }
    }
}

impl TargetPool {
    pub fn new(address: SocketAddr, http2: bool, tls: Option<Arc<TlsClient>>) -> Self {
        TargetPool {
            address,
            http2,
            tls,
            idle: ArrayQueue::new(MAX_IDLE_PER_TARGET),
            shared_h2: Mutex::new(None),
            closed: CancellationToken::new(),
        }
    }

    /// Whether this pool connects the way `http2` and `tls` say.
    fn connects_with(&self, http2: bool, tls: Option<&Arc<TlsClient>>) -> bool {
        self.http2 == http2
            && match (&self.tls, tls) {
                (None, None) => true,
                (Some(a), Some(b)) => a.same_as(b),
                _ => false,
            }
    }

    /// Closes every connection to the target now, in use or idle (a drain deadline has passed).
    pub fn close(&self) {
        self.closed.cancel();
        while self.idle.pop().is_some() {}
        self.shared_h2
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// Completes when [`Self::close`] is called; long-lived work on the target's connections (tunnels)
    /// selects on it.
    pub fn closed(&self) -> CancellationToken {
        self.closed.clone()
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// A connection that is already open, if any is still alive.
    pub fn idle(&self) -> Option<Sender> {
        if self.http2 {
            let shared = self
                .shared_h2
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            return shared
                .as_ref()
                .filter(|s| !s.is_closed())
                .cloned()
                .map(Sender::H2);
        }
        while let Some(sender) = self.idle.pop() {
            if !sender.is_closed() {
                return Some(Sender::H1(sender));
            }
        }
        None
    }

    /// Opens a new connection: TCP connect and, for `https` groups, the TLS handshake, together bounded by
    /// `timeout`; then the HTTP handshake.
    pub async fn connect(&self, timeout: Duration) -> Result<Sender, ConnectError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(self.address)).await
        {
            Err(_) => return Err(ConnectError::Timeout),
            Ok(Err(e)) => return Err(ConnectError::Refused(e)),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return self.handshake(stream).await;
        };
        match tokio::time::timeout_at(deadline, tls.connect(stream, self.address)).await {
            Err(_) => Err(ConnectError::Timeout),
            Ok(Err(e)) => Err(ConnectError::Tls(e)),
            Ok(Ok(stream)) => self.handshake(stream).await,
        }
    }

    /// The HTTP/1.1 or HTTP/2 handshake on a connected stream; its connection is driven by a task of its
    /// own until it ends or the target is closed.
    async fn handshake<S>(&self, stream: S) -> Result<Sender, ConnectError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(stream);
        if self.http2 {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(ConnectError::Handshake)?;
            tokio::spawn(until_closed(conn, self.closed.clone()));
            *self
                .shared_h2
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(sender.clone());
            Ok(Sender::H2(sender))
        } else {
            let (sender, conn) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(ConnectError::Handshake)?;
            // Upgrades enabled so a 101 response can become a tunnel (WebSocket).
            tokio::spawn(until_closed(conn.with_upgrades(), self.closed.clone()));
            Ok(Sender::H1(sender))
        }
    }

    fn release(&self, sender: http1::SendRequest<RequestBody>) {
        if !sender.is_closed() && !self.closed.is_cancelled() {
            // Full: the connection is dropped, which closes it.
            let _ = self.idle.push(sender);
        }
    }
}

/// Drives a connection until it ends or its target is closed; dropping it closes the socket, which ends
/// whatever response is streaming on it.
async fn until_closed<F: std::future::Future>(conn: F, closed: CancellationToken) {
    tokio::select! {
        _ = conn => {}
        _ = closed.cancelled() => {}
    }
}

/// An HTTP/1.1 connection in use by one exchange, to be given back once its response has been read.
pub struct PooledSender {
    pub(crate) sender: http1::SendRequest<RequestBody>,
    pub(crate) pool: Arc<TargetPool>,
}

impl PooledSender {
    pub fn release(self) {
        self.pool.release(self.sender);
    }
}

/// (target group, address) → pool, so reloads keep warm connections. Touched when snapshots are built.
///
/// A pool connects one way (HTTP/1.1 or HTTP/2, TLS settings); a snapshot whose group connects another way
/// gets a new pool in its place. The old one lives on with the snapshots and exchanges that hold it: its
/// connections finish what they carry and close with it. Both share one close signal, so a drain deadline
/// still reaches whatever the old pool has open.
#[derive(Default)]
pub struct PoolRegistry {
    pools: Mutex<HashMap<(String, SocketAddr), Arc<TargetPool>>>,
}

impl PoolRegistry {
    /// Closes and forgets the pool of a target (it has finished draining).
    pub fn remove(&self, group: &str, address: SocketAddr) {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pool) = pools.remove(&(group.to_string(), address)) {
            pool.close();
        }
    }

    /// Closes every connection of a target without forgetting it.
    pub fn close(&self, group: &str, address: SocketAddr) {
        let pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pool) = pools.get(&(group.to_string(), address)) {
            pool.close();
        }
    }

    /// The pool of a target that connects the way `http2` and `tls` say: the current one, or a new one
    /// that replaces it when it connects another way.
    pub fn pool(
        &self,
        group: &str,
        address: SocketAddr,
        http2: bool,
        tls: Option<&Arc<TlsClient>>,
    ) -> Arc<TargetPool> {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (group.to_string(), address);
        match pools.get(&key) {
            Some(pool) if pool.connects_with(http2, tls) => pool.clone(),
            old => {
                let mut pool = TargetPool::new(address, http2, tls.cloned());
                if let Some(old) = old.filter(|old| !old.closed.is_cancelled()) {
                    pool.closed = old.closed.clone();
                }
                let pool = Arc::new(pool);
                pools.insert(key, pool.clone());
                pool
            }
        }
    }

    /// Whether `pools` (a group's, parallel to its targets) are the ones this registry holds for it: a
    /// build that was not served may have replaced them since, and a group reused from an older snapshot
    /// must not keep pools the registry no longer reaches.
    pub fn holds(&self, group: &str, pools: &[Arc<TargetPool>]) -> bool {
        let registry = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        let mut key = (group.to_string(), SocketAddr::from(([0, 0, 0, 0], 0)));
        pools.iter().all(|pool| {
            key.1 = pool.address;
            registry
                .get(&key)
                .is_some_and(|held| Arc::ptr_eq(held, pool))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_config::TargetTls;

    /// A client that does not verify, sending `sni`: needs no files.
    fn client(sni: &str) -> Arc<TlsClient> {
        let tg = super::super::tls::tests::group(TargetTls {
            ca: None,
            sni: Some(sni.into()),
            verify: false,
        });
        TlsClient::for_group(&tg, false, None)
            .expect("built")
            .expect("https")
    }

    #[test]
    fn a_pool_is_replaced_when_it_would_connect_another_way() {
        let registry = PoolRegistry::default();
        let address: SocketAddr = "127.0.0.1:9443".parse().unwrap();
        let plain = registry.pool("g", address, false, None);
        assert!(Arc::ptr_eq(
            &registry.pool("g", address, false, None),
            &plain
        ));
        let a = registry.pool("g", address, false, Some(&client("a.test")));
        assert!(!Arc::ptr_eq(&a, &plain), "TLS now");
        assert!(registry.holds("g", std::slice::from_ref(&a)));
        assert!(!registry.holds("g", std::slice::from_ref(&plain)));
        // Equal settings, another client: kept, warm connections and all.
        let again = registry.pool("g", address, false, Some(&client("a.test")));
        assert!(Arc::ptr_eq(&again, &a));
        let b = registry.pool("g", address, false, Some(&client("b.test")));
        assert!(!Arc::ptr_eq(&b, &a), "another sni");
        let h2 = registry.pool("g", address, true, Some(&client("b.test")));
        assert!(!Arc::ptr_eq(&h2, &b), "HTTP/2");
        assert!(registry.holds("g", std::slice::from_ref(&h2)));

        // A drain deadline reaches what the replaced pools still have open.
        registry.close("g", address);
        for pool in [&plain, &a, &b, &h2] {
            assert!(pool.closed().is_cancelled());
        }
        // Forgotten, then back: a fresh start.
        registry.remove("g", address);
        let back = registry.pool("g", address, true, Some(&client("b.test")));
        assert!(!back.closed().is_cancelled());
    }
}
