//! The deadlines of an HTTP/2 connection without a request, which hyper does not have.
//!
//! An HTTP/2 connection is idle while none of its requests is open: from the moment hyper
//! hands one to the service until its answer has been sent whole (or dropped). As for
//! HTTP/1.1, its first request must come within `server.header_read_timeout_secs` of the
//! accept (the TLS handshake included), and it is closed once idle for
//! `server.keepalive_timeout_secs` after that, so that a client cannot hold one of
//! `server.max_connections` for ever by answering pings. (hyper's keep-alive pings, set in
//! [`super::Policy::new`], find peers that are gone while requests are open.)
//!
//! The send deadline too needs more than the socket's ([`super::linger`]) over HTTP/2: a
//! client that takes nothing of an answer stops it by flow control, before the socket fills.
//! hyper asks an answer's body for its next frame as soon as the client's window allows, so a
//! frame handed over and not followed by that question for `server.send_timeout_secs` is a
//! client that took nothing for that long ([`stalled`]); the connection is then closed, as an
//! HTTP/1.1 one would be.
//!
//! Those closes are abrupt, as for an HTTP/1.1 connection: hyper offers no way in from outside
//! to send GOAWAY first, except the shutdown's.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::Instant;

use super::ConnState;
use crate::layers::metrics::ConnectionClose;

/// The requests of an HTTP/2 connection.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Streams {
    open: usize,
    /// Ever opened: a request that opens and ends between two looks is still seen.
    opened: u64,
}

/// The answers of an HTTP/2 connection waiting for the client to take their last frame: by
/// stream, since when.
#[derive(Debug, Default)]
pub(super) struct Stalls {
    waiting: Mutex<HashMap<u64, Instant>>,
    /// An answer began to wait.
    changed: tokio::sync::Notify,
}

impl Stalls {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Instant>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One open request of an HTTP/2 connection, until dropped.
#[derive(Debug)]
pub(super) struct OpenStream {
    state: Arc<ConnState>,
    id: u64,
}

impl OpenStream {
    pub(super) fn new(state: &Arc<ConnState>) -> Self {
        let mut id = 0;
        state.streams.send_modify(|s| {
            s.open += 1;
            s.opened += 1;
            id = s.opened;
        });
        OpenStream { state: state.clone(), id }
    }

    /// A frame of the answer went to hyper: the client's to take.
    fn handed(&self) {
        self.state.stalls.waiting().insert(self.id, Instant::now());
        self.state.stalls.changed.notify_one();
    }

    /// hyper asks for the next: the client took the last.
    fn asked(&self) {
        self.state.stalls.waiting().remove(&self.id);
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.asked();
        self.state.streams.send_modify(|s| s.open -= 1);
    }
}

/// Ready once an answer has waited `timeout` for the client to take a frame of it.
pub(super) async fn stalled(state: &ConnState, timeout: Duration) {
    loop {
        let since = state.stalls.waiting().values().min().copied();
        let Some(since) = since else {
            state.stalls.changed.notified().await;
            continue;
        };
        tokio::select! {
            () = tokio::time::sleep_until(since + timeout) => {
                // Unless the client took it meanwhile.
                if state.stalls.waiting().values().any(|t| *t + timeout <= Instant::now()) {
                    return;
                }
            }
            () = state.stalls.changed.notified() => {}
        }
    }
}

/// Ready, with the limit that acted, once the connection has had no request open too long:
/// until `first` for its first request, then `keepalive` after each.
pub(super) async fn idle(state: &ConnState, first: Instant, keepalive: Duration) -> ConnectionClose {
    let mut streams = state.streams.subscribe();
    let mut due = (first, ConnectionClose::HeaderTimeout);
    loop {
        let seen = streams.borrow().opened;
        // The sender lives as long as `state`: the waits never fail.
        tokio::select! {
            () = tokio::time::sleep_until(due.0) => return due.1,
            _ = streams.wait_for(|s| s.open > 0 || s.opened != seen) => {}
        }
        let _ = streams.wait_for(|s| s.open == 0).await;
        due = (Instant::now() + keepalive, ConnectionClose::IdleTimeout);
    }
}

pin_project_lite::pin_project! {
    /// The service's future for one request; the answer it makes keeps the request open
    /// until its body has been sent.
    pub(super) struct Tracked<F> {
        #[pin]
        pub(super) future: F,
        pub(super) open: Option<OpenStream>,
    }
}

impl<F, E> Future for Tracked<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answer = ready!(this.future.poll(cx));
        Poll::Ready(match this.open.take() {
            Some(open) => answer.map(|response| response.map(|body| Body::new(TrackedBody { body, open }))),
            None => answer,
        })
    }
}

/// An answer's body, holding its request open, and telling [`stalled`] when it waits for the
/// client.
struct TrackedBody {
    body: Body,
    open: OpenStream,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.open.asked();
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        if let Some(Ok(_)) = frame {
            self.open.handed();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
