//! The admin API seen from the command line: where it listens, and one HTTP/1.1 request per connection.
//!
//! A plain hyper connection rather than a client library: the CLI sends one request and exits, so a
//! connection pool, redirects or TLS would be weight without use (the admin API speaks plain HTTP).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONNECTION, CONTENT_TYPE, HOST, SERVER, USER_AGENT};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

/// Where the admin API listens when neither `--admin` nor a configuration says otherwise.
pub const DEFAULT_PORT: u16 = 9901;

/// The admin API's address: a host (name or IP, IPv6 without brackets) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    host: String,
    port: u16,
}

impl Default for Endpoint {
    fn default() -> Self {
        Endpoint::from_listen(SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT)))
    }
}

impl Endpoint {
    /// `--admin`: `HOST:PORT` or `http://HOST:PORT` (a trailing `/` is fine, `http://HOST` means port
    /// 80); HOST is a name, an IPv4 address or a bracketed IPv6 address.
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        let text = text.trim();
        let (rest, default_port) = match text.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (rest, Some(80)),
            Some((scheme, _)) => {
                return Err(format!(
                    "{text:?}: the admin API speaks plain http, not {scheme}"
                ))
            }
            None => (text, None),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "{text:?}: give only HOST:PORT or http://HOST:PORT, without a path"
            ));
        }
        if let Ok(addr) = authority.parse::<SocketAddr>() {
            return Ok(Endpoint::from_listen(addr));
        }
        let (host, port) = split_host_port(authority)
            .ok_or_else(|| format!("{text:?} is not HOST:PORT or http://HOST:PORT"))?;
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("{text:?}: {p:?} is not a port number"))?,
            None => default_port.ok_or_else(|| format!("{text:?} needs a port (HOST:PORT)"))?,
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Endpoint::from_listen(SocketAddr::new(ip, port)));
        }
        if host.is_empty() || host.contains(['[', ']', ':']) {
            return Err(format!("{text:?} is not HOST:PORT or http://HOST:PORT"));
        }
        Ok(Endpoint {
            host: host.to_owned(),
            port,
        })
    }

    /// The address to reach a listener bound to `listen`: one bound to every address (0.0.0.0, ::) is
    /// reached on loopback, which it also serves.
    pub fn from_listen(listen: SocketAddr) -> Endpoint {
        let ip = match listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Endpoint {
            host: ip.to_string(),
            port: listen.port(),
        }
    }

    /// `HOST:PORT` as it goes in a URL and the `Host` header (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.authority())
    }
}

/// `host:port`, `[v6]:port`, `host`, `[v6]` → host (no brackets) and the port text, if any.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match authority.split_once(':') {
        Some((host, port)) => Some((host, Some(port))),
        None => Some((authority, None)),
    }
}

/// Where the admin API's address came from: what to change when something else answers there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `--admin`.
    Flag,
    /// `admin.listen` of this configuration file.
    Config(PathBuf),
    /// Neither: [`DEFAULT_PORT`] on loopback.
    Default,
}

/// The admin API of one running trellis, with the bearer token it wants (if any).
pub struct Client {
    pub endpoint: Endpoint,
    pub origin: Origin,
    pub token: Option<String>,
}

/// A complete answer of the admin API.
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
    content_type: Option<String>,
    /// It carries the admin API's `Server` header.
    marked: bool,
}

/// Keys one of which every JSON answer of the admin API's `/v1` endpoints has (status, reload, a
/// registration, scaling, protection, an error): how a daemon from before the `Server` header is known.
const V1_KEYS: &[&str] = &["config", "result", "target_group", "scaling_group", "error"];

