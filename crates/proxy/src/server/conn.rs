//! One client connection: HTTP/1.1 or h2c (detected by hyper-util's auto builder), driven under the
//! watchdog's timers and the server's shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use http::{Request, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::rustls::server::Acceptor;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::task::TaskTracker;
use trellis_config::{Limits, ListenerProtocol};

use super::lot::Lot;
use super::park::{Parkable, PARK_AFTER};
use super::watchdog::{ConnState, Verdict};
use crate::headers::ClientInfo;
use crate::tls::TlsInfo;
use crate::watched_io::WatchedIo;
use crate::Proxy;

/// What every connection of one listening address shares.
pub struct ListenerContext {
    pub proxy: Arc<Proxy>,
    pub listen: SocketAddr,
    /// `https`: connections start with a TLS handshake; `tls_passthrough`: they are relayed as bytes.
    pub protocol: ListenerProtocol,
    pub limits: Limits,
    pub builder: auto::Builder<TokioExecutor>,
    pub tasks: TaskTracker,
    /// Where this address's idle HTTP/1.1 connections park.
    lot: Arc<Lot>,
    active: prometheus::IntGauge,
    accepted: prometheus::IntCounter,
    handshake_errors: prometheus::IntCounter,
}

impl ListenerContext {
    pub fn new(
        proxy: Arc<Proxy>,
        listen: SocketAddr,
        protocol: ListenerProtocol,
        limits: Limits,
        tasks: TaskTracker,
        lot: Arc<Lot>,
    ) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .keep_alive(true)
            // The watchdog enforces header_timeout; hyper's timer would also fire on idle keep-alive.
            .header_read_timeout(None)
            // hyper answers a head past this with 431; it cannot go below its 8 KiB minimum.
            .max_buf_size(limits.max_header_bytes.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(limits.max_header_bytes as u32);
        let (active, _, accepted, handshake_errors) = proxy.connection_metrics(listen);
        ListenerContext {
            proxy,
            listen,
            protocol,
            limits,
            builder,
            tasks,
            lot,
            active,
            accepted,
            handshake_errors,
        }
    }
}

/// What the request path needs to know about the connection a request came on.
pub struct ConnContext {
    pub proxy: Arc<Proxy>,
    /// The listening address (the snapshot's key for this port's routes).
    pub listen: SocketAddr,
    /// The client's address.
    pub peer: SocketAddr,
    pub client: ClientInfo,
    /// Set on https listeners: the certificate served, the server name asked for, the client's identity.
    pub tls: Option<TlsInfo>,
    /// Tunnels (upgraded connections) are tracked with the connections, for graceful shutdown.
    pub tasks: TaskTracker,
    /// The listener's connection limits (body, send and tunnel timeouts apply per request).
    pub limits: Limits,
    state: Arc<ConnState>,
}

/// Counts a connection in a gauge for as long as it lives (open, or parked).
struct OpenConnection(prometheus::IntGauge);

