//! A socket that tells someone what moves on it: the connection watchdog (a request head's first bytes,
//! a write that cannot proceed: `send_timeout`) and tunnels (idle and send deadlines).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a [`WatchedIo`] reports.
pub trait IoEvents {
    /// Bytes were read.
    fn read(&self);
    /// A write could not proceed (the peer is not reading).
    fn write_blocked(&self) {}
    /// A write (or flush) proceeded.
    fn wrote(&self) {}
}

pub struct WatchedIo<T, E> {
    inner: T,
    events: E,
}

impl<T, E: IoEvents> WatchedIo<T, E> {
    pub fn new(inner: T, events: E) -> Self {
        WatchedIo { inner, events }
    }

    pub fn into_inner(self) -> T {
        self.inner
    }

    #[inline]
    fn note_write<R>(&self, res: &Poll<R>) {
        match res {
            Poll::Pending => self.events.write_blocked(),
            Poll::Ready(_) => self.events.wrote(),
        }
    }
}

impl<T: AsyncRead + Unpin, E: IoEvents + Unpin> AsyncRead for WatchedIo<T, E> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.events.read();
        }
        res
    }
}

impl<T: AsyncWrite + Unpin, E: IoEvents + Unpin> AsyncWrite for WatchedIo<T, E> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.note_write(&res);
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.note_write(&res);
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_flush(cx);
        this.note_write(&res);
        res
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
