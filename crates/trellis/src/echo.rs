//! `trellis echo`: a tiny, fast HTTP backend for demos, tests and load tests.
//!
//! HTTP/1.1 (keep-alive) and h2c (prior knowledge) on one port, one task per connection.
//!
//! - `GET /healthz` → `200 ok\n`
//! - anything else: the request body is read to the end (counted, never buffered), then:
//!   - `?status=N` answers with that status (default 200)
//!   - `?delay=MS` waits that many milliseconds before answering
//!   - `?bytes=N` streams exactly N bytes (`application/octet-stream`) in 64 KiB chunks
//!   - `?echo` answers a JSON description of the request
//!   - otherwise `hello from NAME\n` (`text/plain`)
//!
//! Every response carries `x-served-by: NAME`; NAME defaults to the bound address.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;

/// Options of `trellis echo`.
pub struct EchoOptions {
    pub listen: SocketAddr,
    pub name: Option<String>,
}

/// Size of the chunks of a `?bytes=N` body.
const CHUNK: usize = 64 * 1024;
/// The static buffer every `?bytes=N` body is cut from.
static FILL: [u8; CHUNK] = [b'x'; CHUNK];

const X_SERVED_BY: HeaderName = HeaderName::from_static("x-served-by");
const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain");
const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Binds `opts.listen`, prints `echo listening on ADDR` and serves until ctrl-c or SIGTERM.
/// Must be called inside a tokio runtime.
pub async fn run(opts: EchoOptions) -> anyhow::Result<()> {
    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("echo: cannot listen on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "echo listening on {addr}")?;
        out.flush()?;
    }
    let name = opts.name.unwrap_or_else(|| addr.to_string());
    tokio::select! {
        res = serve(listener, name) => res,
        res = shutdown_signal() => res,
    }
}

/// Serves HTTP/1.1 and h2c on an already bound listener, forever (or until an error that is not
/// about a single connection).
pub async fn serve(listener: TcpListener, name: String) -> anyhow::Result<()> {
    let state = Arc::new(State::new(name)?);
    let builder = Arc::new(Builder::new(TokioExecutor::new()));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Typically EMFILE / ENFILE / ECONNABORTED: back off briefly and keep serving.
                tracing::warn!(error = %err, "echo: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(state.handle(req).await) }
            });
            // Connection errors (client gone, protocol errors) concern only this connection.
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            res = tokio::signal::ctrl_c() => res?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// Everything a response needs that can be built once.
struct State {
    name: String,
    served_by: HeaderValue,
    hello: Bytes,
}

impl State {
    fn new(name: String) -> anyhow::Result<Self> {
        let served_by = HeaderValue::from_str(&name)
            .with_context(|| format!("echo: name {name:?} is not a valid header value"))?;
        let hello = Bytes::from(format!("hello from {name}\n"));
        Ok(State {
            name,
            served_by,
            hello,
        })
    }

