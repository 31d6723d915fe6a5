//! Header rewriting between client and target: hop-by-hop headers out, forwarding headers in.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme, Uri};
use http::{Request, Version};

pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_TRELLIS_TARGET: HeaderName = HeaderName::from_static("x-trellis-target");
pub static X_TRELLIS_IDENTITY: HeaderName = HeaderName::from_static("x-trellis-identity");
pub static X_TRELLIS_ERROR: HeaderName = HeaderName::from_static("x-trellis-error");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");
static UPGRADE_TOKEN: HeaderValue = HeaderValue::from_static("upgrade");
static WEBSOCKET: HeaderValue = HeaderValue::from_static("websocket");

/// What a connection tells its targets about the client, computed once per connection.
pub struct ClientInfo {
    pub ip_text: HeaderValue,
    pub forwarded_proto: HeaderValue,
    pub forwarded_port: HeaderValue,
}

impl ClientInfo {
    pub fn new(ip: IpAddr, tls: bool, port: u16) -> Self {
        ClientInfo {
            ip_text: HeaderValue::from_str(&ip.to_string())
                .unwrap_or(HeaderValue::from_static("unknown")),
            forwarded_proto: HeaderValue::from_static(if tls { "https" } else { "http" }),
            forwarded_port: HeaderValue::from(port),
        }
    }
}

/// A WebSocket opening handshake (RFC 6455 §4.1): HTTP/1.1 `GET` with `Connection: upgrade` and
/// `Upgrade: websocket` as its only protocol. Only these become tunnels: any other upgrade (`h2c`
/// above all, which would open an HTTP/2 connection to the target whose requests pass no rule, no
/// policy and no access log) is stripped and the request forwarded as a plain one.
pub fn is_websocket_upgrade<B>(req: &Request<B>) -> bool {
    let mut upgrades = req.headers().get_all(header::UPGRADE).iter();
    let websocket = upgrades
        .next()
        .is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket"))
        && upgrades.next().is_none();
    websocket
        && req.version() == Version::HTTP_11
        && req.method() == http::Method::GET
        && connection_tokens(req.headers()).any(|t| t.eq_ignore_ascii_case(b"upgrade"))
}

/// Whether a `101` answers the WebSocket upgrade that was asked for, and nothing else.
pub fn is_websocket_switch(headers: &HeaderMap) -> bool {
    let mut upgrades = headers.get_all(header::UPGRADE).iter();
    upgrades
        .next()
        .is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket"))
        && upgrades.next().is_none()
}

/// Turns a client's request into the request a target gets.
pub fn to_target<B>(
    req: &mut Request<B>,
    client: &ClientInfo,
    target_header: &HeaderValue,
    http2: bool,
    upgrade: bool,
    chunked: bool,
) {
    let headers = req.headers_mut();
    // Room for the headers added below, so the map grows at most once.
    headers.reserve(6);
    remove_hop_by_hop(headers, upgrade);
    if upgrade {
        // Exactly the upgrade that was decided on, whatever else the client's headers named.
        headers.insert(header::CONNECTION, UPGRADE_TOKEN.clone());
        headers.insert(header::UPGRADE, WEBSOCKET.clone());
    }
    if chunked && !http2 {
        // hyper would send a GET's or HEAD's body of unknown length as no body at all.
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    let xff = match headers.get(&X_FORWARDED_FOR) {
        Some(prior) => append_ip(prior, &client.ip_text),
        None => client.ip_text.clone(),
    };
    headers.insert(X_FORWARDED_FOR.clone(), xff);
    headers.insert(X_FORWARDED_PROTO.clone(), client.forwarded_proto.clone());
    headers.insert(X_FORWARDED_PORT.clone(), client.forwarded_port.clone());
    headers.insert(X_TRELLIS_TARGET.clone(), target_header.clone());
    headers.remove(&X_TRELLIS_IDENTITY);
    if headers.get(&X_REQUEST_ID).is_none_or(|v| v.is_empty()) {
        headers.insert(X_REQUEST_ID.clone(), new_request_id());
    }
    if http2 {
        to_http2_form(req);
    } else {
        if req.version() == Version::HTTP_2 {
            merge_cookies(req.headers_mut());
        }
        to_http1_form(req);
    }
}

/// Cleans a target's response for the client.
pub fn from_target(headers: &mut HeaderMap, upgrade: bool) {
    remove_hop_by_hop(headers, upgrade);
}

/// Whether any header is hop-by-hop. One pass over the names (pointer-cheap comparisons for standard
/// headers) spares the typical request and response a handful of hash look-ups.
fn any_hop_by_hop(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| {
        name == header::CONNECTION
            || name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
            || name == header::TE
            || name == KEEP_ALIVE
            || name == PROXY_CONNECTION
            || name == HTTP2_SETTINGS
    })
}

fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    if !any_hop_by_hop(headers) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        // Headers the sender named as connection-specific go too (RFC 9110 §7.6.1), but never `Host`:
        // it carries the authority trellis routed on, which the target must get.
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter(|t| !(upgrade && t.eq_ignore_ascii_case(b"upgrade")))
            .filter_map(|t| HeaderName::from_bytes(t).ok())
            .filter(|name| name != header::HOST)
            .collect();
        for name in named {
            headers.remove(name);
        }
        if !upgrade {
            headers.remove(header::CONNECTION);
        }
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(&HTTP2_SETTINGS);
    headers.remove(header::TRANSFER_ENCODING);
    if !upgrade {
        headers.remove(header::UPGRADE);
    }
    // `te: trailers` is what gRPC needs end to end; any other TE is hop-by-hop.
    if let Some(te) = headers.get(header::TE) {
        if !te.as_bytes().eq_ignore_ascii_case(b"trailers") {
            headers.remove(header::TE);
        }
    }
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&c| c == b','))
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// HTTP/2 may split `cookie` into several fields; HTTP/1.1 needs one, joined with `; ` (RFC 9113
/// §8.2.3), or a target that reads one field loses the rest.
fn merge_cookies(headers: &mut HeaderMap) {
    let mut cookies = headers.get_all(header::COOKIE).iter();
    if cookies.next().is_none() || cookies.next().is_none() {
        return;
    }
    let joined: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if let Ok(value) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(header::COOKIE, value);
    }
}

fn append_ip(prior: &HeaderValue, ip: &HeaderValue) -> HeaderValue {
    let mut v = Vec::with_capacity(prior.len() + 2 + ip.len());
    v.extend_from_slice(prior.as_bytes());
    v.extend_from_slice(b", ");
    v.extend_from_slice(ip.as_bytes());
    HeaderValue::from_bytes(&v).unwrap_or_else(|_| ip.clone())
}

/// HTTP/1.1 to the target: origin-form request target and a Host header (HTTP/2 clients send
/// `:authority` instead).
fn to_http1_form<B>(req: &mut Request<B>) {
    *req.version_mut() = Version::HTTP_11;
    if let Some(authority) = req.uri().authority().cloned() {
        if !req.headers().contains_key(header::HOST) {
            if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
                req.headers_mut().insert(header::HOST, v);
            }
        }
        let origin = req.uri().path_and_query().cloned();
        let mut parts = http::uri::Parts::default();
        parts.path_and_query = origin;
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

/// HTTP/2 to the target: absolute URI (scheme and `:authority`), no Host header.
fn to_http2_form<B>(req: &mut Request<B>) {
    *req.version_mut() = Version::HTTP_2;
    let authority = req.uri().authority().cloned().or_else(|| {
        let host = req.headers().get(header::HOST)?;
        Authority::try_from(host.as_bytes()).ok()
    });
    req.headers_mut().remove(header::HOST);
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority.unwrap_or(Authority::from_static("localhost")));
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

/// A request id unique to this process run: a random 64-bit prefix and a counter, as 32 hex digits.
fn new_request_id() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 32];
    hex(prefix, &mut buf[..16]);
    hex(n, &mut buf[16..]);
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("0"))
}

