//! The canonical request head, made once before routing: every later stage (host demux, the 421
//! check, rules, auth policies, rate limits, the access log) and the target itself see the same
//! authority and the same path, so no stage can decide on one view of a request while the target
//! serves another.
//!
//! After [`canonicalize`] the request has exactly one `Host` header, holding the authority trellis
//! decided on in canonical form (see [`authority`]), and an origin-form URI whose path is normalised
//! (see [`path`]); its query is kept as sent.

pub mod authority;
pub mod path;

use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Version};

use crate::error::Failure;

/// Puts `req` in canonical form, or says why it is refused (nothing is changed then):
/// - `CONNECT`: trellis is no forward proxy (`405`);
/// - HTTP/1.1 without a `Host`, any request with two, an invalid authority, or an HTTP/2 `host` that
///   names another authority than `:authority` (`400`, RFC 9112 §3.2, RFC 9113 §8.3.1);
/// - an absolute-form target that is not `http` or `https`; `*` for another method than `OPTIONS`;
///   a path that cannot be normalised unambiguously; two `Authorization` headers (`400`).
///
/// An absolute-form URI's authority wins over `Host` (RFC 9112 §3.2.2), and `Host` is rewritten to it.
pub fn canonicalize<B>(req: &mut Request<B>) -> Result<(), Failure> {
    if req.method() == Method::CONNECT {
        return Err(Failure::MethodNotAllowed);
    }
    // Methods are case-sensitive (RFC 9110 §9.1), but frameworks that upper-case what they get would
    // serve `delete` as the `DELETE` a rule or policy was written against: refused, as nginx does.
    if req
        .method()
        .as_str()
        .bytes()
        .any(|b| b.is_ascii_lowercase())
    {
        return Err(Failure::BadRequest("the method is not in upper case"));
    }
    let authority = decided_authority(req)?;
    let path_and_query = canonical_target(req)?;
    let mut authorizations = req.headers().get_all(header::AUTHORIZATION).iter();
    if authorizations.next().is_some() && authorizations.next().is_some() {
        return Err(Failure::BadRequest("two Authorization headers"));
    }

    // Every check passed: rewrite.
    if let Some(pq) = path_and_query {
        let mut parts = http::uri::Parts::default();
        parts.path_and_query = Some(pq);
        *req.uri_mut() = Uri::from_parts(parts).map_err(|_| Failure::BadRequest("bad path"))?;
    }
    match authority {
        Decided::Host => {}
        Decided::Value(value) => {
            req.headers_mut().insert(header::HOST, value);
        }
        Decided::None => {
            req.headers_mut().remove(header::HOST);
        }
    }
    Ok(())
}

/// What the request's `Host` header must become.
enum Decided {
    /// The one `Host` header already holds the canonical authority.
    Host,
    Value(HeaderValue),
    /// HTTP/1.0 without any: routed as a request without host.
    None,
}

fn decided_authority<B>(req: &Request<B>) -> Result<Decided, Failure> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Failure::BadRequest("two Host headers"));
    }
    let host_canonical = match host {
        Some(h) => Some(
            authority::canonical(h.as_bytes()).ok_or(Failure::BadRequest("invalid Host header"))?,
        ),
        None => None,
    };
    if let Some(uri_authority) = req.uri().authority() {
        // HTTP/2's `:authority` (with its `:scheme`), or an HTTP/1 absolute-form target.
        if !matches!(req.uri().scheme_str(), Some("http" | "https")) {
            return Err(Failure::BadRequest("the scheme is not http or https"));
        }
        let canonical = authority::canonical(uri_authority.as_str().as_bytes())
            .ok_or(Failure::BadRequest("invalid authority"))?;
        match (req.version(), &host_canonical) {
            (Version::HTTP_2, Some(h)) if **h != *canonical => {
                return Err(Failure::BadRequest("host and :authority differ"));
            }
            (Version::HTTP_11, None) => return Err(Failure::BadRequest("no Host header")),
            _ => {}
        }
        if host.is_some_and(|h| h.as_bytes() == &*canonical) {
            return Ok(Decided::Host);
        }
        return HeaderValue::from_bytes(&canonical)
            .map(Decided::Value)
            .map_err(|_| Failure::BadRequest("invalid authority"));
    }
    match (host, host_canonical) {
        (Some(_), Some(std::borrow::Cow::Borrowed(_))) => Ok(Decided::Host),
        (_, Some(owned)) => HeaderValue::from_bytes(&owned)
            .map(Decided::Value)
            .map_err(|_| Failure::BadRequest("invalid Host header")),
        (_, None) if req.version() == Version::HTTP_10 || req.version() == Version::HTTP_09 => {
            Ok(Decided::None)
        }
        (_, None) => Err(Failure::BadRequest("no Host header")),
    }
}

