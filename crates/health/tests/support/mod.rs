//! Shared pieces of the health integration tests: configuration text, small loopback servers that
//! record what they were asked, and a deadline-bounded wait.
//!
//! Every server binds 127.0.0.1:0 and runs as a task of the test's runtime; dropping the handle
//! stops it.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use trellis_config::{Config, HealthCheck};
use trellis_targets::{TargetState, TargetStats};

/// How long any wait for a state may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// Polls `f` every 10ms until it gives a value; panics naming `what` after [`DEADLINE`].
pub async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------------
// Configuration text
// ---------------------------------------------------------------------------------------------------

/// A service whose listener forwards to `groups` (which makes them "in use"). Nothing binds the
/// listener's port in these tests.
pub fn service(groups: &[&str]) -> String {
    let forward: Vec<String> = groups
        .iter()
        .map(|g| format!("{{ target_group = {g:?} }}"))
        .collect();
    format!(
        "[[service]]\nname = \"web\"\nhosts = [\"*\"]\n\n\
         [[service.listener]]\nname = \"http\"\nprotocol = \"http\"\nport = 18080\n\
         bind = \"127.0.0.1\"\ndefault_action = {{ forward = [{}] }}\n\n",
        forward.join(", ")
    )
}

/// `[[target_group]]` with the given targets and `[target_group.health_check]` lines.
pub fn target_group(name: &str, targets: &[SocketAddr], health_check: &str) -> String {
    let targets: Vec<String> = targets.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[[target_group]]\nname = {name:?}\ntargets = [{}]\n\n\
         [target_group.health_check]\n{health_check}\n\n",
        targets.join(", ")
    )
}

/// Validates configuration text, panicking with the diagnostics if it is not valid.
pub fn parse(text: &str) -> Config {
    match trellis_config::parse(text, Path::new("test.toml")) {
        Ok(config) => config,
        Err(e) => panic!("invalid test configuration: {e}\n---\n{text}"),
    }
}

/// The `health_check` of a one-group configuration with these `[target_group.health_check]` lines,
/// so probes see exactly what the validator makes of the text.
pub fn health_check(lines: &str) -> HealthCheck {
    let target: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let config = parse(&(service(&["web"]) + &target_group("web", &[target], lines)));
    config.target_groups[0].health_check.clone()
}

// ---------------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------------

/// An address nothing listens on: bound once to get a free port, then closed.
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The request head, without the final blank line.
    pub head: String,
    /// The status it was answered with.
    pub status: u16,
    /// The watched target's state when the request arrived: a prober sends its next probe only after
    /// the previous one was counted, so this is the state after exactly the earlier requests.
    pub state: Option<TargetState>,
}

impl Seen {
    /// The request line, e.g. `GET / HTTP/1.1`.
    pub fn request_line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }

    /// The value of header `name` (case-insensitive); `None` if absent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

#[derive(Default)]
struct Shared {
    status: AtomicU16,
    connections: AtomicUsize,
    log: Mutex<Vec<Seen>>,
    watch: Mutex<Option<Arc<TargetStats>>>,
}

/// What a [`Server`] does with each accepted connection.
#[derive(Clone)]
enum Behaviour {
    /// Answers one HTTP/1.1 request with the current status, then closes.
    Http,
    /// The same inside TLS.
    Https(TlsAcceptor),
    /// Accepts and never answers (keeps the connection open).
    Silent,
    /// Reads the request, then closes without a word.
    Hangup,
    /// Closes each connection as soon as it is accepted, unread.
    Slam,
}

/// A loopback server that counts connections and logs requests; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Plain HTTP, answering every request with `status` (see [`Server::set_status`]).
    pub async fn http(status: u16) -> Server {
        Server::start(Behaviour::Http, status).await
    }

    /// HTTPS with a fresh self-signed certificate, answering with `status`.
    pub async fn https(status: u16) -> Server {
        Server::start(Behaviour::Https(self_signed_acceptor()), status).await
    }

    /// Accepts connections and never answers.
    pub async fn silent() -> Server {
        Server::start(Behaviour::Silent, 0).await
    }

    /// Accepts, reads the request, closes without answering.
    pub async fn hangup() -> Server {
        Server::start(Behaviour::Hangup, 0).await
    }

    /// Accepts and closes at once, without reading (the peer usually sees a reset).
    pub async fn slam() -> Server {
        Server::start(Behaviour::Slam, 0).await
    }

    async fn start(behaviour: Behaviour, status: u16) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        shared.status.store(status, Ordering::SeqCst);
        let task = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move {
                // Held so that silent connections stay open for the server's life.
                let mut parked = Vec::new();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    let shared = Arc::clone(&shared);
                    match behaviour.clone() {
                        Behaviour::Silent => parked.push(stream),
                        Behaviour::Slam => drop(stream),
                        Behaviour::Http => {
                            tokio::spawn(async move { answer(stream, &shared, true).await });
                        }
                        Behaviour::Hangup => {
                            tokio::spawn(async move { answer(stream, &shared, false).await });
                        }
                        Behaviour::Https(acceptor) => {
                            tokio::spawn(async move {
                                if let Ok(tls) = acceptor.accept(stream).await {
                                    answer(tls, &shared, true).await;
                                }
                            });
                        }
                    }
                }
            }
        });
        Server { addr, shared, task }
    }

    /// The status later requests are answered with.
    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Records `stats`' health state with every request from now on.
    pub fn watch(&self, stats: Arc<TargetStats>) {
        *lock(&self.shared.watch) = Some(stats);
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        lock(&self.shared.log).len()
    }

    /// Every request received so far, in order.
    pub fn log(&self) -> Vec<Seen> {
        lock(&self.shared.log).clone()
    }

    /// Waits until at least `n` requests have arrived; returns the log then.
    pub async fn wait_requests(&self, n: usize) -> Vec<Seen> {
        eventually(&format!("{n} requests at {}", self.addr), || {
            let log = self.log();
            (log.len() >= n).then_some(log)
        })
        .await
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads one request head; answers it (`respond`) with the current status or just closes.
/// Bytes that cannot start an HTTP request (a TLS ClientHello, say) get a `400`, as real servers do.
async fn answer<S>(mut stream: S, shared: &Shared, respond: bool)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.first().is_some_and(|b| !b.is_ascii_uppercase()) {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            let _ = stream.shutdown().await;
            return;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let status = shared.status.load(Ordering::SeqCst);
    let state = lock(&shared.watch)
        .as_ref()
        .map(|stats| stats.view().health.state);
    lock(&shared.log).push(Seen {
        head: String::from_utf8_lossy(&buf[..end]).into_owned(),
        status,
        state,
    });
    if respond {
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Whatever");
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n"
        );
        let _ = stream.write_all(response.as_bytes()).await;
    }
    let _ = stream.shutdown().await;
}

/// A TLS acceptor with a fresh self-signed certificate for 127.0.0.1 and localhost.
pub fn self_signed_acceptor() -> TlsAcceptor {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        certified.key_pair.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    TlsAcceptor::from(Arc::new(config))
}
