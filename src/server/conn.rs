//! One client connection: hyper's HTTP/1.1 server with the gateway's policy ([`Policy::new`]),
//! each request handed to the gateway's service with its peer address and an idle-timed body,
//! and the limit that ended the connection, if one did, counted.
//!
//! Two of the limits need more than a hyper setting: the keep-alive timeout, which hyper does
//! not have apart from its header timeout ([`deadline`]), and the lingering close, which hyper
//! does not do at all ([`linger`]).

mod deadline;
mod linger;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::Watcher;
use tokio::net::TcpStream;
use tower::util::Oneshot;
use tower::ServiceExt as _;

use crate::config::ServerConfig;
use crate::idle::{IdleError, IdleTimeout};
use crate::layers::metrics::{ConnectionClose, Metrics};

/// hyper's own default read buffer, kept: request bodies are read in pieces of up to this.
const READ_BUFFER: usize = 8192 + 4096 * 100;

/// The server's HTTP/1.1 policy, made once from `[server]`.
#[derive(Debug)]
pub(super) struct Policy {
    http: http1::Builder,
    header_read_timeout: Duration,
    keepalive_timeout: Duration,
    body_idle_timeout: Duration,
    lingering_close: Duration,
    send_timeout: Duration,
}

impl Policy {
    /// Every hyper server setting, defaults included, so that this is all there is to read.
    pub(super) fn new(config: &ServerConfig) -> Policy {
        let header_read_timeout = Duration::from_secs_f64(config.header_read_timeout_secs);
        let mut http = http1::Builder::new();
        http.keep_alive(true)
            // A client that shuts its sending side mid-request is taken as gone and its request
            // dropped, not finished for nobody: as before, and as nginx does.
            .half_close(false)
            // hyper answers a head over either limit with a bare 431 and closes.
            .max_header_size(config.max_header_bytes)
            .max_headers(config.max_headers)
            // At least the head's limit, or the buffer would be the limit. Up to 100 headers
            // (hyper's inline table) cost no allocation; above, one per request.
            .max_buf_size(READ_BUFFER.max(config.max_header_bytes))
            // Started by hyper whenever it waits for a head; the timer that keeps this apart from
            // the keep-alive timeout is set on each connection ([`deadline::HeadTimer`]).
            .header_read_timeout(header_read_timeout)
            .auto_date_header(true)
            .title_case_headers(false)
            .preserve_header_case(false)
            .ignore_invalid_headers(false)
            .allow_multiple_spaces_in_request_line_delimiters(false);
        // Left at hyper's defaults: `writev` (chosen by hyper for the transport) and
        // `pipeline_flush` (off; experimental).
        Policy {
            http,
            header_read_timeout,
            keepalive_timeout: Duration::from_secs_f64(config.keepalive_timeout_secs),
            body_idle_timeout: Duration::from_secs_f64(config.body_idle_timeout_secs),
            lingering_close: Duration::from_secs_f64(config.lingering_close_secs),
            send_timeout: Duration::from_secs_f64(config.send_timeout_secs),
        }
    }
}

/// What the parts of one connection tell each other. They live in hyper's connection and in
/// the request body, which another task may poll (the passthrough's upstream connection).
#[derive(Debug, Default)]
struct ConnState {
    /// Reads that brought bytes: how the head timer sees a request begin after an idle wait.
    reads: AtomicU64,
    /// The last request's body was dropped before its end. hyper then closes the read side
    /// unless the rest was already buffered, and the client may still be sending.
    body_unfinished: AtomicBool,
    /// The limit that ended the connection; the first to act names it.
    ended_by: OnceLock<ConnectionClose>,
}

impl ConnState {
    fn end_by(&self, reason: ConnectionClose) {
        let _ = self.ended_by.set(reason);
    }
}

/// Serves one accepted connection until it ends (or, after `watcher` signals, until it has
/// finished what it was doing).
pub(super) async fn serve<S>(
    stream: TcpStream,
    peer: SocketAddr,
    service: S,
    policy: &Policy,
    metrics: &Metrics,
    watcher: Watcher,
) where
    S: tower::Service<axum::extract::Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let state = Arc::new(ConnState::default());
    let mut http = policy.http.clone();
    http.timer(deadline::HeadTimer::new(state.clone(), policy.header_read_timeout, policy.keepalive_timeout));
    let io = TokioIo::new(linger::ClientIo::new(stream, state.clone(), policy.lingering_close, policy.send_timeout));
    let service = ConnService { service, peer, state: state.clone(), body_idle_timeout: policy.body_idle_timeout };
    let ended = watcher.watch(http.serve_connection(io, service)).await;
    let reason = match &ended {
        Err(e) if e.is_parse_too_large() => Some(ConnectionClose::HeadersTooLarge),
        _ => state.ended_by.get().copied(),
    };
    if let Some(reason) = reason {
        metrics.connection_closed(reason);
    }
    // Per connection and caused by clients, hence debug: the metric is what shows a limit acting.
    match ended {
        Ok(()) => tracing::debug!(%peer, reason = reason.map(ConnectionClose::label), "connection closed"),
        Err(e) => tracing::debug!(%peer, reason = reason.map(ConnectionClose::label), "connection closed: {e}"),
    }
}

/// Hands each request of a connection to the gateway's service as axum's own server would:
/// with the peer's address as `ConnectInfo`, and the body in an axum `Body`.
#[derive(Debug)]
struct ConnService<S> {
    service: S,
    peer: SocketAddr,
    state: Arc<ConnState>,
    body_idle_timeout: Duration,
}

impl<S> hyper::service::Service<http::Request<Incoming>> for ConnService<S>
where
    S: tower::Service<axum::extract::Request, Response = Response, Error = Infallible> + Clone,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Oneshot<S, axum::extract::Request>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        // A request after one whose body was left: hyper had the rest buffered and drained it.
        self.state.body_unfinished.store(false, Ordering::Relaxed);
        let mut request = request.map(|body| {
            Body::new(RequestBody {
                body: IdleTimeout::new(body, self.body_idle_timeout),
                state: self.state.clone(),
                ended: false,
            })
        });
        request.extensions_mut().insert(ConnectInfo(self.peer));
        self.service.clone().oneshot(request)
    }
}

/// A request body as handlers get it: failing once idle for `server.body_idle_timeout_secs`,
/// and telling the connection when it is dropped before its end (see [`linger`]).
#[derive(Debug)]
struct RequestBody {
    body: IdleTimeout<Incoming>,
    state: Arc<ConnState>,
    ended: bool,
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = IdleError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, IdleError>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        match &frame {
            None => self.ended = true,
            Some(Err(IdleError::Stalled(_))) => self.state.end_by(ConnectionClose::BodyIdleTimeout),
            Some(_) => {}
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

impl Drop for RequestBody {
    fn drop(&mut self) {
        if !self.ended && !self.body.is_end_stream() {
            self.state.body_unfinished.store(true, Ordering::Relaxed);
        }
    }
}
