//! Keep-alive connections to one target, kept across snapshots.
//!
//! HTTP/1.1: a lock-free stack of idle connections; a connection is taken for one exchange and given
//! back when its response body has been read to the end. HTTP/2: one multiplexed connection shared by
//! every request, replaced when it closes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::body::RequestBody;
use crossbeam_queue::ArrayQueue;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Idle HTTP/1.1 connections kept per target; more are closed when their exchange ends.
const MAX_IDLE_PER_TARGET: usize = 256;

pub enum Sender {
    H1(http1::SendRequest<RequestBody>),
    H2(http2::SendRequest<RequestBody>),
}

pub struct TargetPool {
    address: SocketAddr,
    http2: bool,
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
    Timeout,
    Handshake(hyper::Error),
}

impl TargetPool {
    pub fn new(address: SocketAddr, http2: bool) -> Self {
        TargetPool {
            address,
            http2,
            idle: ArrayQueue::new(MAX_IDLE_PER_TARGET),
            shared_h2: Mutex::new(None),
            closed: CancellationToken::new(),
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

    /// Opens a new connection (TCP connect bounded by `timeout`, then the HTTP handshake).
    pub async fn connect(&self, timeout: Duration) -> Result<Sender, ConnectError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(self.address)).await {
            Err(_) => return Err(ConnectError::Timeout),
            Ok(Err(e)) => return Err(ConnectError::Refused(e)),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
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
#[derive(Default)]
pub struct PoolRegistry {
    pools: Mutex<HashMap<(String, SocketAddr, bool), Arc<TargetPool>>>,
}

impl PoolRegistry {
    /// Closes and forgets every pool of a target (it has finished draining).
    pub fn remove(&self, group: &str, address: SocketAddr) {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        pools.retain(|(g, a, _), pool| {
            let gone = g == group && *a == address;
            if gone {
                pool.close();
            }
            !gone
        });
    }

    /// Closes every connection of a target without forgetting it.
    pub fn close(&self, group: &str, address: SocketAddr) {
        let pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        pools
            .iter()
            .filter(|((g, a, _), _)| g == group && *a == address)
            .for_each(|(_, pool)| pool.close());
    }

    pub fn pool(&self, group: &str, address: SocketAddr, http2: bool) -> Arc<TargetPool> {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        pools
            .entry((group.to_string(), address, http2))
            .or_insert_with(|| Arc::new(TargetPool::new(address, http2)))
            .clone()
    }
}
