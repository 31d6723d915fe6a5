//! What may be sent twice. A request whose target refused the connection was never sent and can always go
//! to another target. One whose target broke the exchange after it was sent may only be sent again when
//! that cannot do harm: an idempotent method and no body (nginx's `proxy_next_upstream error`, Envoy's
//! retry on reset). That is what hides a backend killed in the middle of an exchange from the client.

use http::{HeaderMap, Method, Request, Uri, Version};

use crate::body::RequestBody;

/// After the first attempt, at most this many other targets are tried.
pub const MAX_RETRIES: usize = 2;

/// A copy of a bodiless idempotent request, kept until its response head arrives.
pub struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Replay {
    /// `Some` when `req` may be sent again after a broken exchange.
    pub fn of(req: &Request<RequestBody>, upgrade: bool) -> Option<Replay> {
        let replayable = !upgrade
            && matches!(
                *req.method(),
                Method::GET
                    | Method::HEAD
                    | Method::OPTIONS
                    | Method::TRACE
                    | Method::PUT
                    | Method::DELETE
            )
            && matches!(req.body(), RequestBody::Empty);
        replayable.then(|| Replay {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        })
    }

    pub fn request(&self) -> Request<RequestBody> {
        let mut req = Request::new(RequestBody::Empty);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}
