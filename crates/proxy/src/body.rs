//! The body types of the request path: the response body a client reads (a target's body streamed
//! through, or bytes trellis made itself), and the request body a target reads. Enums, not
//! `Box<dyn Body>`, so no allocation per request; both count their bytes, and the response body
//! finishes the request's metrics and access log entry when it is done.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use prometheus::IntCounter;
use trellis_targets::InFlight;

use crate::access_log::Pending;
use crate::server::RequestGuard;
use crate::snapshot::RouteMetrics;
use crate::upload::Upload;
use crate::upstream::PooledSender;

pub struct ProxyBody {
    kind: Kind,
    /// Bytes handed to the client so far.
    sent: u64,
    /// Settled when the body is dropped: after its last frame, or when the client went away.
    tally: Option<Tally>,
    /// Keeps the request counted as in flight on its connection until the body is done (so a long
    /// download is neither idle nor left to linger).
    request: Option<RequestGuard>,
}

enum Kind {
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
}

/// What a finished response adds to: its route's byte counter and, when the access log is on, its entry.
pub struct Tally {
    pub route: Arc<RouteMetrics>,
    pub log: Option<Pending>,
}

impl ProxyBody {
    pub fn full(bytes: Bytes) -> Self {
        ProxyBody::of(Kind::Full((!bytes.is_empty()).then_some(bytes)))
    }

    pub fn empty() -> Self {
        ProxyBody::of(Kind::Full(None))
    }

    pub(crate) fn upstream(body: UpstreamBody) -> Self {
        ProxyBody::of(Kind::Upstream(body))
    }

    fn of(kind: Kind) -> Self {
        ProxyBody {
            kind,
            sent: 0,
            tally: None,
            request: None,
        }
    }

    pub(crate) fn counted_until_done(mut self, request: RequestGuard) -> Self {
        self.request = Some(request);
        self
    }

    pub(crate) fn with_tally(mut self, tally: Tally) -> Self {
        self.tally = Some(tally);
        self
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Some(tally) = self.tally.take() {
            tally.route.bytes_sent.inc_by(self.sent);
            if let Some(log) = tally.log {
                log.finish(self.sent);
            }
        }
    }
}

/// A target's response body. While it lives the request counts as in flight on its target; once it has
/// been read to the end, the upstream connection goes back to its pool for the next request.
pub struct UpstreamBody {
    pub(crate) body: Incoming,
    pub(crate) _in_flight: InFlight,
    pub(crate) sender: Option<PooledSender>,
    pub(crate) ended: bool,
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            if self.ended || self.body.is_end_stream() {
                sender.release();
            }
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(request) = &this.request {
            request.connection().body_polled();
        }
        let frame = match &mut this.kind {
            Kind::Full(bytes) => bytes.take().map(|b| Ok(Frame::data(b))),
            Kind::Upstream(up) => {
                let frame = std::task::ready!(Pin::new(&mut up.body).poll_frame(cx));
                if frame.is_none() {
                    up.ended = true;
                }
                frame
            }
        };
        if let Some(Ok(f)) = &frame {
            if let Some(data) = f.data_ref() {
                this.sent += data.len() as u64;
            }
            // Until the client's side asks for the next frame, it is not taking this one (send_timeout).
            if let Some(request) = &this.request {
                if !this.is_end_stream() {
                    request.connection().body_yielded();
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream(up) => up.ended || up.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Upstream(up) => up.body.size_hint(),
        }
    }
}

/// A request body on its way to a target: the client's stream, or nothing. A bodiless request is sent as
/// `Empty` so that it can be rebuilt and sent again when its target breaks the exchange.
pub enum RequestBody {
    Client(ClientBody),
    /// A body read whole beforehand, to be sent again if a try fails (a retry policy's replay).
    Buffered(Bytes),
    Empty,
}

/// The client's request body, counted and timed as it goes to the target.
pub struct ClientBody {
    body: Incoming,
    received: u64,
    counter: IntCounter,
    /// Shared with the exchange and the access log entry.
    upload: Arc<Upload>,
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        self.counter.inc_by(self.received);
    }
}

impl RequestBody {
    /// The body to send, and its progress when it has one.
    pub fn from_client(body: Incoming, route: &RouteMetrics) -> (Self, Option<Arc<Upload>>) {
        if body.is_end_stream() {
            return (RequestBody::Empty, None);
        }
        let upload = Arc::new(Upload::new());
        let body = RequestBody::Client(ClientBody {
            body,
            received: 0,
            counter: route.bytes_received.clone(),
            upload: upload.clone(),
        });
        (body, Some(upload))
    }

    /// Whether the target cannot know the body's length from its head (chunked, or an HTTP/2 stream
    /// without `content-length`).
    pub fn unknown_length(&self) -> bool {
        match self {
            RequestBody::Client(client) => client.body.size_hint().exact().is_none(),
            RequestBody::Buffered(_) | RequestBody::Empty => false,
        }
    }

    /// The client's body read whole, when its length is known and at most `limit`: `Ok(None)` when it
    /// is not to be kept (no body, unknown length, too long). Each read waits at most `body_timeout`.
    pub async fn read_whole(
        &mut self,
        limit: u64,
        body_timeout: std::time::Duration,
    ) -> Result<Option<Bytes>, crate::error::Failure> {
        use http_body_util::BodyExt;
        let RequestBody::Client(client) = self else {
            return Ok(None);
        };
        match client.body.size_hint().exact() {
            Some(n) if n <= limit => {}
            _ => return Ok(None),
        }
        let mut whole = bytes::BytesMut::new();
        loop {
            match tokio::time::timeout(body_timeout, self.frame()).await {
                Err(_) => return Err(crate::error::Failure::ClientTimeout),
                Ok(None) => break,
                Ok(Some(Err(_))) => {
                    return Err(crate::error::Failure::BadRequest(
                        "the request body was malformed or cut short",
                    ))
                }
                Ok(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        whole.extend_from_slice(data);
                    }
                }
            }
        }
        let whole = whole.freeze();
        *self = RequestBody::Buffered(whole.clone());
        Ok(Some(whole))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Client(client) => {
                let Poll::Ready(frame) = Pin::new(&mut client.body).poll_frame(cx) else {
                    client.upload.waiting();
                    return Poll::Pending;
                };
                match &frame {
                    Some(Ok(f)) => {
                        let n = f.data_ref().map_or(0, |d| d.len() as u64);
                        client.received += n;
                        client.upload.sent(n);
                    }
                    Some(Err(_)) => client.upload.fail(),
                    None => {}
                }
                // hyper stops polling a body that says it has ended, so its end is noted here too.
                if frame.is_none() || client.body.is_end_stream() {
                    client.upload.end();
                }
                Poll::Ready(frame)
            }
            RequestBody::Buffered(bytes) if bytes.is_empty() => Poll::Ready(None),
            RequestBody::Buffered(bytes) => {
                Poll::Ready(Some(Ok(Frame::data(std::mem::take(bytes)))))
            }
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client(client) => client.body.is_end_stream(),
            RequestBody::Buffered(bytes) => bytes.is_empty(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client(client) => client.body.size_hint(),
            RequestBody::Buffered(bytes) => SizeHint::with_exact(bytes.len() as u64),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}
