//! One health probe: a fresh connection, one question, a verdict with what was seen.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, USER_AGENT};
use http::{HeaderValue, Request};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use trellis_config::{HealthCheck, HealthCheckProtocol};
use trellis_targets::ProbeResult;

use crate::tls;

const AGENT: &str = concat!("trellis-health-check/", env!("CARGO_PKG_VERSION"));

/// Where a target is probed: its own address, or the same IP on `health_check.port`.
pub fn probe_address(check: &HealthCheck, target: SocketAddr) -> SocketAddr {
    match check.port {
        Some(port) => SocketAddr::new(target.ip(), port),
        None => target,
    }
}

/// Probes `target` once, on a new connection that is closed afterwards, within `check.timeout`.
pub async fn probe(check: &HealthCheck, target: SocketAddr) -> ProbeResult {
    let address = probe_address(check, target);
    let attempt = async {
        let stream = TcpStream::connect(address)
            .await
            .map_err(|e| connect_failure(&e))?;
        // Probes are small and rare; waiting for more bytes to coalesce only adds latency.
        let _ = stream.set_nodelay(true);
        match check.protocol {
            HealthCheckProtocol::Tcp => Ok(ProbeResult::pass("connected")),
            HealthCheckProtocol::Http => http_get(stream, check, address).await,
            HealthCheckProtocol::Https => {
                let tls = TlsConnector::from(Arc::clone(tls::client_config()))
                    .connect(tls::server_name(address), stream)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
                http_get(tls, check, address).await
            }
        }
    };
    match tokio::time::timeout(check.timeout, attempt).await {
        Ok(Ok(result)) => result,
        Ok(Err(reason)) => ProbeResult::fail(reason),
        Err(_) => ProbeResult::fail(format!("timeout after {}", fmt_duration(check.timeout))),
    }
}

/// `GET path` with the target's address as Host; the verdict is the status against the matcher.
async fn http_get<S>(
    stream: S,
    check: &HealthCheck,
    address: SocketAddr,
) -> Result<ProbeResult, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let request = Request::get(check.path.as_str())
        .header(HOST, address.to_string())
        .header(USER_AGENT, HeaderValue::from_static(AGENT))
        .header(CONNECTION, HeaderValue::from_static("close"))
        .body(Empty::new())
        .map_err(|e| format!("bad request: {e}"))?;
    // The connection is driven only while waiting for the response head, then dropped with it.
    let exchange = sender.send_request(request);
    tokio::pin!(conn);
    tokio::pin!(exchange);
    let response = tokio::select! {
        biased;
        r = &mut exchange => r.map_err(|e| response_failure(&e))?,
        // The connection can finish in the same step that delivers the response (`connection: close`),
        // or fail right after it: a response that arrived still counts.
        c = &mut conn => match (exchange.await, c) {
            (Ok(response), _) => response,
            (Err(_), Err(e)) | (Err(e), Ok(())) => return Err(response_failure(&e)),
        },
    };
    let status = response.status().as_u16();
    if check.matcher.matches(status) {
        Ok(ProbeResult::pass(format!("status {status}")))
    } else {
        Ok(ProbeResult::fail(format!(
            "status {status} not in {}",
            check.matcher.text
        )))
    }
}

fn connect_failure(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connect refused".to_string(),
        _ => format!("connect failed: {e}"),
    }
}

fn response_failure(e: &hyper::Error) -> String {
    if e.is_incomplete_message() {
        return "connection closed before a response".to_string();
    }
    if e.is_parse() {
        return format!("not an HTTP response: {}", with_causes(e));
    }
    // The io error underneath says what happened (reset, broken pipe); hyper's own message does not.
    let io = std::iter::successors(Some(e as &dyn std::error::Error), |e| e.source())
        .find_map(|e| e.downcast_ref::<io::Error>());
    match io.map(io::Error::kind) {
        Some(io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe) => {
            "connection reset before a response".to_string()
        }
        _ => format!("no response: {}", with_causes(e)),
    }
}

/// `error: cause: cause's cause`.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub(crate) fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
