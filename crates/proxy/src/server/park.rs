//! Parking idle HTTP/1.1 keep-alive connections: what an idle connection costs is what nginx's costs.
//!
//! hyper keeps a connection's read and write buffers (8 KiB each) and the slot for its request future
//! (about 10 KiB) for as long as the connection lives, idle or not: about 30 KiB per idle keep-alive
//! connection, where nginx holds well under 2. So a connection that has been idle for [`PARK_AFTER`]
//! lets go of all of it: at its next read, hyper is handed an end of input, finishes the connection
//! cleanly (it is between requests, so there is nothing to answer), and gives the socket back with
//! whatever bytes it had read but not parsed. The connection then waits for its next bytes with nothing
//! but the socket, and a new hyper connection takes it up from there, those bytes first.
//!
//! The end of input is handed over only when the connection is still idle at that read (no request in
//! flight, no head begun, nothing written and not yet flushed) and only when the driver asked for it, so
//! a busy connection never parks: under load hyper's connection stays as it is.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::watchdog::ConnState;

/// How long a keep-alive connection sits idle before it parks. Longer than the pause between two
/// requests of a busy client, so that a connection in use keeps its buffers.
pub const PARK_AFTER: Duration = Duration::from_secs(1);

/// The socket as hyper sees it on a connection that may park.
pub struct Parkable<I> {
    inner: I,
    state: Arc<ConnState>,
    /// Bytes a previous hyper connection read but did not parse: read again first.
    replay: Bytes,
    /// Something was written and not yet flushed: not a moment to park.
    unflushed: bool,
}

impl<I> Parkable<I> {
    pub fn new(inner: I, state: Arc<ConnState>, replay: Bytes) -> Self {
        Parkable {
            inner,
            state,
            replay,
            unflushed: false,
        }
    }

    /// The socket, and the bytes still to be read again.
    pub fn into_parts(self) -> (I, Bytes) {
        (self.inner, self.replay)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Parkable<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay[..n]);
            this.replay.advance(n);
            return Poll::Ready(Ok(()));
        }
        if this.state.park_requested() && !this.unflushed && this.state.idle_since().is_some() {
            // An end of input between two requests: hyper closes the connection, answering nothing.
            this.state.parked();
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Parkable<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.unflushed = true;
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.unflushed = true;
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_flush(cx);
        if matches!(res, Poll::Ready(Ok(()))) {
            this.unflushed = false;
        }
        res
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        // Parked: hyper closes its side of a connection that goes on without it.
        if this.state.is_parked() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
