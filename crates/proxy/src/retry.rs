//! What may be sent twice, and when it is.
//!
//! Without a retry policy: a request whose target refused the connection was never sent and can always go
//! to another target. One whose target broke the exchange after it was sent may only be sent again when
//! that cannot do harm: an idempotent method and no body (nginx's `proxy_next_upstream error`, Envoy's
//! retry on reset). That is what hides a backend killed in the middle of an exchange from the client.
//!
//! With `[target_group.retry]`: the policy says which failures are tried again (5xx, gateway errors,
//! resets, timeouts), how often, for which methods, each try under its own timeout, and within the
//! group's retry budget. Bodies up to `max_replay_body` are read whole first so they can be sent again.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri, Version};
use trellis_config::{RetryOn, RetryPolicy};

use crate::body::RequestBody;

/// Without a policy: after the first attempt, at most this many other targets are tried.
pub const MAX_RETRIES: usize = 2;

/// A group's retry policy, ready for the request path.
pub struct Retry {
    /// Tries after the first.
    pub attempts: usize,
    pub on: RetryOn,
    /// Bit `i` set: `METHODS[i]` may be sent again.
    methods: u16,
    pub per_try_timeout: Duration,
    pub budget_percent: u8,
    pub max_replay_body: u64,
}

const METHODS: [Method; 8] = [
    Method::GET,
    Method::HEAD,
    Method::OPTIONS,
    Method::TRACE,
    Method::PUT,
    Method::DELETE,
    Method::POST,
    Method::PATCH,
];

fn method_bit(method: &Method) -> u16 {
    METHODS
        .iter()
        .position(|m| m == method)
        .map_or(0, |i| 1 << i)
}

impl Retry {
    pub fn new(policy: &RetryPolicy, response_timeout: Duration) -> Self {
        let methods = policy
            .methods
            .iter()
            .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
            .fold(0, |bits, m| bits | method_bit(&m));
        Retry {
            attempts: usize::from(policy.attempts),
            on: policy.on,
            methods,
            per_try_timeout: policy.per_try_timeout.unwrap_or(response_timeout),
            budget_percent: policy.budget_percent,
            max_replay_body: policy.max_replay_body,
        }
    }

    /// Whether requests with this method may be sent again once sent.
    pub fn allows(&self, method: &Method) -> bool {
        self.methods & method_bit(method) != 0
    }

    /// Why a response with this status is tried again, if it is.
    pub fn on_status(&self, status: StatusCode) -> Option<RetryReason> {
        let gateway = matches!(status.as_u16(), 502..=504);
        if self.on.gateway_error && gateway {
            Some(RetryReason::GatewayError)
        } else if self.on.server_error && status.is_server_error() {
            Some(RetryReason::ServerError)
        } else {
            None
        }
    }
}

/// Why a request went again, as the `reason` label of `trellis_retries_total` says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryReason {
    Connect,
    Reset,
    ServerError,
    GatewayError,
    Timeout,
}

impl RetryReason {
    pub const ALL: [RetryReason; 5] = [
        RetryReason::Connect,
        RetryReason::Reset,
        RetryReason::ServerError,
        RetryReason::GatewayError,
        RetryReason::Timeout,
    ];

    pub fn label(self) -> &'static str {
        debug_assert_eq!(
            Self::ALL[self as usize],
            self,
            "ALL is in declaration order"
        );
        match self {
            RetryReason::Connect => "connect",
            RetryReason::Reset => "reset",
            RetryReason::ServerError => "5xx",
            RetryReason::GatewayError => "gateway_error",
            RetryReason::Timeout => "timeout",
        }
    }
}

/// Whole seconds on a monotonic clock, for the retry budget's window.
pub fn budget_second(now: Instant) -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    now.saturating_duration_since(*BASE.get_or_init(Instant::now))
        .as_secs()
}

/// A copy of a request, kept until its response head arrives, to send again.
pub struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    /// `None`: the request had no body.
    body: Option<Bytes>,
}

impl Replay {
    /// Without a policy: `Some` when `req` may be sent again after a broken exchange (bodiless,
    /// idempotent).
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
        replayable.then(|| Self::copy(req, None))
    }

    /// With a policy: `Some` when the method may be sent again and the body (if any) was read whole.
    pub fn by_policy(
        req: &Request<RequestBody>,
        upgrade: bool,
        retry: &Retry,
        body: Option<Bytes>,
    ) -> Option<Replay> {
        let replayable = !upgrade
            && retry.allows(req.method())
            && (body.is_some() || matches!(req.body(), RequestBody::Empty));
        replayable.then(|| Self::copy(req, body))
    }

    fn copy(req: &Request<RequestBody>, body: Option<Bytes>) -> Replay {
        Replay {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
            body,
        }
    }

    pub fn request(&self) -> Request<RequestBody> {
        let body = match &self.body {
            Some(bytes) => RequestBody::Buffered(bytes.clone()),
            None => RequestBody::Empty,
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on: RetryOn, methods: &[&str]) -> Retry {
        Retry::new(
            &RetryPolicy {
                attempts: 2,
                on,
                methods: methods.iter().map(|m| m.to_string()).collect(),
                per_try_timeout: None,
                budget_percent: 20,
                max_replay_body: 1024,
            },
            Duration::from_secs(7),
        )
    }

    #[test]
    fn all_reasons_are_listed_in_declaration_order() {
        // GroupMetrics::retry indexes its counters by `reason as usize`.
        for (i, reason) in RetryReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i, "{}", reason.label());
        }
    }

    #[test]
    fn statuses_retried_follow_the_conditions() {
        let gateway = policy(
            RetryOn {
                gateway_error: true,
                ..RetryOn::default()
            },
            &["GET"],
        );
        let code = |n| StatusCode::from_u16(n).unwrap();
        assert_eq!(
            gateway.on_status(code(503)),
            Some(RetryReason::GatewayError)
        );
        assert_eq!(gateway.on_status(code(500)), None);
        assert_eq!(gateway.on_status(code(404)), None);
        let any = policy(
            RetryOn {
                server_error: true,
                ..RetryOn::default()
            },
            &["GET"],
        );
        assert_eq!(any.on_status(code(500)), Some(RetryReason::ServerError));
        assert_eq!(any.on_status(code(503)), Some(RetryReason::ServerError));
        assert_eq!(any.on_status(code(499)), None);
        assert_eq!(any.per_try_timeout, Duration::from_secs(7));
    }

    #[test]
    fn only_the_listed_methods_are_sent_again() {
        let p = policy(RetryOn::default(), &["GET", "POST"]);
        assert!(p.allows(&Method::GET) && p.allows(&Method::POST));
        assert!(!p.allows(&Method::PUT) && !p.allows(&Method::CONNECT));
        let post = Request::builder()
            .method(Method::POST)
            .body(RequestBody::Empty)
            .unwrap();
        let replay = Replay::by_policy(&post, false, &p, None).expect("listed");
        assert!(matches!(replay.request().body(), RequestBody::Empty));
        let put = Request::builder()
            .method(Method::PUT)
            .body(RequestBody::Empty)
            .unwrap();
        assert!(Replay::by_policy(&put, false, &p, None).is_none());
        // A body kept whole goes again, every time.
        let replay = Replay::by_policy(&post, false, &p, Some(Bytes::from_static(b"abc"))).unwrap();
        for _ in 0..2 {
            match replay.request().into_body() {
                RequestBody::Buffered(b) => assert_eq!(&b[..], b"abc"),
                _ => panic!("buffered"),
            }
        }
    }
}
