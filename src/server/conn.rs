//! One client connection: hyper's HTTP/1.1 server with the gateway's policy ([`Policy::new`]),
//! each request handed to the gateway's service with its peer address and an idle-timed body,
//! and the limit that ended the connection, if one did, counted.
//!
//! With `server.tls`, the TLS handshake comes first, within the header deadline of the first
//! request; then HTTP/2 if the client chose it by ALPN (hyper's HTTP/2 server, [`Policy::new`]
//! sets its limits), else HTTP/1.1 as over plain TCP, with every limit below. Requests over TLS
//! carry [`OverTls`] and, when the client presented a verified certificate, its
//! [`ClientCertificate`].
//!
//! Two of the limits need more than a hyper setting: the keep-alive timeout, which hyper does
//! not have apart from its header timeout ([`deadline`]), and the lingering close, which hyper
//! does not do at all ([`linger`]).

mod deadline;
mod linger;
mod streams;

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
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::util::Oneshot;
use tower::ServiceExt as _;

use crate::config::ServerConfig;
use crate::idle::{IdleError, IdleTimeout};
use crate::layers::metrics::{ConnectionClose, Metrics};
use crate::public_url::OverTls;
use crate::trust::ClientCertificate;

/// hyper's own default read buffer, kept: request bodies are read in pieces of up to this.
const READ_BUFFER: usize = 8192 + 4096 * 100;

/// Requests one HTTP/2 connection may have open at once (what nginx and Go allow by default).
const H2_MAX_CONCURRENT_STREAMS: u32 = 128;

/// How long an HTTP/2 client has to answer a keep-alive ping before its connection is closed.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// The server's HTTP/1.1 and HTTP/2 policy, made once from `[server]`.
#[derive(Debug)]
pub(super) struct Policy {
    http: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
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
        let keepalive_timeout = Duration::from_secs_f64(config.keepalive_timeout_secs);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            // The decoded head (names, values, 32 bytes per field), as HTTP/2 counts it.
            .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
            // A client silent this long is pinged, and dropped if it does not answer: how a peer
            // that is gone is found while a request is open (without one, [`streams::idle`]
            // closes the connection).
            .keep_alive_interval(keepalive_timeout)
            .keep_alive_timeout(H2_PING_TIMEOUT)
            .auto_date_header(true);
        // Left at hyper's defaults: flow-control windows (1 MiB per connection and stream, not
        // adaptive), frame size (16 KiB), send buffer (400 KiB per stream), and its limits on
        // streams reset by clients (20 pending) and by the server (1024), against rapid reset.
        Policy {
            http,
            h2,
            header_read_timeout,
            keepalive_timeout,
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
    /// HTTP/2: its requests, for [`streams::idle`]...
    streams: tokio::sync::watch::Sender<streams::Streams>,
    /// ...and its answers waiting for the client, for [`streams::stalled`].
    stalls: streams::Stalls,
}

impl ConnState {
    fn end_by(&self, reason: ConnectionClose) {
        let _ = self.ended_by.set(reason);
    }
}

/// Serves one accepted connection until it ends (or, after `watcher` signals, until it has
/// finished what it was doing). Over TLS when `tls` is given.
pub(super) async fn serve<S>(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    service: S,
    policy: &Policy,
    metrics: &Metrics,
    watcher: Watcher,
) where
    S: tower::Service<axum::extract::Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let first_head = Instant::now() + policy.header_read_timeout;
    let state = Arc::new(ConnState::default());
    let mut service = ConnService {
        service,
        peer,
        over_tls: false,
        client_certificate: None,
        http2: false,
        state: state.clone(),
        body_idle_timeout: policy.body_idle_timeout,
    };
    let ended = match tls {
        None => serve_http1(stream, service, first_head, policy, watcher).await,
        Some(acceptor) => {
            let stream = match tokio::time::timeout_at(first_head, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    // Counted when TLS itself failed (rustls's errors: no certificate, an unknown
                    // CA, not TLS, an alert from the client), not when the client went away
                    // (a TCP health check closes before any handshake).
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        metrics.tls_handshake_failed();
                    }
                    // The client's doing: debug.
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    metrics.connection_closed(ConnectionClose::HandshakeTimeout);
                    tracing::debug!(%peer, reason = ConnectionClose::HandshakeTimeout.label(), "connection closed");
                    return;
                }
            };
            let session = stream.get_ref().1;
            let h2 = session.alpn_protocol() == Some(b"h2");
            service.over_tls = true;
            service.client_certificate = crate::tls::server::client_certificate(session);
            if h2 {
                service.http2 = true;
                serve_http2(stream, service, first_head, policy, watcher).await
            } else {
                serve_http1(stream, service, first_head, policy, watcher).await
            }
        }
    };
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

