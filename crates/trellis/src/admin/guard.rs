//! What every admin request must pass before it is routed, in one place:
//!
//! 1. a `Host` (required by HTTP/1.1, else `400`) that, when no token is set, names this machine's
//!    loopback (`127.0.0.0/8`, `[::1]`, `localhost`, `*.localhost`) or the address the API listens on,
//!    else `421`: a web page that rebinds its own DNS name to 127.0.0.1 (DNS rebinding) is same-origin
//!    in the browser, and only its `Host` gives it away;
//! 2. no foreign `Origin` (anything but `http://` + the request's host; `null` too) and no
//!    `Sec-Fetch-Site: cross-site|same-site`, else `403`: a browser says where a request comes from;
//! 3. the bearer token of `admin.token_file`, when set, else `401`;
//! 4. `Content-Type: application/json` on every write (POST, PUT, DELETE, PATCH), body or not, else
//!    `415`: a cross-site page can send `text/plain` or a form without asking, but not JSON (the browser
//!    asks first with a preflight, which this API never approves).
//!
//! The status page's static HTML (`GET /`, `HEAD /`) is exempt from 2 and 3: it is the same file on
//! every trellis, holds none of the daemon's data, and asks the operator for the token that its requests
//! to `/v1/status` then carry. It still needs a good `Host`.

use std::net::{IpAddr, SocketAddr};

use http::header::{
    HeaderName, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN, WWW_AUTHENTICATE,
};
use http::{HeaderValue, Method, Request, StatusCode, Version};
use subtle::ConstantTimeEq;

use super::{error, Reply};
use crate::daemon::Daemon;

const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// The answer to send instead of routing `req`, if it fails a check. `listen` is the address the admin
/// listener is bound to.
pub fn rejection<B>(daemon: &Daemon, listen: SocketAddr, req: &Request<B>) -> Option<Reply> {
    let host = match request_host(req) {
        Ok(host) => host,
        Err(why) => return Some(error(StatusCode::BAD_REQUEST, why)),
    };
    let current = daemon.current();
    let token = current.token.as_deref();
    if token.is_none() {
        if let Some(host) = host.filter(|h| !host_is_local(h, listen)) {
            return Some(error(
                StatusCode::MISDIRECTED_REQUEST,
                &format!(
                    "this admin API has no token, so it answers only to a loopback Host (127.0.0.1, [::1], \
                     localhost) or its own address, not {host:?} (a defence against DNS rebinding); \
                     to reach it by another name, set admin.token_file"
                ),
            ));
        }
    }
    if is_status_page(req.method(), req.uri().path()) {
        return None;
    }
    if let Some(origin) = req
        .headers()
        .get_all(ORIGIN)
        .iter()
        .map(|v| v.to_str().unwrap_or("?"))
        .find(|origin| origin_is_foreign(origin, host))
    {
        return Some(error(
            StatusCode::FORBIDDEN,
            &format!(
                "Origin {origin:?} is not this admin API's own (http://{}): it takes no cross-site requests",
                host.unwrap_or("HOST")
            ),
        ));
    }
    if let Some(site) = req
        .headers()
        .get_all(SEC_FETCH_SITE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|site| is_cross_site(site))
    {
        return Some(error(
            StatusCode::FORBIDDEN,
            &format!("Sec-Fetch-Site: {site}: this admin API takes no cross-site requests"),
        ));
    }
    if let Some(token) = token {
        let presented = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        // Compared in constant time: how much of a guess matched must not show in the response time.
        if !presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(token.as_bytes()))) {
            let mut reply = error(
                StatusCode::UNAUTHORIZED,
                "this admin API needs \"Authorization: Bearer <token>\" with the token of admin.token_file",
            );
            reply
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return Some(reply);
        }
    }
    if is_write(req.method()) {
        let mut types = req.headers().get_all(CONTENT_TYPE).iter();
        let json = match (types.next(), types.next()) {
            (Some(only), None) => only.to_str().is_ok_and(is_json),
            _ => false,
        };
        if !json {
            let mut reply = error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!(
                    "send \"Content-Type: application/json\" with every {} to the admin API, \
                     even one without a body",
                    req.method()
                ),
            );
            reply
                .headers_mut()
                .insert(ACCEPT, HeaderValue::from_static("application/json"));
            return Some(reply);
        }
    }
    None
}

/// The host the request is for, port included: the URI's authority (HTTP/2's `:authority`, or an
/// absolute-form target) or else the `Host` header. `None` where HTTP allows none (HTTP/1.0).
fn request_host<B>(req: &Request<B>) -> Result<Option<&str>, &'static str> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let header = match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err("more than one Host header"),
        (Some(value), None) => Some(value.to_str().map_err(|_| "the Host header is not text")?),
        (None, None) => None,
    };
    if let Some(authority) = req.uri().authority() {
        return Ok(Some(authority.as_str()));
    }
    if header.is_none() && req.version() == Version::HTTP_11 {
        return Err("an HTTP/1.1 request needs a Host header");
    }
    Ok(header)
}

/// Whether `host` (`name`, `name:port`, `ip:port`, `[v6]:port`; the port is ignored) is this machine's
/// loopback or the admin listener's own address, which a DNS name an attacker controls cannot be.
fn host_is_local(host: &str, listen: SocketAddr) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, _)) => v6,
            None => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    if let Ok(ip) = name.parse::<IpAddr>() {
        // A bracketed literal must be IPv6 and an unbracketed one IPv4 (`[127.0.0.1]` is no host).
        return ip.is_ipv6() == host.starts_with('[')
            && (ip.is_loopback() || (ip == listen.ip() && !ip.is_unspecified()));
    }
    let name = name.to_ascii_lowercase();
    name == "localhost" || (name.ends_with(".localhost") && name.len() > ".localhost".len())
}

