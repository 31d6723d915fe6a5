//! Bearer-token authentication of the admin API. Required whenever `admin.token_file` is set (and the
//! configuration requires a token file for any non-loopback `admin.listen`).

use bytes::Bytes;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use subtle::ConstantTimeEq;

use crate::daemon::Daemon;

/// The 401 to send when the request does not carry the configured token.
pub fn rejection<B>(daemon: &Daemon, req: &Request<B>) -> Option<Response<Full<Bytes>>> {
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
