//! The head deadline and the keep-alive timeout, as two settings although hyper has one.
//!
//! hyper's HTTP/1 server starts its `header_read_timeout` whenever it begins waiting for a
//! request head (`proto/h1/conn.rs`, `Conn::poll_read_head`): at a connection's start, and
//! again as soon as a kept-alive connection has answered, so on its own it is also the
//! keep-alive timeout. It asks its timer ([`hyper::rt::Timer`]) for that deadline and for
//! nothing else, so the timer given here decides: for a connection's first head, the header
//! deadline from the accept (a TLS handshake included); for a later one, the keep-alive timeout
//! until a byte of it comes, then the header deadline from that byte. (A head whose first bytes
//! came in one read with the previous request, pipelined, waits under the keep-alive timeout
//! until more of it comes.)

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use super::ConnState;
use crate::layers::metrics::ConnectionClose;

/// One connection's timer for hyper.
#[derive(Debug)]
pub(super) struct HeadTimer {
    state: Arc<ConnState>,
    /// When the connection's first head is due: the header deadline from the accept.
    first: Instant,
    header: Duration,
    keepalive: Duration,
}

impl HeadTimer {
    pub(super) fn new(state: Arc<ConnState>, first: Instant, header: Duration, keepalive: Duration) -> Self {
        HeadTimer { state, first, header, keepalive }
    }
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    /// hyper's own deadline is now plus the header timeout; which one applies is decided here.
    fn sleep_until(&self, _: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let reads = self.state.reads.load(Ordering::Relaxed);
        // Nothing read yet: the connection's first head, due within the header deadline.
        let idle = reads > 0;
        let deadline = if idle { Instant::now() + self.keepalive } else { self.first };
        Box::pin(HeadDeadline {
            state: self.state.clone(),
            reads,
            idle,
            header: self.header,
            sleep: tokio::time::sleep_until(deadline),
        })
    }

    /// tokio's clock, so that a paused clock (in tests) is the one hyper reads.
    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }
}

pin_project_lite::pin_project! {
    /// One wait for a head; ready when it is over, and hyper then closes the connection.
    #[derive(Debug)]
    struct HeadDeadline {
        state: Arc<ConnState>,
        // The connection's reads when the wait began.
        reads: u64,
        // Waiting for a kept-alive connection's next request, no byte of it yet.
        idle: bool,
        header: Duration,
        #[pin]
        sleep: tokio::time::Sleep,
    }
}

impl Future for HeadDeadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        // hyper polls this right after each read that leaves the head incomplete, so the first
        // byte of a request is seen the moment it is read.
        if *this.idle && this.state.reads.load(Ordering::Relaxed) != *this.reads {
            *this.idle = false;
            this.sleep.as_mut().reset(Instant::now() + *this.header);
        }
        ready!(this.sleep.poll(cx));
        let reason = if *this.idle { ConnectionClose::IdleTimeout } else { ConnectionClose::HeaderTimeout };
        this.state.end_by(reason);
        Poll::Ready(())
    }
}

impl hyper::rt::Sleep for HeadDeadline {}
