//! Listening: bind every address of the snapshot, accept, serve, and stop gracefully.

mod conn;
mod lot;
mod park;
mod watchdog;

pub use conn::{ConnContext, ListenerContext, RequestGuard};

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use trellis_config::{Limits, ListenerProtocol};

use crate::{Proxy, ProxyError, Snapshot};
use lot::Lot;

/// The running data plane: accept loops and the connections they spawned. Listeners come and go with
/// reloads; each has its own stop signal, so a removed listener closes its port and lets its connections
/// finish their in-flight requests while the others carry on.
pub struct Server {
    proxy: Arc<Proxy>,
    tasks: TaskTracker,
    listeners: Mutex<Vec<Running>>,
}

/// One listening address being served.
struct Running {
    /// As configured: the snapshot's key for the port's routes.
    addr: SocketAddr,
    /// As bound (differs when the configuration asked for port 0).
    local: SocketAddr,
    limits: Limits,
    stop: watch::Sender<bool>,
    /// New connections take the context current at accept time, so changed limits apply to them.
    context: watch::Sender<Arc<ListenerContext>>,
    /// Its parked connections (they resume with the context current then).
    lot: Arc<Lot>,
}

/// A listening address of a snapshot.
struct Wanted {
    addr: SocketAddr,
    protocol: ListenerProtocol,
    limits: Limits,
}

impl Server {
    /// Binds every listening address of the proxy's current snapshot (all or nothing) and starts serving.
    /// Must be called from within a tokio runtime.
    pub fn start(proxy: Arc<Proxy>) -> Result<Server, ProxyError> {
        let wanted = wanted(&proxy.snapshot())?;
        let server = Server {
            proxy,
            tasks: TaskTracker::new(),
            listeners: Mutex::new(Vec::new()),
        };
        let bound = server.bind_new(&[], &wanted)?;
        let mut running = Vec::new();
        server.commit(&mut running, &wanted, bound);
        *server.lock() = running;
        Ok(server)
    }

    /// Serves `snapshot` from now on: binds the addresses it adds (if any of them cannot be bound, nothing
    /// changes and the error is returned), swaps it in, then stops listening on the addresses it no
    /// longer has (their connections finish the requests in flight and close).
    pub fn reload(&self, snapshot: Snapshot) -> Result<(), ProxyError> {
        let wanted = wanted(&snapshot)?;
        let mut running = self.lock();
        let bound = self.bind_new(&running, &wanted)?;
        self.proxy.swap(snapshot);
        self.commit(&mut running, &wanted, bound);
        Ok(())
    }

    /// The bound addresses, in snapshot order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.lock().iter().map(|r| r.local).collect()
    }

    /// Stops accepting, lets in-flight requests finish (idle keep-alive connections close at once),
    /// and waits up to `grace`. Returns false if connections were still open at the deadline.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        for running in self.lock().drain(..) {
            let _ = running.stop.send(true);
        }
        self.tasks.close();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }

    /// Binds the wanted addresses not served yet; all or none.
    fn bind_new(
        &self,
        running: &[Running],
        wanted: &[Wanted],
    ) -> Result<Vec<(SocketAddr, TcpListener)>, ProxyError> {
        wanted
            .iter()
            .filter(|w| !running.iter().any(|r| r.addr == w.addr))
            .map(|w| {
                bind(w.addr)
                    .map(|l| (w.addr, l))
                    .map_err(|error| ProxyError::Bind {
                        addr: w.addr,
                        error,
                    })
            })
            .collect()
    }

    fn commit(
        &self,
        running: &mut Vec<Running>,
        wanted: &[Wanted],
        bound: Vec<(SocketAddr, TcpListener)>,
    ) {
        running.retain(|r| {
            let keep = wanted.iter().any(|w| w.addr == r.addr);
            if !keep {
                tracing::info!(listen = %r.local, "listener removed: no longer accepting; open connections finish their requests");
                let _ = r.stop.send(true);
            }
            keep
        });
        for r in running.iter_mut() {
            if let Some(w) = wanted
                .iter()
                .find(|w| w.addr == r.addr && w.limits != r.limits)
            {
                r.limits = w.limits;
                let _ = r.context.send(self.context(w, &r.lot));
            }
        }
        for (addr, listener) in bound {
            let Some(w) = wanted.iter().find(|w| w.addr == addr) else {
                continue;
            };
            let local = listener.local_addr().unwrap_or(addr);
            let (stop, stop_rx) = watch::channel(false);
            let (active, parked, _, _) = self.proxy.connection_metrics(w.addr);
            let lot = Lot::new(active, parked);
            let (context, context_rx) = watch::channel(self.context(w, &lot));
            self.tasks
                .spawn(lot::run(lot.clone(), context_rx.clone(), stop_rx.clone()));
            self.tasks.spawn(accept_loop(listener, context_rx, stop_rx));
            running.push(Running {
                addr,
                local,
                limits: w.limits,
                stop,
                context,
                lot,
            });
        }
        running.sort_by_key(|r| wanted.iter().position(|w| w.addr == r.addr));
    }

    fn context(&self, w: &Wanted, lot: &Arc<Lot>) -> Arc<ListenerContext> {
        Arc::new(ListenerContext::new(
            self.proxy.clone(),
            w.addr,
            w.protocol,
            w.limits,
            self.tasks.clone(),
            lot.clone(),
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Running>> {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The listening addresses of a snapshot, refusing what cannot be served yet.
fn wanted(snapshot: &Snapshot) -> Result<Vec<Wanted>, ProxyError> {
    snapshot
        .ports()
        .iter()
        .map(|port| {
            Ok(Wanted {
                addr: port.addr,
                protocol: port.protocol,
                limits: port.limits,
            })
        })
        .collect()
}

async fn accept_loop(
    listener: TcpListener,
    context: watch::Receiver<Arc<ListenerContext>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let ctx = context.borrow().clone();
                    ctx.tasks.clone().spawn(conn::serve(stream, peer, ctx, stop.clone()));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(listen = %context.borrow().listen, %error, "accept failed");
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
