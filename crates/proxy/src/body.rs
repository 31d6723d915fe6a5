//! The one response body type: either a target's body streamed through, or bytes trellis made itself.
//! An enum, not a `Box<dyn Body>`, so no allocation per response.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use trellis_targets::InFlight;

use crate::upstream::PooledSender;

pub enum ProxyBody {
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
}

impl ProxyBody {
    pub fn full(bytes: Bytes) -> Self {
        ProxyBody::Full((!bytes.is_empty()).then_some(bytes))
    }

    pub fn empty() -> Self {
        ProxyBody::Full(None)
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
        match self.get_mut() {
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream(up) => {
                let frame = std::task::ready!(Pin::new(&mut up.body).poll_frame(cx));
                if frame.is_none() {
                    up.ended = true;
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(bytes) => bytes.is_none(),
            ProxyBody::Upstream(up) => up.ended || up.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Upstream(up) => up.body.size_hint(),
        }
    }
}

/// A request body on its way to a target: the client's stream, or nothing. A bodiless request is sent as
/// `Empty` so that it can be rebuilt and sent again when its target breaks the exchange.
pub enum RequestBody {
    Client(Incoming),
    Empty,
}

impl RequestBody {
    pub fn from_client(body: Incoming) -> Self {
        if body.is_end_stream() {
            RequestBody::Empty
        } else {
            RequestBody::Client(body)
        }
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
            RequestBody::Client(body) => Pin::new(body).poll_frame(cx),
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client(body) => body.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client(body) => body.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}