/// The origin-form target the request must get, or `None` when its URI already is canonical.
fn canonical_target<B>(req: &Request<B>) -> Result<Option<PathAndQuery>, Failure> {
    let uri = req.uri();
    if uri.path() == "*" {
        if req.method() != Method::OPTIONS {
            return Err(Failure::BadRequest("* is only for OPTIONS"));
        }
        return Ok(uri.authority().map(|_| PathAndQuery::from_static("*")));
    }
    let normalised = path::normalize(uri.path()).map_err(|e| Failure::BadRequest(e.reason()))?;
    // An absolute URI's own bytes (what goes on the wire) are not always what `path()` reads:
    // `http://a.test#x` leaves them empty, which `as_str()` shows as `/`. An origin-form target is sent
    // as it came: hyper refuses the ones that start with `#` or `?` (tested in tests/e2e/request_head.rs).
    let sent = uri.path_and_query().map_or("", PathAndQuery::as_str);
    let absolute = uri.authority().is_some() || uri.scheme().is_some();
    let mut path = match normalised {
        Some(path) => path,
        None if !absolute && sent.starts_with('/') => return Ok(None),
        None if sent == "/" => return Ok(Some(PathAndQuery::from_static("/"))),
        None if sent.starts_with('/') => return Ok(uri.path_and_query().cloned()),
        None => uri.path().to_string(),
    };
    if let Some(query) = uri.query() {
        path.push('?');
        path.push_str(query);
    }
    PathAndQuery::from_maybe_shared(path)
        .map(Some)
        .map_err(|_| Failure::BadRequest("bad path"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h1(target: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().uri(target);
        for h in hosts {
            b = b.header("host", *h);
        }
        b.body(()).unwrap()
    }

    fn decided(mut req: Request<()>) -> Result<(String, String), Failure> {
        canonicalize(&mut req)?;
        let hosts: Vec<_> = req.headers().get_all("host").iter().collect();
        assert!(hosts.len() <= 1);
        Ok((
            hosts
                .first()
                .map(|h| h.to_str().unwrap().to_string())
                .unwrap_or_default(),
            req.uri().to_string(),
        ))
    }

    fn refused(req: Request<()>) -> bool {
        matches!(decided(req), Err(Failure::BadRequest(_)))
    }

    #[test]
    fn the_authority_is_one_and_canonical() {
        assert_eq!(
            decided(h1("/x", &["A.Test:8080"])),
            Ok(("a.test:8080".into(), "/x".into()))
        );
        // Absolute form: the URI's authority wins, and Host says so.
        assert_eq!(
            decided(h1("http://a.test/x?q=1", &["secure.internal"])),
            Ok(("a.test".into(), "/x?q=1".into()))
        );
        assert!(refused(h1("/x", &["a.test", "secure.internal"])));
        assert!(refused(h1("/x", &["a.test", "a.test"])));
        assert!(refused(h1("/x", &[])));
        assert!(refused(h1("/x", &["a.test@secure.internal"])));
        assert!(refused(h1("/x", &[""])));
        assert!(refused(h1("http://a.test/x", &[])));
        assert!(refused(h1("ftp://a.test/x", &["a.test"])));
        // The fragment goes, and what is left has a path.
        assert_eq!(
            decided(h1("http://a.test#@secure.internal/private/x", &["a.test"])),
            Ok(("a.test".into(), "/".into()))
        );
        assert_eq!(
            decided(h1("http://a.test?q=1#x", &["a.test"])),
            Ok(("a.test".into(), "/?q=1".into()))
        );
        let mut old = h1("/x", &[]);
        *old.version_mut() = Version::HTTP_10;
        assert_eq!(decided(old), Ok((String::new(), "/x".into())));
    }

    #[test]
    fn http2_takes_authority_and_refuses_another_host() {
        let h2 = |host: Option<&str>| {
            let mut b = Request::builder()
                .version(Version::HTTP_2)
                .uri("http://a.test:8080/x");
            if let Some(h) = host {
                b = b.header("host", h);
            }
            b.body(()).unwrap()
        };
        assert_eq!(decided(h2(None)), Ok(("a.test:8080".into(), "/x".into())));
        assert_eq!(
            decided(h2(Some("A.test:8080"))),
            Ok(("a.test:8080".into(), "/x".into()))
        );
        assert!(refused(h2(Some("secure.internal"))));
        assert!(refused(h2(Some("a.test"))));
    }

    #[test]
    fn the_path_is_normalised_and_the_query_kept() {
        assert_eq!(
            decided(h1("/static/../%70rivate//x?a=%2e", &["a"])),
            Ok(("a".into(), "/private/x?a=%2e".into()))
        );
        assert!(refused(h1("/a%2fb", &["a"])));
        assert!(refused(h1("*", &["a"])));
        let mut options = h1("*", &["a"]);
        *options.method_mut() = Method::OPTIONS;
        assert_eq!(decided(options), Ok(("a".into(), "*".into())));
    }

    #[test]
    fn methods_must_be_upper_case() {
        for method in ["delete", "Delete", "gEt"] {
            let mut req = h1("/", &["a"]);
            *req.method_mut() = Method::from_bytes(method.as_bytes()).unwrap();
            assert!(refused(req), "{method}");
        }
        let mut purge = h1("/", &["a"]);
        *purge.method_mut() = Method::from_bytes(b"PURGE").unwrap();
        assert!(decided(purge).is_ok());
    }

    #[test]
    fn connect_and_two_authorizations_are_refused() {
        let mut connect = h1("a.test:443", &["a.test:443"]);
        *connect.method_mut() = Method::CONNECT;
        assert_eq!(decided(connect), Err(Failure::MethodNotAllowed));
        let mut two = h1("/", &["a"]);
        two.headers_mut()
            .append("authorization", HeaderValue::from_static("Bearer a"));
        two.headers_mut()
            .append("authorization", HeaderValue::from_static("Bearer b"));
        assert!(refused(two));
    }
}
