//! Listening: bind every address of the snapshot, accept, serve, and stop gracefully.

mod conn;
mod watchdog;

pub use conn::ConnContext;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use trellis_config::ListenerProtocol;

use crate::{Proxy, ProxyError};
use conn::ListenerContext;

/// The running data plane: accept loops and the connections they spawned.
pub struct Server {
    shutdown: watch::Sender<bool>,
    tasks: TaskTracker,
    addrs: Vec<SocketAddr>,
}

impl Server {
    /// Binds every listening address of the proxy's current snapshot (all or nothing) and starts serving.
    /// Must be called from within a tokio runtime.
    pub fn start(proxy: Arc<Proxy>) -> Result<Server, ProxyError> {
        let snapshot = proxy.snapshot();
        let mut bound = Vec::new();
        for port in snapshot.ports() {
            if port.protocol != ListenerProtocol::Http {
                return Err(ProxyError::Unsupported {
                    addr: port.addr,
                    what: "https and tls_passthrough listeners (TLS support is not built yet)",
                });
            }
            let listener = bind(port.addr).map_err(|source| ProxyError::Bind {
                addr: port.addr,
                source,
            })?;
            bound.push((listener, port.addr, port.limits));
        }
        drop(snapshot);

        let (shutdown, _) = watch::channel(false);
        let tasks = TaskTracker::new();
        let mut addrs = Vec::new();
        for (listener, addr, limits) in bound {
            addrs.push(listener.local_addr().unwrap_or(addr));
            let ctx = Arc::new(ListenerContext::new(
                proxy.clone(),
                addr,
                limits,
                tasks.clone(),
            ));
            tasks.spawn(accept_loop(listener, ctx, shutdown.subscribe()));
        }
        Ok(Server {
            shutdown,
            tasks,
            addrs,
        })
    }

    /// The bound addresses, in snapshot order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops accepting, lets in-flight requests finish (idle keep-alive connections close at once),
    /// and waits up to `grace`. Returns false if connections were still open at the deadline.
    pub async fn shutdown(self, grace: Duration) -> bool {
        let _ = self.shutdown.send(true);
        self.tasks.close();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }
}

async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<ListenerContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    ctx.tasks.spawn(conn::serve(stream, peer, ctx.clone(), shutdown.clone()));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(listen = %ctx.listen, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // A restart must not fail on connections of the previous process still in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}