impl OpenConnection {
    fn new(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        OpenConnection(gauge.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts a request on its connection from head parsed to the end of its response body (the response
/// carries it), even if the client goes away and the request's future is dropped.
pub struct RequestGuard(Arc<ConnState>);

impl RequestGuard {
    /// The connection the request's response goes out on.
    pub fn connection(&self) -> &ConnState {
        &self.0
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.body_polled();
        self.0.request_finished();
    }
}

pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<ListenerContext>,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    listener.accepted.inc();
    let _open = OpenConnection::new(&listener.active);
    match listener.protocol {
        ListenerProtocol::Http => {
            return Box::pin(drive_plain(stream, peer, &listener, shutdown)).await
        }
        ListenerProtocol::TlsPassthrough => {
            return Box::pin(crate::passthrough::serve(stream, peer, &listener)).await
        }
        ListenerProtocol::Https => {}
    }
    // Boxed, as every large state below: a task is as big as its largest state for as long as it lives,
    // and a parked connection should cost no more than its socket.
    match Box::pin(handshake(stream, &listener)).await {
        Ok((stream, info)) => Box::pin(drive(stream, peer, &listener, shutdown, Some(info))).await,
        // A port check (connect, then close): not a failed handshake.
        Err(Handshake::Silent) => {}
        Err(Handshake::Failed(why)) => {
            listener.handshake_errors.inc();
            tracing::debug!(listen = %listener.listen, %peer, %why, "TLS handshake failed");
        }
    }
}

/// Why a connection ended before its handshake completed.
enum Handshake {
    /// Closed before sending a byte.
    Silent,
    Failed(String),
}

/// The TLS handshake, bounded by the listener's `header_timeout`: the ClientHello's server name picks
/// the service, whose certificate and client-certificate policy then complete it.
async fn handshake(
    stream: TcpStream,
    listener: &ListenerContext,
) -> Result<(TlsStream<TcpStream>, TlsInfo), Handshake> {
    let deadline = tokio::time::Instant::now() + listener.limits.header_timeout;
    let timed_out = |_| {
        Handshake::Failed(format!(
            "no handshake within {:?}",
            listener.limits.header_timeout
        ))
    };
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(0)) | Ok(Err(_)) => return Err(Handshake::Silent),
        Ok(Ok(_)) => {}
        Err(e) => return Err(timed_out(e)),
    }
    let start = tokio::time::timeout_at(
        deadline,
        LazyConfigAcceptor::new(Acceptor::default(), stream),
    )
    .await
    .map_err(timed_out)?
    .map_err(|e| Handshake::Failed(e.to_string()))?;
    let sni: Option<Arc<str>> = start.client_hello().server_name().map(Arc::from);
    let chosen = listener
        .proxy
        .snapshot()
        .port(listener.listen)
        .and_then(|port| port.tls_for(sni.as_deref()))
        .map(|tls| (tls.config.clone(), tls.cert));
    let Some((config, cert)) = chosen else {
        return Err(Handshake::Failed(format!(
            "no service on this port for server name {:?}",
            sni.as_deref().unwrap_or("(none)")
        )));
    };
    let stream = tokio::time::timeout_at(deadline, start.into_stream(config))
        .await
        .map_err(timed_out)?
        .map_err(|e| Handshake::Failed(e.to_string()))?;
    let (_, session) = stream.get_ref();
    let info = TlsInfo {
        cert,
        sni,
        version: crate::tls::version_name(session.protocol_version()),
        identity: session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|c| crate::tls::client_identity(c)),
    };
    Ok((stream, info))
}