/// Whether an `Origin` is another site than `http://HOST` (scheme and host compared case-insensitively;
/// `null`, sent by sandboxed and privacy-sensitive contexts, is always foreign).
fn origin_is_foreign(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else {
        return true;
    };
    let own = origin
        .get(.."http://".len())
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"))
        && origin["http://".len()..].eq_ignore_ascii_case(host);
    !own
}

/// `Sec-Fetch-Site` values that mean another site (`same-site` is another origin of the same site, e.g.
/// another port of localhost); `same-origin` and `none` (typed by the user) are fine.
fn is_cross_site(site: &str) -> bool {
    let site = site.trim();
    site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site")
}

/// The methods that change something, and so must be JSON.
fn is_write(method: &Method) -> bool {
    [Method::POST, Method::PUT, Method::DELETE, Method::PATCH].contains(method)
}

/// Whether a `Content-Type` is JSON: `application/json`, in any case, parameters allowed.
fn is_json(content_type: &str) -> bool {
    let media_type = content_type.split(';').next().unwrap_or_default();
    media_type.trim().eq_ignore_ascii_case("application/json")
}

/// The token of an `Authorization: Bearer TOKEN` header: the scheme in any case (RFC 9110 §11.1), one or
/// more spaces, then the token.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    let token = rest.trim_start_matches(' ').trim_end();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// `GET /` or `HEAD /`: the static status page, served without the token.
fn is_status_page(method: &Method, path: &str) -> bool {
    path == "/" && (method == Method::GET || method == Method::HEAD)
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;

    #[test]
    fn only_the_status_page_itself_goes_without_the_token() {
        assert!(is_status_page(&Method::GET, "/"));
        assert!(is_status_page(&Method::HEAD, "/"));
        assert!(!is_status_page(&Method::POST, "/"));
        assert!(!is_status_page(&Method::GET, "/v1/status"));
        assert!(!is_status_page(&Method::GET, "//"));
        assert!(!is_status_page(&Method::GET, "/index.html"));
    }

    #[test]
    fn only_loopback_hosts_and_the_listen_address_are_local() {
        let listen: SocketAddr = "127.0.0.1:9901".parse().unwrap();
        for local in [
            "127.0.0.1:9901",
            "127.0.0.1",
            "127.8.9.10:1",
            "[::1]:9901",
            "[::1]",
            "localhost:9901",
            "LocalHost",
            "admin.localhost:80",
            "a.b.LOCALHOST",
        ] {
            assert!(host_is_local(local, listen), "{local} was refused");
        }
        for foreign in [
            "evil.example",
            "evil.example:9901",
            "localhost.evil.example",
            "evillocalhost",
            ".localhost",
            "127.0.0.1.nip.io:9901",
            "10.0.0.5:9901",
            "0.0.0.0:9901",
            "[::]:9901",
            "[127.0.0.1]:9901",
            "[::1",
            "::1",
            "",
        ] {
            assert!(!host_is_local(foreign, listen), "{foreign} was accepted");
        }
        // The listener's own address, loopback or not (a token is required for the latter anyway).
        let own: SocketAddr = "10.0.0.5:9901".parse().unwrap();
        assert!(host_is_local("10.0.0.5:9901", own));
        assert!(!host_is_local("10.0.0.6:9901", own));
        let any: SocketAddr = "0.0.0.0:9901".parse().unwrap();
        assert!(!host_is_local("0.0.0.0:9901", any));
    }

    #[test]
    fn an_origin_is_foreign_unless_it_is_http_and_the_host() {
        let host = Some("127.0.0.1:9901");
        assert!(!origin_is_foreign("http://127.0.0.1:9901", host));
        assert!(!origin_is_foreign(
            "HTTP://LocalHost:9901",
            Some("localhost:9901")
        ));
        for foreign in [
            "null",
            "http://evil.example",
            "https://127.0.0.1:9901",
            "http://127.0.0.1:9902",
            "http://127.0.0.1",
            "http://127.0.0.1:9901/",
            "http://localhost:9901",
            "",
            "?",
        ] {
            assert!(origin_is_foreign(foreign, host), "{foreign} was own");
        }
        assert!(origin_is_foreign("http://127.0.0.1:9901", None));
    }

    #[test]
    fn cross_and_same_site_fetches_are_refused() {
        assert!(is_cross_site("cross-site"));
        assert!(is_cross_site("Same-Site"));
        assert!(!is_cross_site("same-origin"));
        assert!(!is_cross_site("none"));
    }

    #[test]
    fn json_is_the_media_type_in_any_case_with_parameters() {
        for json in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            " application/json ;charset=UTF-8",
        ] {
            assert!(is_json(json), "{json:?} was refused");
        }
        for other in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/json-patch+json",
            "application/jsonx",
            "text/plain; application/json",
            "",
        ] {
            assert!(!is_json(other), "{other:?} was accepted");
        }
        assert!(is_write(&Method::POST) && is_write(&Method::PUT));
        assert!(is_write(&Method::DELETE) && is_write(&Method::PATCH));
        assert!(!is_write(&Method::GET) && !is_write(&Method::HEAD));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_with_one_or_more_spaces() {
        assert_eq!(bearer_token("Bearer s3cret"), Some("s3cret"));
        assert_eq!(bearer_token("bearer s3cret"), Some("s3cret"));
        assert_eq!(bearer_token("BEARER   s3cret"), Some("s3cret"));
        assert_eq!(bearer_token("Bearer s3cret "), Some("s3cret"));
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearers s3cret"), None);
        assert_eq!(bearer_token("Basic czNjcmV0"), None);
        assert_eq!(bearer_token("s3cret"), None);
    }
}
