//! Bearer-token authentication of the admin API. Required whenever `admin.token_file` is set (and the
//! configuration requires a token file for any non-loopback `admin.listen`), for every request but the
//! status page's own HTML: that is the same static file on every trellis, holds none of the daemon's
//! data, and asks the operator for the token that its requests to `/v1/status` then carry.

use bytes::Bytes;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use subtle::ConstantTimeEq;

use crate::daemon::Daemon;

/// The 401 to send when the request does not carry the configured token.
pub fn rejection<B>(daemon: &Daemon, req: &Request<B>) -> Option<Response<Full<Bytes>>> {
    if is_status_page(req.method(), req.uri().path()) {
        return None;
    }
    let current = daemon.current();
    let token = current.token.as_deref()?;
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    // Compared in constant time: how much of a guess matched must not show in the response time.
    match presented {
        Some(p) if bool::from(p.as_bytes().ct_eq(token.as_bytes())) => None,
        _ => {
            let mut reply = super::error(
                StatusCode::UNAUTHORIZED,
                "this admin API needs \"Authorization: Bearer <token>\" with the token of admin.token_file",
            );
            reply
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Some(reply)
        }
    }
}

/// `GET /` or `HEAD /`: the static status page, served without the token.
fn is_status_page(method: &Method, path: &str) -> bool {
    path == "/" && (method == Method::GET || method == Method::HEAD)
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::is_status_page;

    #[test]
    fn only_the_status_page_itself_goes_without_the_token() {
        assert!(is_status_page(&Method::GET, "/"));
        assert!(is_status_page(&Method::HEAD, "/"));
        assert!(!is_status_page(&Method::POST, "/"));
        assert!(!is_status_page(&Method::GET, "/v1/status"));
        assert!(!is_status_page(&Method::GET, "//"));
        assert!(!is_status_page(&Method::GET, "/index.html"));
    }
}