fn hex(mut v: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ClientInfo {
        ClientInfo::new("127.0.0.1".parse().unwrap(), false, 8080)
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut req = Request::builder()
            .uri("/x")
            .header("connection", "keep-alive, x-secret")
            .header("keep-alive", "timeout=5")
            .header("x-secret", "1")
            .header("te", "gzip")
            .header("upgrade", "h2c")
            .header("x-trellis-target", "spoofed")
            .header("x-trellis-identity", "spoofed")
            .body(())
            .unwrap();
        let target = HeaderValue::from_static("service=s;target-group=g");
        to_target(&mut req, &client(), &target, false, false, false);
        let h = req.headers();
        for gone in [
            "connection",
            "keep-alive",
            "x-secret",
            "te",
            "upgrade",
            "x-trellis-identity",
        ] {
            assert!(!h.contains_key(gone), "{gone} should be removed");
        }
        assert_eq!(h["x-trellis-target"], "service=s;target-group=g");
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-port"], "8080");
        assert_eq!(h["x-request-id"].len(), 32);
    }

    #[test]
    fn forwarded_for_is_appended_and_request_id_kept() {
        let mut req = Request::builder()
            .uri("/")
            .header("x-forwarded-for", "1.2.3.4")
            .header("x-request-id", "abc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        to_target(
            &mut req,
            &client(),
            &HeaderValue::from_static("t"),
            false,
            false,
            false,
        );
        assert_eq!(req.headers()["x-forwarded-for"], "1.2.3.4, 127.0.0.1");
        assert_eq!(req.headers()["x-request-id"], "abc");
        assert_eq!(req.headers()["te"], "trailers");
    }

    #[test]
    fn upgrade_requests_keep_their_upgrade_headers() {
        let mut req = Request::builder()
            .uri("/ws")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(is_websocket_upgrade(&req));
        to_target(
            &mut req,
            &client(),
            &HeaderValue::from_static("t"),
            false,
            true,
            false,
        );
        assert_eq!(req.headers()["upgrade"], "websocket");
        assert_eq!(req.headers()["connection"], "upgrade");
    }

    #[test]
    fn only_websocket_is_an_upgrade_and_other_upgrades_are_stripped() {
        let upgrade = |method: &str, connection: &str, upgrade: &[&str]| {
            let mut b = Request::builder()
                .method(method)
                .uri("/")
                .header("connection", connection);
            for u in upgrade {
                b = b.header("upgrade", *u);
            }
            is_websocket_upgrade(&b.body(()).unwrap())
        };
        assert!(upgrade("GET", "keep-alive, Upgrade", &["WebSocket"]));
        assert!(!upgrade("GET", "Upgrade", &["h2c"]));
        assert!(!upgrade("GET", "Upgrade", &["websocket, h2c"]));
        assert!(!upgrade("GET", "Upgrade", &["websocket", "h2c"]));
        assert!(!upgrade("GET", "keep-alive", &["websocket"]));
        assert!(!upgrade("POST", "Upgrade", &["websocket"]));

        let mut req = Request::builder()
            .uri("/")
            .header("connection", "Upgrade, HTTP2-Settings")
            .header("upgrade", "h2c")
            .header("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA")
            .body(())
            .unwrap();
        let upgrading = is_websocket_upgrade(&req);
        to_target(
            &mut req,
            &client(),
            &HeaderValue::from_static("t"),
            false,
            upgrading,
            false,
        );
        for gone in ["connection", "upgrade", "http2-settings"] {
            assert!(
                !req.headers().contains_key(gone),
                "{gone} should be removed"
            );
        }
    }

    #[test]
    fn a_host_named_in_connection_stays() {
        let mut req = Request::builder()
            .uri("/")
            .header("host", "a.test")
            .header("connection", "close, Host, x-drop")
            .header("x-drop", "1")
            .body(())
            .unwrap();
        to_target(
            &mut req,
            &client(),
            &HeaderValue::from_static("t"),
            false,
            false,
            false,
        );
        assert_eq!(req.headers()["host"], "a.test");
        assert!(!req.headers().contains_key("x-drop"));
    }

    #[test]
    fn a_body_of_unknown_length_is_sent_chunked_to_http1_targets() {
        let mut req = Request::builder()
            .uri("/")
            .header("host", "a")
            .body(())
            .unwrap();
        to_target(
            &mut req,
            &client(),
            &HeaderValue::from_static("t"),
            false,
            false,
            true,
        );
        assert_eq!(req.headers()["transfer-encoding"], "chunked");
    }

    #[test]
    fn http2_clients_become_http1_requests_with_host() {
        let mut req = Request::builder()
            .version(Version::HTTP_2)
            .uri("http://shop.internal:8080/a?b=1")
            .body(())
            .unwrap();
        to_target(
            &mut req,
            &client(),
            &HeaderValue::from_static("t"),
            false,
            false,
            false,
        );
        assert_eq!(req.uri(), "/a?b=1");
        assert_eq!(req.headers()["host"], "shop.internal:8080");
        assert_eq!(req.version(), Version::HTTP_11);
    }

    #[test]
    fn http2_cookies_become_one_http1_cookie_header() {
        let mut req = Request::builder()
            .version(Version::HTTP_2)
            .uri("/")
            .header("host", "a")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(())
            .unwrap();
        to_target(
            &mut req,
            &client(),
            &HeaderValue::from_static("t"),
            false,
            false,
            false,
        );
        let cookies: Vec<_> = req.headers().get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1; b=2"]);
    }

    #[test]
    fn http1_clients_become_http2_requests_with_authority() {
        let mut req = Request::builder()
            .uri("/a")
            .header("host", "api")
            .body(())
            .unwrap();
        to_target(
            &mut req,
            &client(),
            &HeaderValue::from_static("t"),
            true,
            false,
            false,
        );
        assert_eq!(req.uri(), "http://api/a");
        assert!(!req.headers().contains_key("host"));
        assert_eq!(req.version(), Version::HTTP_2);
    }

    #[test]
    fn request_ids_differ() {
        assert_ne!(new_request_id(), new_request_id());
    }
}