impl Reply {
    /// Whether the admin API of trellis sent this (as an answer to `path`), rather than whatever else
    /// listens on its port. Without the `Server` header (a daemon from before it) only an answer of the
    /// expected shape counts: a `/v1` JSON object with a known key, or `/healthz`'s `200 ok`, which
    /// `trellis echo` answers too (the compose files health-check echo backends with `trellis
    /// healthcheck`, as their image has no curl).
    fn is_trellis(&self, path: &str) -> bool {
        if self.marked {
            return true;
        }
        if path == "/healthz" {
            return self.status == StatusCode::OK && self.body.trim_ascii() == b"ok";
        }
        path.starts_with("/v1/")
            && self
                .json()
                .as_ref()
                .and_then(Value::as_object)
                .is_some_and(|o| V1_KEYS.iter().any(|k| o.contains_key(*k)))
    }

    /// `HTTP 404 Not Found, text/html: <h1>Not Found</h1>`: what answered, in one short line.
    fn summary(&self) -> String {
        let mut out = format!("HTTP {}", self.status);
        if let Some(content_type) = &self.content_type {
            out.push_str(&format!(", {content_type}"));
        }
        let text = String::from_utf8_lossy(&self.body);
        match text.lines().map(str::trim).find(|l| !l.is_empty()) {
            Some(line) => {
                out.push_str(": ");
                out.push_str(&printable(line, 60));
            }
            None => out.push_str(", no body"),
        }
        out
    }

    /// The body as JSON, when it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// What went wrong, in the server's words: its `{"error"}` if it sent one, else the status and
    /// the first line of the body (something else may be listening on that port).
    pub fn error(&self) -> String {
        if let Some(message) = self.json().as_ref().and_then(|v| v["error"].as_str()) {
            return message.to_owned();
        }
        let text = String::from_utf8_lossy(&self.body);
        match text.lines().find(|l| !l.trim().is_empty()) {
            Some(line) => format!("HTTP {}: {}", self.status, line.trim()),
            None => format!("HTTP {}", self.status),
        }
    }
}

impl Client {
    /// Sends one request and reads the whole answer, all within `limit`. `body` goes as JSON.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        limit: Duration,
    ) -> anyhow::Result<Reply> {
        let url = self.endpoint.url();
        let deadline = Instant::now() + limit;
        let limit_text = humantime::format_duration(limit);
        let connect = TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port));
        let stream = match timeout_at(deadline, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => bail!("{}", unreachable(&url, &describe(&e))),
            Err(_) => bail!(
                "{}",
                unreachable(&url, &format!("no connection within {limit_text}"))
            ),
        };
        let request = self.request(method, path, body)?;
        let reply = match timeout_at(deadline, exchange(stream, request)).await {
            Ok(Ok(reply)) => reply,
            // Bytes that are no HTTP answer (an SSH banner, a TLS alert): something else listens there.
            Ok(Err(e)) if e.is_parse() || e.is_parse_status() => {
                bail!("{}", self.not_trellis(&format!("not HTTP: {e}")))
            }
            Ok(Err(e)) => return Err(anyhow!(e).context(format!("the admin API at {url} failed"))),
            Err(_) => bail!("the admin API at {url} did not answer within {limit_text}"),
        };
        if !reply.is_trellis(path) {
            bail!("{}", self.not_trellis(&reply.summary()));
        }
        Ok(reply)
    }

    /// Something answered at the address, but not the admin API: say what, and how to aim elsewhere.
    fn not_trellis(&self, what: &str) -> String {
        let origin = match &self.origin {
            Origin::Flag => "it is the --admin address".to_owned(),
            Origin::Config(path) => format!("it is admin.listen of {}", path.display()),
            Origin::Default => "it is the default address".to_owned(),
        };
        format!(
            "{} answered but is not a trellis admin API ({what}); {origin}: pass -c FILE (the \
             configuration of the running trellis) or --admin URL",
            self.endpoint.authority()
        )
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Request<Full<Bytes>>> {
        // Every write is JSON, body or not: the admin API refuses any other type (which a cross-site
        // page could send without the browser asking first).
        let json = body.is_some() || !matches!(method, Method::GET | Method::HEAD);
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.endpoint.authority())
            .header(USER_AGENT, concat!("trellis/", env!("CARGO_PKG_VERSION")))
            .header(ACCEPT, "application/json")
            // One request per connection: the server need not keep it open for another.
            .header(CONNECTION, "close");
        if let Some(token) = &self.token {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if json {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let body = body.map_or_else(Bytes::new, |value| Bytes::from(value.to_string()));
        builder
            .body(Full::new(body))
            .context("the admin token cannot go in an HTTP header")
    }
}

async fn exchange(stream: TcpStream, request: Request<Full<Bytes>>) -> hyper::Result<Reply> {
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection does the I/O; it ends by itself once the response is read (or on error).
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let status = response.status();
    let headers = response.headers();
    let marked = headers
        .get(SERVER)
        .is_some_and(|v| v.as_bytes() == crate::admin::SERVER_NAME.as_bytes());
    let content_type = headers
        .get(CONTENT_TYPE)
        .map(|v| printable(&String::from_utf8_lossy(v.as_bytes()), 60));
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Reply {
        status,
        body,
        content_type,
        marked,
    })
}