    fn respond(
        &self,
        status: StatusCode,
        content_type: HeaderValue,
        body: EchoBody,
    ) -> Response<EchoBody> {
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, content_type);
        headers.insert(X_SERVED_BY, self.served_by.clone());
        resp
    }

    fn bad_request(&self, msg: &'static str) -> Response<EchoBody> {
        self.respond(
            StatusCode::BAD_REQUEST,
            TEXT_PLAIN,
            EchoBody::full(Bytes::from_static(msg.as_bytes())),
        )
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<EchoBody> {
        if req.uri().path() == "/healthz" {
            return self.respond(
                StatusCode::OK,
                TEXT_PLAIN,
                EchoBody::full(Bytes::from_static(b"ok\n")),
            );
        }
        let (parts, mut body) = req.into_parts();

        // Read the body to its end, counting bytes: never held as a whole.
        let mut body_bytes: u64 = 0;
        if !body.is_end_stream() {
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Some(data) = frame.data_ref() {
                            body_bytes += data.len() as u64;
                        }
                    }
                    Err(_) => return self.bad_request("error reading the request body\n"),
                }
            }
        }

        let Some(query) = parts.uri.query() else {
            // The load-test path: no per-request formatting.
            return self.respond(
                StatusCode::OK,
                TEXT_PLAIN,
                EchoBody::full(self.hello.clone()),
            );
        };

        let mut status = StatusCode::OK;
        let mut delay_ms: Option<u64> = None;
        let mut bytes: Option<u64> = None;
        let mut echo = false;
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "status" => {
                    match value
                        .parse::<u16>()
                        .ok()
                        .and_then(|n| StatusCode::from_u16(n).ok())
                    {
                        Some(s) => status = s,
                        None => return self.bad_request("status must be a number in 100..=999\n"),
                    }
                }
                "delay" => match value.parse() {
                    Ok(ms) => delay_ms = Some(ms),
                    Err(_) => return self.bad_request("delay must be a number of milliseconds\n"),
                },
                "bytes" => match value.parse() {
                    Ok(n) => bytes = Some(n),
                    Err(_) => return self.bad_request("bytes must be a number\n"),
                },
                "echo" => echo = true,
                _ => {}
            }
        }

        if let Some(ms) = delay_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }

        if echo {
            let mut headers = serde_json::Map::new();
            for (name, value) in parts.headers.iter() {
                let value = serde_json::Value::String(
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                );
                match headers.entry(name.as_str()) {
                    serde_json::map::Entry::Vacant(e) => {
                        e.insert(serde_json::Value::Array(vec![value]));
                    }
                    serde_json::map::Entry::Occupied(mut e) => {
                        if let serde_json::Value::Array(values) = e.get_mut() {
                            values.push(value);
                        }
                    }
                }
            }
            let doc = serde_json::json!({
                "server": self.name,
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "query": query,
                "version": format!("{:?}", parts.version),
                "headers": headers,
                "body_bytes": body_bytes,
            });
            let mut out = serde_json::to_vec(&doc).unwrap_or_default();
            out.push(b'\n');
            return self.respond(status, APPLICATION_JSON, EchoBody::full(Bytes::from(out)));
        }

        if let Some(n) = bytes {
            return self.respond(status, OCTET_STREAM, EchoBody::Fill { remaining: n });
        }

        self.respond(status, TEXT_PLAIN, EchoBody::full(self.hello.clone()))
    }
}

/// A response body: either one buffer or `remaining` bytes streamed from [`FILL`].
/// Its exact size is always known, so hyper sends a content-length.
pub enum EchoBody {
    Full(Option<Bytes>),
    Fill { remaining: u64 },
}

impl EchoBody {
    fn full(bytes: Bytes) -> Self {
        EchoBody::Full(Some(bytes))
    }
}

