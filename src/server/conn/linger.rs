//! The client's socket as hyper uses it, closed with a lingering close.
//!
//! When hyper answers a request whose body it did not read to the end (a 413 from the declared
//! length, a chunked body cut at the limit, a stalled body), it closes the read side and ends
//! the connection after the answer (`proto/h1/conn.rs`, `Conn::poll_drain_or_close_read`).
//! Closing a socket with unread input makes the kernel send a reset, which destroys the answer
//! in the client's buffers, and a client still sending its body sees "connection reset" instead
//! of the 413. So the connection's end, where hyper shuts the socket down once the answer is
//! flushed (`Buffered::poll_shutdown`), is where this lingers: it ends the sending side (the
//! client sees the answer is whole), then reads and drops what the client still sends until
//! it closes too, for at most `server.lingering_close_secs`.
//!
//! It lingers only when the client may still be sending: the last request's body was left
//! unread, or input is waiting. An idle connection closed at shutdown closes at once.
//!
//! Writes have a deadline too: a client that takes nothing of its answer for
//! `server.send_timeout_secs` is cut off, so that a reader that stalls (or never reads) cannot
//! hold an answer, and the memory and admission place behind it, for ever.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::ConnState;
use crate::layers::metrics::ConnectionClose;

/// Read and dropped at a time while lingering.
const DISCARD: usize = 16 * 1024;

/// The socket (or the TLS session over it), counting reads that bring bytes (for
/// [`super::deadline`]), cutting a client off that takes nothing of its answer for a while, and
/// lingering on shutdown.
#[derive(Debug)]
pub(super) struct ClientIo<T> {
    stream: T,
    state: Arc<ConnState>,
    linger: Duration,
    /// Set once the sending side is shut and the client may still be sending.
    lingering: Option<Pin<Box<Sleep>>>,
    send_timeout: Duration,
    /// Set while a write waits for the client to take bytes.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> ClientIo<T> {
    pub(super) fn new(stream: T, state: Arc<ConnState>, linger: Duration, send_timeout: Duration) -> Self {
        ClientIo { stream, state, linger, lingering: None, send_timeout, stalled: None }
    }

    /// A write's outcome under the send deadline: progress disarms it, a wait arms it, and a
    /// wait that outlasts it fails the write (hyper then ends the connection).
    fn sending<R>(&mut self, cx: &mut Context<'_>, written: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if written.is_ready() {
            self.stalled = None;
            return written;
        }
        let timeout = self.send_timeout;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(stalled.as_mut().poll(cx));
        self.state.end_by(ConnectionClose::SendTimeout);
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client took nothing of its answer in time")))
    }
}

/// What reading and dropping the client's input came to.
enum Drained {
    /// The client closed (or reset) its side: nothing more will come.
    Closed,
    /// Nothing more for now, after this many bytes.
    Waiting(usize),
}

/// Reads and drops what the client has sent, until it closes or nothing more is there.
fn discard<T: AsyncRead + Unpin>(stream: &mut T, cx: &mut Context<'_>) -> Drained {
    let mut scratch = [0; DISCARD];
    let mut dropped = 0;
    loop {
        let mut buf = ReadBuf::new(&mut scratch);
        match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => return Drained::Closed,
            Poll::Ready(Ok(())) => dropped += buf.filled().len(),
            Poll::Ready(Err(_)) => return Drained::Closed,
            Poll::Pending => return Drained::Waiting(dropped),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.stream).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.state.reads.fetch_add(1, Ordering::Relaxed);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ClientIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.sending(cx, written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.sending(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    /// hyper calls this once the connection's last answer is flushed.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.lingering.is_none() {
            ready!(Pin::new(&mut this.stream).poll_shutdown(cx))?;
            if this.linger.is_zero() {
                return Poll::Ready(Ok(()));
            }
            let unfinished = this.state.body_unfinished.load(Ordering::Relaxed);
            match discard(&mut this.stream, cx) {
                Drained::Closed => return Poll::Ready(Ok(())),
                Drained::Waiting(0) if !unfinished => return Poll::Ready(Ok(())),
                Drained::Waiting(_) => {}
            }
            this.state.end_by(ConnectionClose::LingeringClose);
            this.lingering = Some(Box::pin(tokio::time::sleep(this.linger)));
        }
        if let Drained::Closed = discard(&mut this.stream, cx) {
            return Poll::Ready(Ok(()));
        }
        if let Some(deadline) = &mut this.lingering {
            ready!(deadline.as_mut().poll(cx));
        }
        Poll::Ready(Ok(()))
    }
}
