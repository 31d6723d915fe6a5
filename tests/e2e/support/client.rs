//! Real HTTP clients: reqwest for ordinary traffic, hyper's connection-level clients where a test needs
//! exact control over headers, HTTP/2 `:authority`, trailers or the connection's lifetime.

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::header::HeaderMap;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// A whole response: status, headers, body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    /// The header's only value as text; `None` when absent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header value is ASCII"))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `x-served-by` header set by the echo and test backends.
    pub fn served_by(&self) -> String {
        self.header("x-served-by")
            .unwrap_or_else(|| panic!("no x-served-by in {self:?}"))
            .to_owned()
    }

    /// The body parsed as JSON (echo's `?echo`).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    /// Asserts a trellis-made error: `status`, `x-trellis-error: code` and a short text body.
    pub fn assert_trellis_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "status of {self:?}");
        assert_eq!(
            self.header("x-trellis-error"),
            Some(code),
            "x-trellis-error of {self:?}"
        );
        assert!(
            !self.body.is_empty() && self.body.len() < 512,
            "error body should be short and non-empty: {self:?}"
        );
        assert!(
            std::str::from_utf8(&self.body).is_ok(),
            "error body should be text: {self:?}"
        );
    }

    pub async fn from_hyper(resp: Response<hyper::body::Incoming>) -> Reply {
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await.expect("read response body");
        let trailers = collected.trailers().cloned();
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        }
    }
}

/// An HTTP/1.1 reqwest client: no proxy from the environment, at most one idle connection, so
/// sequential requests reuse a single connection.
pub fn http1() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .build()
        .expect("reqwest client")
}

/// An h2c client (HTTP/2 with prior knowledge, no upgrade dance).
pub fn h2c() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("reqwest client")
}

/// `http://127.0.0.1:PORT{path}`.
pub fn url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

/// Sends a reqwest request and reads the whole response.
pub async fn send(req: reqwest::RequestBuilder) -> Reply {
    let resp = req.send().await.expect("request through trellis");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.expect("response body");
    Reply {
        status,
        headers,
        body,
        trailers: None,
    }
}

/// GET `path` on `port`.
pub async fn get(client: &reqwest::Client, port: u16, path: &str) -> Reply {
    send(client.get(url(port, path))).await
}

/// GET `path` on `port` `n` times in sequence; the `x-served-by` of each answer, in order. Every answer
/// must be a 200.
pub async fn served_sequence(
    client: &reqwest::Client,
    port: u16,
    path: &str,
    n: usize,
) -> Vec<String> {
    let mut seq = Vec::with_capacity(n);
    for i in 0..n {
        let reply = get(client, port, path).await;
        assert_eq!(reply.status, 200, "request {i}: {reply:?}");
        seq.push(reply.served_by());
    }
    seq
}

/// How many times each name occurs.
pub fn tally<'a>(names: impl IntoIterator<Item = &'a String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for name in names {
        *counts.entry(name.clone()).or_insert(0) += 1;
    }
    counts
}

/// A hyper HTTP/1.1 connection to `port`, with its driver task (it finishes when the peer closes).
pub async fn h1_connect(
    port: u16,
) -> (
    http1::SendRequest<Full<Bytes>>,
    JoinHandle<hyper::Result<()>>,
) {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to trellis");
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    (sender, tokio::spawn(conn))
}

/// A hyper HTTP/2 prior-knowledge connection to `port`.
pub async fn h2_connect(port: u16) -> http2::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to trellis");
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    sender
}

/// Sends `req` on an HTTP/1.1 connection and reads the whole response.
pub async fn h1_send(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Reply {
    sender.ready().await.expect("HTTP/1.1 connection ready");
    let resp = sender.send_request(req).await.expect("HTTP/1.1 request");
    Reply::from_hyper(resp).await
}

/// Sends `req` on an HTTP/2 connection and reads the whole response, trailers included.
pub async fn h2_send(
    sender: &mut http2::SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Reply {
    sender.ready().await.expect("HTTP/2 connection ready");
    let resp = sender.send_request(req).await.expect("HTTP/2 request");
    Reply::from_hyper(resp).await
}

/// A body-less GET for hyper clients; `uri` is origin-form for HTTP/1.1 (with `Host: localhost` unless
/// `headers` has one: HTTP/1.1 requires it, and hyper's client does not add it), absolute for HTTP/2.
pub fn get_request(uri: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::get(uri);
    let has_host = headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host"));
    if uri.starts_with('/') && !has_host {
        builder = builder.header("host", "localhost");
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::new()))
        .expect("valid request")
}