impl Body for EchoBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        match this {
            EchoBody::Full(bytes) => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            EchoBody::Fill { remaining } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let n = (*remaining).min(CHUNK as u64) as usize;
                *remaining -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&FILL[..n])))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            EchoBody::Full(bytes) => !matches!(bytes, Some(b) if !b.is_empty()),
            EchoBody::Fill { remaining } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            EchoBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            EchoBody::Fill { remaining } => SizeHint::with_exact(*remaining),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;
    use http_body_util::Empty;
    use std::time::Instant;
    use tokio::net::TcpStream;

    async fn start(name: Option<&str>) -> (SocketAddr, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let name = name.map(str::to_owned).unwrap_or_else(|| addr.to_string());
        tokio::spawn(serve(listener, name.clone()));
        (addr, name)
    }

    type Sender<B> = hyper::client::conn::http1::SendRequest<B>;

    async fn h1<B>(addr: SocketAddr) -> Sender<B>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender
    }

    async fn get(sender: &mut Sender<Empty<Bytes>>, uri: &str) -> (Response<()>, Bytes) {
        let req = Request::get(uri)
            .header("host", "echo.test")
            .body(Empty::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (Response::from_parts(parts, ()), body)
    }

    #[tokio::test]
    async fn healthz_and_plain() {
        let (addr, name) = start(None).await;
        assert_eq!(name, addr.to_string());
        let mut s = h1(addr).await;
        let (resp, body) = get(&mut s, "/healthz").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(&body[..], b"ok\n");
        assert_eq!(resp.headers()["x-served-by"], name.as_str());

        // Same keep-alive connection.
        let (resp, body) = get(&mut s, "/anything").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(body, format!("hello from {name}\n"));
        assert_eq!(resp.headers()["content-type"], "text/plain");
        assert_eq!(resp.headers()["x-served-by"], name.as_str());
        assert_eq!(
            resp.headers()["content-length"],
            body.len().to_string().as_str()
        );
    }

    #[tokio::test]
    async fn status_and_delay() {
        let (addr, _) = start(Some("b1")).await;
        let mut s = h1(addr).await;
        let (resp, body) = get(&mut s, "/x?status=503").await;
        assert_eq!(resp.status(), 503);
        assert_eq!(&body[..], b"hello from b1\n");
        assert_eq!(resp.headers()["x-served-by"], "b1");

        let t = Instant::now();
        let (resp, _) = get(&mut s, "/x?delay=150&status=201").await;
        assert!(t.elapsed() >= Duration::from_millis(150));
        assert_eq!(resp.status(), 201);

        let (resp, _) = get(&mut s, "/x?status=abc").await;
        assert_eq!(resp.status(), 400);
        let (resp, _) = get(&mut s, "/x?status=42").await;
        assert_eq!(resp.status(), 400);
    }

    #[tokio::test]
    async fn bytes() {
        let (addr, _) = start(Some("b1")).await;
        let mut s = h1(addr).await;
        for n in [0usize, 1, CHUNK, CHUNK + 1, 3_000_000] {
            let (resp, body) = get(&mut s, &format!("/b?bytes={n}")).await;
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.headers()["content-type"], "application/octet-stream");
            assert_eq!(resp.headers()["content-length"], n.to_string().as_str());
            assert_eq!(body.len(), n);
            assert!(body.iter().all(|&b| b == b'x'));
        }
    }

    #[tokio::test]
    async fn echo_http1_with_streamed_upload() {
        let (addr, _) = start(Some("b1")).await;
        let mut s = h1::<EchoBody>(addr).await;
        let upload: u64 = 64 * 1024 * 1024 + 7;
        let req = Request::builder()
            .method(Method::POST)
            .uri("/some/path?echo&x=1")
            .header("host", "echo.test")
            .header("x-multi", "a")
            .header("x-multi", "b")
            .header("content-length", upload.to_string())
            .body(EchoBody::Fill { remaining: upload })
            .unwrap();
        let resp = s.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(resp.headers()["x-served-by"], "b1");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["server"], "b1");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/some/path");
        assert_eq!(v["query"], "echo&x=1");
        assert_eq!(v["version"], "HTTP/1.1");
        assert_eq!(v["body_bytes"], upload);
        assert_eq!(v["headers"]["x-multi"], serde_json::json!(["a", "b"]));
        assert_eq!(v["headers"]["host"], serde_json::json!(["echo.test"]));
    }

    #[tokio::test]
    async fn echo_h2c_prior_knowledge() {
        let (addr, _) = start(Some("b2")).await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut s, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        for _ in 0..2 {
            let req = Request::post("http://echo.test/p?echo&status=202")
                .body(EchoBody::Fill { remaining: 100_000 })
                .unwrap();
            let resp = s.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 202);
            assert_eq!(resp.headers()["x-served-by"], "b2");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["version"], "HTTP/2.0");
            assert_eq!(v["body_bytes"], 100_000);
            assert_eq!(v["path"], "/p");
        }
        let req = Request::get("http://echo.test/healthz")
            .body(EchoBody::full(Bytes::new()))
            .unwrap();
        let resp = s.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            &resp.into_body().collect().await.unwrap().to_bytes()[..],
            b"ok\n"
        );
    }

    #[tokio::test]
    async fn run_binds_and_serves() {
        // Port 0 works and the run future serves until dropped.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let task = tokio::spawn(run(EchoOptions {
            listen: addr,
            name: None,
        }));
        let mut connected = None;
        for _ in 0..200 {
            if let Ok(stream) = TcpStream::connect(addr).await {
                connected = Some(stream);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stream = connected.expect("run did not start listening");
        let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let (resp, body) = get(&mut s, "/").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(body, format!("hello from {addr}\n"));
        task.abort();
    }

    #[tokio::test]
    async fn invalid_name_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        assert!(serve(listener, "bad\nname".to_owned()).await.is_err());
    }
}