/// At most `max` characters of a peer's text, control characters escaped: whatever answered on the
/// port must not drive the terminal.
fn printable(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars().take(max) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

fn unreachable(url: &str, why: &str) -> String {
    format!("cannot reach the admin API at {url}: {why} — is trellis running? (--admin URL)")
}

/// The usual connection failures in plain words, without the `(os error N)` suffix.
fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::TimedOut => "connection timed out".to_owned(),
        _ => {
            let text = e.to_string();
            let text = match text.find(" (os error") {
                Some(i) => &text[..i],
                None => &text,
            };
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => text.to_owned(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> String {
        Endpoint::parse(text).map(|e| e.url()).unwrap_or_else(|e| e)
    }

    #[test]
    fn admin_accepts_host_port_and_http_urls() {
        assert_eq!(parsed("127.0.0.1:9901"), "http://127.0.0.1:9901");
        assert_eq!(parsed("http://127.0.0.1:9901"), "http://127.0.0.1:9901");
        assert_eq!(parsed("HTTP://127.0.0.1:9901/"), "http://127.0.0.1:9901");
        assert_eq!(parsed("localhost:9000"), "http://localhost:9000");
        assert_eq!(parsed("http://admin.internal"), "http://admin.internal:80");
        assert_eq!(parsed("[::1]:9901"), "http://[::1]:9901");
        assert_eq!(parsed("http://[fd00::7]:9901/"), "http://[fd00::7]:9901");
    }

    #[test]
    fn admin_on_every_address_is_reached_on_loopback() {
        assert_eq!(parsed("0.0.0.0:9901"), "http://127.0.0.1:9901");
        assert_eq!(parsed("http://[::]:9901"), "http://[::1]:9901");
        let any_v4 = "0.0.0.0:9902".parse().unwrap();
        assert_eq!(Endpoint::from_listen(any_v4).url(), "http://127.0.0.1:9902");
        let any_v6 = "[::]:9902".parse().unwrap();
        assert_eq!(Endpoint::from_listen(any_v6).url(), "http://[::1]:9902");
        let specific = "10.0.0.5:9902".parse().unwrap();
        assert_eq!(
            Endpoint::from_listen(specific).url(),
            "http://10.0.0.5:9902"
        );
        assert_eq!(Endpoint::default().url(), "http://127.0.0.1:9901");
    }

    #[test]
    fn admin_refuses_what_it_cannot_reach() {
        for bad in [
            "127.0.0.1",
            "https://127.0.0.1:9901",
            "http://127.0.0.1:9901/v1/status",
            "127.0.0.1:99999",
            "::1:9901",
            "[::1",
            ":9901",
            "",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    fn reply(status: u16, content_type: Option<&str>, body: &str, marked: bool) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap(),
            body: Bytes::from(body.to_owned()),
            content_type: content_type.map(str::to_owned),
            marked,
        }
    }

    #[test]
    fn the_admin_api_is_known_by_its_server_header_or_its_json() {
        assert!(reply(200, None, "ok\n", true).is_trellis("/healthz"));
        // A daemon from before the header, or `trellis echo`: `200 ok`, and nothing else.
        assert!(reply(200, None, "ok\n", false).is_trellis("/healthz"));
        assert!(!reply(200, None, "hello\n", false).is_trellis("/healthz"));
        assert!(!reply(503, None, "ok\n", false).is_trellis("/healthz"));
        // A daemon from before the header: its JSON.
        let status = r#"{"version":"0.1.0","config":{},"target_groups":[]}"#;
        assert!(reply(200, None, status, false).is_trellis("/v1/status"));
        let error = r#"{"error":"no target group web"}"#;
        assert!(reply(404, None, error, false).is_trellis("/v1/target-groups/web/targets"));
        for (body, why) in [
            ("hello\n", "not JSON"),
            ("[1, 2]", "not an object"),
            (r#"{"status":"UP"}"#, "none of the keys"),
        ] {
            assert!(
                !reply(200, None, body, false).is_trellis("/v1/status"),
                "{why}"
            );
        }
    }

    #[test]
    fn what_answered_is_one_short_printable_line() {
        let html = reply(
            404,
            Some("text/html"),
            "\n  <h1>Not Found</h1>\n<p>no</p>",
            false,
        );
        assert_eq!(
            html.summary(),
            "HTTP 404 Not Found, text/html: <h1>Not Found</h1>"
        );
        assert_eq!(
            reply(200, None, "", false).summary(),
            "HTTP 200 OK, no body"
        );
        let long = "x".repeat(100);
        assert_eq!(
            reply(200, None, &long, false).summary(),
            format!("HTTP 200 OK: {}…", "x".repeat(60))
        );
        assert_eq!(printable("a\u{1b}[2Jb", 60), "a\\u{1b}[2Jb");
    }

    #[test]
    fn not_trellis_says_where_the_address_came_from() {
        let client = |origin: Origin| Client {
            endpoint: Endpoint::default(),
            origin,
            token: None,
        };
        assert_eq!(
            client(Origin::Default).not_trellis("HTTP 200 OK: hello"),
            "127.0.0.1:9901 answered but is not a trellis admin API (HTTP 200 OK: hello); it is the \
             default address: pass -c FILE (the configuration of the running trellis) or --admin URL"
        );
        let from_file = client(Origin::Config("/etc/trellis/trellis.toml".into()));
        assert!(from_file
            .not_trellis("x")
            .contains("; it is admin.listen of /etc/trellis/trellis.toml: pass -c FILE"));
    }

    #[test]
    fn errors_are_the_servers_words() {
        let reply = |status: u16, body: &str| reply(status, None, body, true);
        assert_eq!(
            reply(404, "{\"error\":\"no target group web\"}\n").error(),
            "no target group web"
        );
        assert_eq!(
            reply(502, "\n<html>bad gateway</html>\n").error(),
            "HTTP 502 Bad Gateway: <html>bad gateway</html>"
        );
        assert_eq!(reply(500, "").error(), "HTTP 500 Internal Server Error");
    }

    #[test]
    fn every_write_is_sent_as_json_even_without_a_body() {
        let client = Client {
            endpoint: Endpoint::default(),
            origin: Origin::Default,
            token: Some("s3cret".to_owned()),
        };
        let content_type = |method: Method, body: Option<&Value>| {
            let request = client.request(method, "/v1/x", body).unwrap();
            assert_eq!(request.headers()[AUTHORIZATION], "Bearer s3cret");
            assert_eq!(request.headers()[HOST], "127.0.0.1:9901");
            request.headers().get(CONTENT_TYPE).cloned()
        };
        let json = Some(http::HeaderValue::from_static("application/json"));
        assert_eq!(content_type(Method::POST, None), json);
        assert_eq!(content_type(Method::DELETE, None), json);
        assert_eq!(
            content_type(Method::PUT, Some(&serde_json::json!({}))),
            json
        );
        assert_eq!(content_type(Method::GET, None), None);
    }

    #[test]
    fn connection_failures_read_plainly() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(describe(&refused), "connection refused");
        let other = io::Error::from_raw_os_error(101);
        assert_eq!(describe(&other), "network is unreachable");
    }
}
