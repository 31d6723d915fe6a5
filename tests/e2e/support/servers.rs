//! In-test backends for what `trellis echo` cannot do: never answer, send HTTP/2 trailers, accept an
//! upgrade, serve TLS, or tell the test the moment a request arrives.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, UPGRADE};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A backend task on 127.0.0.1:`port`; its accept loop stops when this is dropped.
pub struct TestServer {
    pub port: u16,
    accept: JoinHandle<()>,
}

impl TestServer {
    /// `127.0.0.1:PORT`, as written in a target group.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Binds 127.0.0.1:0 and runs `on_conn` on its own task for every accepted connection.
async fn spawn_server<F, Fut>(on_conn: F) -> TestServer
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let port = listener.local_addr().expect("local_addr").port();
    let accept = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(on_conn(stream));
        }
    });
    TestServer { port, accept }
}

/// A port nothing listens on: connecting to it is refused. The port stays bound (without listening)
/// for the rest of the test run, so that no other server of a test running alongside — a trellis that
/// picked it as a free port, which then forwarded to itself — can take it and answer.
pub fn closed_port_addr() -> String {
    static HELD: std::sync::Mutex<Vec<std::net::TcpListener>> = std::sync::Mutex::new(Vec::new());
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    let addr: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&addr.into()).expect("bind 127.0.0.1:0");
    let port = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("a local address")
        .port();
    // Never `listen`ed: a connect gets a reset, as to a closed port.
    HELD.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(socket.into());
    format!("127.0.0.1:{port}")
}

/// Accepts connections, reads whatever comes and never answers.
pub async fn silent() -> TestServer {
    spawn_server(|mut stream| async move {
        let _ = tokio::io::copy(&mut stream, &mut tokio::io::sink()).await;
    })
    .await
}

/// An h2c-only backend whose every answer is `200`, body `ok`, `x-backend-protocol: h2` and trailers
/// `grpc-status: 0`, `grpc-message: fine`.
pub async fn h2c_with_trailers() -> TestServer {
    spawn_server(|stream| async move {
        let svc = service_fn(|_req: Request<Incoming>| async {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            trailers.insert("grpc-message", HeaderValue::from_static("fine"));
            let frames = vec![
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"ok"))),
                Ok(Frame::trailers(trailers)),
            ];
            let resp = Response::builder()
                .header("content-type", "application/grpc")
                .header("x-backend-protocol", "h2")
                .body(StreamBody::new(stream::iter(frames)))
                .expect("valid response");
            Ok::<_, Infallible>(resp)
        });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), svc)
            .await;
    })
    .await
}

/// An HTTP/1.1 backend that answers `Upgrade: websocket` with `101 Switching Protocols` and then echoes
/// every byte on the upgraded stream; anything else gets `400`.
pub async fn upgrade_echo() -> TestServer {
    spawn_server(|stream| async move {
        let svc = service_fn(|mut req: Request<Incoming>| async move {
            let wants_ws = req
                .headers()
                .get(UPGRADE)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
            let mut resp = Response::new(Full::new(Bytes::new()));
            if !wants_ws {
                *resp.status_mut() = StatusCode::BAD_REQUEST;
                return Ok::<_, Infallible>(resp);
            }
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let (mut rd, mut wr) = tokio::io::split(TokioIo::new(upgraded));
                    let _ = tokio::io::copy(&mut rd, &mut wr).await;
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut wr).await;
                }
            });
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("upgrade"));
            resp.headers_mut()
                .insert(UPGRADE, HeaderValue::from_static("websocket"));
            Ok(resp)
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades()
            .await;
    })
    .await
}

/// An HTTP/1.1 backend that counts requests the moment they arrive (before any delay), so a test can
/// wait until a slow request is really in flight. Answers `200 hello` with `x-served-by: NAME` after
/// `?delay=MS`.
pub struct Tracking {
    pub server: TestServer,
    pub name: String,
    arrived: Arc<AtomicUsize>,
}

impl Tracking {
    pub async fn start(name: &str) -> Tracking {
        let arrived = Arc::new(AtomicUsize::new(0));
        let served_by = HeaderValue::from_str(name).expect("name is a header value");
        let counter = arrived.clone();
        let server = spawn_server(move |stream| {
            let counter = counter.clone();
            let served_by = served_by.clone();
            async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let served_by = served_by.clone();
                    async move {
                        if let Some(ms) = query_value(req.uri().query(), "delay") {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        }
                        let mut resp = Response::new(Full::new(Bytes::from_static(b"hello\n")));
                        resp.headers_mut().insert("x-served-by", served_by);
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            }
        })
        .await;
        Tracking {
            server,
            name: name.to_owned(),
            arrived,
        }
    }

    /// Requests that have reached this backend so far.
    pub fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }

    pub fn addr(&self) -> String {
        self.server.addr()
    }
}

fn query_value(query: Option<&str>, key: &str) -> Option<u64> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