/// HTTP/1.1 over `stream`, with the head deadline and keep-alive timeout of [`deadline`] and the
/// lingering close of [`linger`].
async fn serve_http1<T, S>(
    stream: T,
    service: ConnService<S>,
    first_head: Instant,
    policy: &Policy,
    watcher: Watcher,
) -> Result<(), hyper::Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<axum::extract::Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let state = service.state.clone();
    let mut http = policy.http.clone();
    http.timer(deadline::HeadTimer::new(
        state.clone(),
        first_head,
        policy.header_read_timeout,
        policy.keepalive_timeout,
    ));
    let io = TokioIo::new(linger::ClientIo::new(stream, state, policy.lingering_close, policy.send_timeout));
    watcher.watch(http.serve_connection(io, service)).await
}

/// HTTP/2 over `stream`, closed when without a request too long, or when the client takes
/// nothing of an answer too long ([`streams`]). No lingering close: a stream whose body is left
/// is reset on its own, the connection goes on.
async fn serve_http2<T, S>(
    stream: T,
    service: ConnService<S>,
    first_request: Instant,
    policy: &Policy,
    watcher: Watcher,
) -> Result<(), hyper::Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<axum::extract::Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let state = service.state.clone();
    let io = TokioIo::new(linger::ClientIo::new(stream, state.clone(), Duration::ZERO, policy.send_timeout));
    tokio::select! {
        ended = watcher.watch(policy.h2.serve_connection(io, service)) => ended,
        reason = streams::idle(&state, first_request, policy.keepalive_timeout) => {
            state.end_by(reason);
            Ok(())
        }
        () = streams::stalled(&state, policy.send_timeout) => {
            state.end_by(ConnectionClose::SendTimeout);
            Ok(())
        }
    }
}

/// Hands each request of a connection to the gateway's service as axum's own server would:
/// with the peer's address as `ConnectInfo`, and the body in an axum `Body`.
#[derive(Debug)]
struct ConnService<S> {
    service: S,
    peer: SocketAddr,
    over_tls: bool,
    /// The client's verified certificate, if it presented one.
    client_certificate: Option<ClientCertificate>,
    /// Each request is an HTTP/2 stream, tracked by [`streams`].
    http2: bool,
    state: Arc<ConnState>,
    body_idle_timeout: Duration,
}

impl<S> hyper::service::Service<http::Request<Incoming>> for ConnService<S>
where
    S: tower::Service<axum::extract::Request, Response = Response, Error = Infallible> + Clone,
{
    type Response = Response;
    type Error = Infallible;
    type Future = streams::Tracked<Oneshot<S, axum::extract::Request>>;

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
        if self.over_tls {
            request.extensions_mut().insert(OverTls);
        }
        if let Some(certificate) = &self.client_certificate {
            request.extensions_mut().insert(certificate.clone());
        }
        // HTTP/2 names the authority in the target, not in `Host`, which links are made from.
        if request.version() == http::Version::HTTP_2 && !request.headers().contains_key(http::header::HOST) {
            if let Some(host) = request.uri().authority().and_then(|a| http::HeaderValue::from_str(a.as_str()).ok()) {
                request.headers_mut().insert(http::header::HOST, host);
            }
        }
        let open = self.http2.then(|| streams::OpenStream::new(&self.state));
        streams::Tracked { future: self.service.clone().oneshot(request), open }
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