/// The request path of one connection: every request goes through `forward::handle`, counted on the
/// connection from its head to the end of its response.
fn service(
    ctx: Arc<ConnContext>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = http::Response<crate::body::ProxyBody>,
    Error = std::convert::Infallible,
    Future = impl Future<
        Output = Result<http::Response<crate::body::ProxyBody>, std::convert::Infallible>,
    > + Send,
> + Clone {
    service_fn(move |req: Request<Incoming>| {
        let ctx = ctx.clone();
        async move {
            ctx.state.request_started(req.version() == Version::HTTP_2);
            let guard = RequestGuard(ctx.state.clone());
            let resp = crate::forward::handle(ctx, req).await?;
            Ok::<_, std::convert::Infallible>(resp.map(|body| body.counted_until_done(guard)))
        }
    })
}

fn conn_context(
    listener: &ListenerContext,
    peer: SocketAddr,
    tls: Option<TlsInfo>,
    state: &Arc<ConnState>,
) -> Arc<ConnContext> {
    Arc::new(ConnContext {
        proxy: listener.proxy.clone(),
        listen: listener.listen,
        peer,
        client: ClientInfo::new(peer.ip(), tls.is_some(), listener.listen.port()),
        tls,
        tasks: listener.tasks.clone(),
        limits: listener.limits,
        state: state.clone(),
    })
}

/// The start of the HTTP/2 connection preface (h2c with prior knowledge).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// A plain-HTTP connection: h2c (told apart by its first bytes) runs as any other connection, HTTP/1.1
/// on a connection that parks when idle.
async fn drive_plain(
    stream: TcpStream,
    peer: SocketAddr,
    listener: &ListenerContext,
    shutdown: watch::Receiver<bool>,
) {
    let mut first = [0u8; H2_PREFACE.len()];
    // Whatever arrives first decides; a client that sends nothing is cut off by the head timeout.
    let peeked =
        tokio::time::timeout(listener.limits.header_timeout, stream.peek(&mut first)).await;
    let n = match peeked {
        Ok(Ok(n)) if n > 0 => n,
        _ => return,
    };
    // "P", "PR", "PRI" could still be h2c (or a POST, PUT, PATCH): the auto builder tells them apart.
    if H2_PREFACE.starts_with(&first[..n]) {
        return Box::pin(drive(stream, peer, listener, shutdown, None)).await;
    }
    drive_http1(stream, peer, listener, shutdown).await
}

/// A parked HTTP/1.1 connection whose next bytes have come: a new task takes it up.
pub async fn resume(
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<ListenerContext>,
    shutdown: watch::Receiver<bool>,
) {
    let _open = OpenConnection::new(&listener.active);
    Box::pin(drive_http1(stream, peer, &listener, shutdown)).await
}

/// An HTTP/1.1 connection on hyper's HTTP/1 connection, which parks when idle (see `park`): a connection
/// idle for [`PARK_AFTER`] ends its task and leaves its socket in the listener's lot (see `lot`).
async fn drive_http1(
    stream: TcpStream,
    peer: SocketAddr,
    listener: &ListenerContext,
    shutdown: watch::Receiver<bool>,
) {
    let state = Arc::new(ConnState::new());
    let ctx = conn_context(listener, peer, None, &state);
    let mut io = WatchedIo::new(stream, state.clone());
    let mut replay = bytes::Bytes::new();
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(None)
        // The head limit exactly (431 beyond it), whatever sizes the reads come in.
        .max_header_size(listener.limits.max_header_bytes)
        .max_buf_size(listener.limits.max_header_bytes.max(8192));
    loop {
        let parkable = Parkable::new(io, state.clone(), replay);
        // Boxed: only while the connection is busy.
        let mut conn = Box::pin(
            http1
                .serve_connection(TokioIo::new(parkable), service(ctx.clone()))
                .with_upgrades(),
        );
        let graceful = |c: Pin<&mut _>| {
            hyper::server::conn::http1::UpgradeableConnection::graceful_shutdown(c)
        };
        // A signal of its own for each stretch (a finished future must not be polled again; a new one
        // sees a shutdown that already happened at once).
        let signal = std::pin::pin!(shutdown_signal(shutdown.clone()));
        let watched = Box::pin(watch_connection(
            conn.as_mut(),
            graceful,
            &state,
            listener,
            peer,
            signal,
            true,
        ));
        if !watched.await || !state.is_parked() {
            return;
        }
        // Not upgraded (a parked connection is between requests), so the socket comes back.
        let Some(parts) = Pin::into_inner(conn).into_parts() else {
            return;
        };
        let (socket, rest) = parts.io.into_inner().into_parts();
        io = socket;
        // What hyper had read but not parsed (a part of the next head), then what it had not replayed.
        replay = if parts.read_buf.is_empty() && rest.is_empty() {
            bytes::Bytes::new()
        } else {
            [&parts.read_buf[..], &rest[..]].concat().into()
        };
        drop(parts.read_buf);
        drop(parts.service);
        state.unpark(!replay.is_empty());
        if replay.is_empty() {
            // Nothing of a next request yet: the socket waits in the lot, this task ends.
            let Verdict::Wait(idle_until) = state.verdict(&listener.limits) else {
                return;
            };
            listener.lot.park(io.into_inner(), peer, idle_until);
            return;
        }
    }
}

/// Resolves when the server begins to shut down.
async fn shutdown_signal(mut shutdown: watch::Receiver<bool>) {
    if !*shutdown.borrow_and_update() {
        let _ = shutdown.changed().await;
    }
}

async fn drive<I>(
    io: I,
    peer: SocketAddr,
    listener: &ListenerContext,
    shutdown: watch::Receiver<bool>,
    tls: Option<TlsInfo>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::new(ConnState::new());
    let ctx = conn_context(listener, peer, tls, &state);
    let io = TokioIo::new(WatchedIo::new(io, state.clone()));
    let conn = listener
        .builder
        .serve_connection_with_upgrades(io, service(ctx));
    tokio::pin!(conn);
    // Made once: re-creating it each turn of the loop would re-register with the channel every request.
    let shutdown = std::pin::pin!(shutdown_signal(shutdown));
    let graceful = |c: Pin<&mut _>| auto::UpgradeableConnection::graceful_shutdown(c);
    watch_connection(conn, graceful, &state, listener, peer, shutdown, false).await;
}

/// Drives `conn` under the watchdog's timers and the server's shutdown until it ends. With `park`, a
/// connection idle for [`PARK_AFTER`] is asked to park (it then ends at its next read, which follows at
/// once). Returns false when the connection was cut off (a timeout, or aborted).
async fn watch_connection<C: Future + ?Sized>(
    mut conn: Pin<&mut C>,
    graceful: impl Fn(Pin<&mut C>),
    state: &ConnState,
    listener: &ListenerContext,
    peer: SocketAddr,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
    park: bool,
) -> bool {
    let timer = tokio::time::sleep(listener.limits.header_timeout);
    tokio::pin!(timer);
    let mut closing = false;
    loop {
        // When an idle connection that may park should: a second of idleness after its last request.
        let park_at = || {
            state
                .idle_since()
                .filter(|_| park && !closing && !state.park_requested())
                .map(|since| since + PARK_AFTER)
        };
        tokio::select! {
            // Ready(true) when the connection is done; Ready(false) when a request started or finished
            // during this poll (hyper runs an HTTP/1 service inside it), so the send or idle deadline can
            // be brought forward without any cross-task signalling.
            done = std::future::poll_fn(|cx| match conn.as_mut().poll(cx) {
                Poll::Ready(_) => Poll::Ready(true),
                Poll::Pending if state.take_changed() => Poll::Ready(false),
                Poll::Pending => Poll::Pending,
            }) => {
                if done {
                    return true;
                }
                // Only an earlier deadline needs the timer moved now; a later one is found when the
                // timer fires and asks again. This keeps timer-wheel updates off the per-request path.
                if let Verdict::Wait(at) = state.verdict(&listener.limits) {
                    let at = park_at().map_or(at, |p| p.min(at));
                    if at < timer.deadline() {
                        timer.as_mut().reset(at);
                    }
                }
            }
            _ = &mut timer => {
                // Idle long enough to park: the connection's next read (at once: it is polled again
                // right away) hands hyper the end of its input.
                if park_at().is_some_and(|at| tokio::time::Instant::now() >= at) {
                    state.request_park();
                    continue;
                }
                match state.verdict(&listener.limits) {
                    Verdict::Wait(at) => {
                        let now = tokio::time::Instant::now();
                        timer.as_mut().reset(park_at().map_or(at, |p| p.max(now).min(at)));
                    }
                    // Dropping the connection closes the socket; there is no request to answer yet.
                    Verdict::HeadTimeout => return false,
                    // Dropping it also cancels what is in flight: the target's request with it.
                    Verdict::Abort => {
                        tracing::debug!(listen = %listener.listen, %peer, "closing a connection that makes no progress (send_timeout, or lingering after close)");
                        return false;
                    }
                    Verdict::Idle => {
                        graceful(conn.as_mut());
                        state.closing();
                        closing = true;
                        if let Verdict::Wait(at) = state.verdict(&listener.limits) {
                            timer.as_mut().reset(at);
                        }
                    }
                }
            },
            _ = shutdown.as_mut(), if !closing => {
                graceful(conn.as_mut());
                state.closing();
                closing = true;
                if let Verdict::Wait(at) = state.verdict(&listener.limits) {
                    timer.as_mut().reset(at);
                }
            }
        }
    }
}
