//! What can go wrong, and — in one place — what the client is told when it does.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

/// Errors of the proxy library (setting up; request-time failures are [`Failure`]s).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    // The I/O error is part of the message and deliberately not a `source`: callers print the whole
    // chain (`{:#}`), which would say it twice.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot open the access log {destination}: {error}")]
    AccessLog {
        destination: String,
        error: std::io::Error,
    },
    /// TLS to the targets of `https` groups cannot be set up (a `ca` file that cannot be read or holds
    /// no certificate, ...): each problem as `FILE: target_group[N].ca: message`.
    #[error("{}", DisplayLines(.0))]
    TargetTls(Vec<trellis_config::Diagnostic>),
    #[error("cannot serve {addr}: {what}")]
    Unsupported {
        addr: std::net::SocketAddr,
        what: &'static str,
    },
}

struct DisplayLines<'a>(&'a [trellis_config::Diagnostic]);

impl std::fmt::Display for DisplayLines<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Why trellis answered a request itself instead of a target. Each maps to one status, one
/// `x-trellis-error` code and one short body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No service on this port answers to the request's host.
    NoService,
    /// The chosen target group has no targets that can take traffic.
    NoTargets,
    /// Every candidate target refused or timed out the connection.
    ConnectFailed,
    /// The target accepted the request but broke the exchange before a response head.
    UpstreamReset,
    /// No response head within the group's `response_timeout`.
    UpstreamTimeout,
    /// The request's Host is served on this port, but not with the certificate the connection's TLS
    /// handshake chose (its SNI named another service).
    Misdirected,
    /// The network's or the service's auth policy denies the request.
    AccessDenied,
    /// A rate limit of the service or of the matched rule has no token left for the request's key.
    RateLimited,
    /// The request is malformed or ambiguous (two Hosts, an invalid authority, a path that cannot be
    /// normalised, a broken body, ...): what is wrong, for the body.
    BadRequest(&'static str),
    /// `CONNECT`: trellis is a reverse proxy, not a forward one.
    MethodNotAllowed,
    /// The client stopped sending its request body before it was complete.
    ClientTimeout,
    /// Every target of the group has `max_per_target` requests in flight, and the group's queue is full
    /// or the request waited in it for `queue_timeout`.
    Overloaded,
    /// The group scaled to zero and did not wake within `wake_timeout`.
    Waking,
}

impl Failure {
    pub fn status(self) -> StatusCode {
        match self {
            Failure::NoService => StatusCode::NOT_FOUND,
            Failure::NoTargets | Failure::Overloaded | Failure::Waking => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Failure::ConnectFailed | Failure::UpstreamReset => StatusCode::BAD_GATEWAY,
            Failure::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Failure::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Failure::AccessDenied => StatusCode::FORBIDDEN,
            Failure::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Failure::BadRequest(_) => StatusCode::BAD_REQUEST,
            Failure::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Failure::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The `x-trellis-error` value.
    pub fn code(self) -> &'static str {
        match self {
            Failure::NoService => "no_service",
            Failure::NoTargets => "no_targets",
            Failure::Overloaded => "overloaded",
            Failure::Waking => "waking",
            Failure::ConnectFailed => "connect_failed",
            Failure::UpstreamReset => "upstream_reset",
            Failure::UpstreamTimeout => "upstream_timeout",
            Failure::Misdirected => "misdirected",
            Failure::AccessDenied => "access_denied",
            Failure::RateLimited => "rate_limited",
            Failure::BadRequest(_) => "bad_request",
            Failure::MethodNotAllowed => "method_not_allowed",
            Failure::ClientTimeout => "client_timeout",
        }
    }

    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.code())
    }

    pub fn body(self) -> Bytes {
        if let Failure::BadRequest(reason) = self {
            return Bytes::from(format!("bad request: {reason}\n"));
        }
        Bytes::from_static(match self {
            Failure::NoService => b"no service for this host\n",
            Failure::NoTargets => b"no targets available\n",
            Failure::Overloaded => b"every target is at its concurrency limit\n",
            Failure::Waking => b"the target group is waking up from zero; try again shortly\n",
            Failure::ConnectFailed => b"could not connect to any target\n",
            Failure::UpstreamReset => b"target closed the connection before responding\n",
            Failure::UpstreamTimeout => b"target did not respond in time\n",
            Failure::Misdirected => b"this host is not served on this connection's certificate\n",
            Failure::AccessDenied => b"access denied\n",
            Failure::RateLimited => b"rate limit exceeded, retry later\n",
            Failure::BadRequest(_) => b"bad request\n",
            Failure::MethodNotAllowed => {
                b"CONNECT is not supported: trellis is not a forward proxy\n"
            }
            Failure::ClientTimeout => b"the request body did not arrive in time\n",
        })
    }
}