/// An HTTP/1.1 backend whose answers a test switches at will: `/health` answers `health_status`, every
/// other path `traffic_status` (with `x-served-by: NAME`). Counts both kinds of request.
pub struct Switchable {
    pub server: TestServer,
    state: Arc<SwitchState>,
}

#[derive(Default)]
struct SwitchState {
    health_status: std::sync::atomic::AtomicU16,
    traffic_status: std::sync::atomic::AtomicU16,
    health_checks: AtomicUsize,
    requests: AtomicUsize,
}

impl Switchable {
    /// Starts answering 200 to both.
    pub async fn start(name: &str) -> Switchable {
        let state = Arc::new(SwitchState::default());
        state.health_status.store(200, Ordering::SeqCst);
        state.traffic_status.store(200, Ordering::SeqCst);
        let served_by = HeaderValue::from_str(name).expect("name is a header value");
        let shared = state.clone();
        let server = spawn_server(move |stream| {
            let state = shared.clone();
            let served_by = served_by.clone();
            async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (status, counter) = if req.uri().path() == "/health" {
                        (&state.health_status, &state.health_checks)
                    } else {
                        (&state.traffic_status, &state.requests)
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    let status = StatusCode::from_u16(status.load(Ordering::SeqCst))
                        .expect("a valid status");
                    let mut resp = Response::new(Full::new(Bytes::from_static(b"hello\n")));
                    *resp.status_mut() = status;
                    resp.headers_mut().insert("x-served-by", served_by.clone());
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            }
        })
        .await;
        Switchable { server, state }
    }

    pub fn set_health(&self, status: u16) {
        self.state.health_status.store(status, Ordering::SeqCst);
    }

    pub fn set_traffic(&self, status: u16) {
        self.state.traffic_status.store(status, Ordering::SeqCst);
    }

    /// Health checks answered so far.
    pub fn health_checks(&self) -> usize {
        self.state.health_checks.load(Ordering::SeqCst)
    }

    /// Other requests answered so far.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub fn addr(&self) -> String {
        self.server.addr()
    }
}

/// A TLS backend (see [`tls_echo`]) and the handshakes it has completed.
pub struct TlsEcho {
    pub server: TestServer,
    handshakes: Arc<AtomicUsize>,
}

impl TlsEcho {
    pub fn addr(&self) -> String {
        self.server.addr()
    }

    /// TLS connections accepted so far (handshake completed).
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

/// A backend serving HTTPS with `cert` (tokio-rustls, hyper-util's auto builder: HTTP/1.1 or HTTP/2,
/// whichever the client speaks), offering the ALPN protocols `alpn`. Every answer is `200` with the body
/// `VERSION alpn=PROTOCOL sni=NAME` as it saw them (`HTTP/2.0 alpn=h2 sni=-`); HTTP/2 answers carry the
/// trailers `grpc-status: 0`, `grpc-message: fine`.
pub async fn tls_echo(cert: &super::certs::Issued, alpn: &[&str]) -> TlsEcho {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key PEM");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server certificate");
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counter = handshakes.clone();
    let server = spawn_server(move |stream| {
        let (acceptor, counter) = (acceptor.clone(), counter.clone());
        async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let (_, conn) = tls.get_ref();
            let seen = format!(
                "alpn={} sni={}",
                conn.alpn_protocol()
                    .map_or("-".into(), |p| String::from_utf8_lossy(p).into_owned()),
                conn.server_name().unwrap_or("-"),
            );
            let svc = service_fn(move |req: Request<Incoming>| {
                let body = format!("{:?} {seen}", req.version());
                async move {
                    let mut frames = vec![Ok::<_, Infallible>(Frame::data(Bytes::from(body)))];
                    if req.version() == hyper::Version::HTTP_2 {
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", HeaderValue::from_static("0"));
                        trailers.insert("grpc-message", HeaderValue::from_static("fine"));
                        frames.push(Ok(Frame::trailers(trailers)));
                    }
                    Ok::<_, Infallible>(Response::new(StreamBody::new(stream::iter(frames))))
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        }
    })
    .await;
    TlsEcho { server, handshakes }
}

/// An HTTP/1.1 backend that answers `200 hello` with `x-served-by: NAME`, and on `/login` also sets the
/// application's session cookie `SESSIONID=NAME`.
pub async fn session(name: &str) -> TestServer {
    let served_by = HeaderValue::from_str(name).expect("name is a header value");
    let cookie = HeaderValue::from_str(&format!("SESSIONID={name}; Path=/")).expect("cookie");
    spawn_server(move |stream| {
        let (served_by, cookie) = (served_by.clone(), cookie.clone());
        async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let mut resp = Response::new(Full::new(Bytes::from_static(b"hello\n")));
                resp.headers_mut().insert("x-served-by", served_by.clone());
                if req.uri().path() == "/login" {
                    resp.headers_mut()
                        .insert(http::header::SET_COOKIE, cookie.clone());
                }
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        }
    })
    .await
}
