//! A body that fails once it stops moving: the client's request body as handlers read it, and
//! an upstream's answer on its way to the client. A stalled peer must not hold a handler or a
//! client for ever, but an image streams for as long as it keeps moving, so the deadline is
//! on each wait for a frame, never on the whole transfer.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a watched body ended early.
#[derive(Debug, thiserror::Error)]
pub enum IdleError {
    #[error("no data came for {0:?}")]
    Stalled(Duration),
    /// The body's own error, boxed: only a failed body pays for it.
    #[error(transparent)]
    Body(BoxError),
}

impl IdleError {
    /// The idle time after which `error`, or one of its causes, says its body stalled.
    pub fn stalled_in(error: &(dyn std::error::Error + 'static)) -> Option<Duration> {
        std::iter::successors(Some(error), |e| e.source()).find_map(|e| match e.downcast_ref::<IdleError>() {
            Some(IdleError::Stalled(idle)) => Some(*idle),
            _ => None,
        })
    }
}

/// `body`, failing with [`IdleError::Stalled`] once no frame has come for `idle` while someone
/// waits for one.
#[derive(Debug)]
pub struct IdleTimeout<B> {
    body: B,
    /// Made on the first wait, so a body read at once (most are) never allocates one.
    timer: Option<Pin<Box<Sleep>>>,
    idle: Duration,
}

impl<B> IdleTimeout<B> {
    pub fn new(body: B, idle: Duration) -> Self {
        IdleTimeout { body, timer: None, idle }
    }

    /// As [`IdleTimeout::new`], reusing a timer the caller already had (it is set afresh).
    pub fn with_timer(body: B, idle: Duration, mut timer: Pin<Box<Sleep>>) -> Self {
        timer.as_mut().reset(Instant::now() + idle);
        IdleTimeout { body, timer: Some(timer), idle }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = IdleError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, IdleError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            if let Some(timer) = &mut this.timer {
                // Moving the deadline later is an atomic store; tokio re-files the timer only if it fires.
                timer.as_mut().reset(Instant::now() + this.idle);
            }
            return Poll::Ready(frame.map(|f| f.map_err(|e| IdleError::Body(e.into()))));
        }
        let idle = this.idle;
        let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Some(Err(IdleError::Stalled(idle))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;
    use http_body_util::{BodyExt, StreamBody};

    /// One frame, then nothing for ever.
    fn one_then_silence() -> impl Body<Data = Bytes, Error = std::convert::Infallible> + Unpin {
        let frames = futures_util::stream::iter([Ok(Frame::data(Bytes::from_static(b"a")))])
            .chain(futures_util::stream::pending());
        StreamBody::new(Box::pin(frames))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_fails_once_idle_and_says_so() {
        let mut body = IdleTimeout::new(one_then_silence(), Duration::from_secs(30));
        assert!(body.frame().await.unwrap().unwrap().is_data());
        let started = Instant::now();
        let e = body.frame().await.unwrap().unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        // Seen through axum's body, as handlers see it.
        let boxed = axum::Error::new(e);
        assert_eq!(IdleError::stalled_in(&boxed), Some(Duration::from_secs(30)));
        assert_eq!(IdleError::stalled_in(&std::io::Error::other("x")), None);
    }
}
