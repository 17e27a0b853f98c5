//! Passthrough: requests no dialect claims, forwarded to the service behind the gateway (Nova
//! for the compute mounts, Glance for the image mount) as a reverse proxy would.
//!
//! Bodies stream in both directions, never buffered, so an image upload or download costs the
//! gateway a few buffers whatever its size. Hop-by-hop headers are dropped (RFC 9110 §7.6.1),
//! `X-Forwarded-For`, `-Proto` and `-Host` are set, and a `Location` pointing at the upstream is
//! rewritten to the address the client used.
//!
//! This is the gateway's hottest path, so it goes straight to hyper's pooled client: the target
//! is built from parts parsed once, headers are edited in place, and bodies are handed over
//! as they are, each watched by an idle timer.

use std::error::Error as _;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, HeaderMap, HeaderName, HeaderValue, Uri};
use http_body::{Frame, SizeHint};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;
use tracing::Instrument as _;
use url::Url;

use crate::glance::UpstreamError;
use crate::idle::{IdleError, IdleTimeout};
use crate::layers::trace;
use crate::tls::client::ClientTls;

/// Probes for a dead peer on a pooled connection, as reqwest's default did.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);

/// Why an upstream cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("`{0}` is not an http(s) URL with a host")]
    NotHttp(Url),
}

/// One upstream to forward to. Cheap to clone: routers clone their state for every request.
#[derive(Clone, Debug)]
pub struct Upstream(Arc<Inner>);

/// What the clones of an [`Upstream`] share.
#[derive(Debug)]
struct Inner {
    /// The upstream's name in logs (`glance`, `nova`).
    name: Box<str>,
    client: Client<HttpsConnector<HttpConnector>, Upload>,
    scheme: Scheme,
    authority: Authority,
    /// `Host` for the upstream, made once rather than by hyper for every request (over h2 it
    /// equals `:authority`, which RFC 9113 §8.3.1 allows).
    host: HeaderValue,
    /// The base URL's path without its trailing slash: what every forwarded path goes below.
    path: String,
    /// The base URL without its trailing slash, as the upstream's own `Location`s start.
    base: String,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl Upstream {
    /// The upstream named `name` at `base`, over `tls` when it is https. `idle_timeout` bounds
    /// the wait for each piece of an upload or an answer, not the whole transfer, so a large
    /// image can stream for as long as it keeps moving.
    pub fn new(
        name: &str,
        base: Url,
        tls: &ClientTls,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Result<Self, BuildError> {
        let Some((scheme, authority, host)) = target(&base) else { return Err(BuildError::NotHttp(base)) };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_keepalive(Some(TCP_KEEPALIVE));
        // ALPN offers h2 and http/1.1 over TLS, as reqwest does.
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls.rustls())
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(crate::glance::POOL_IDLE)
            .pool_max_idle_per_host(crate::glance::POOL_MAX_IDLE)
            .build(https);
        Ok(Upstream(Arc::new(Inner {
            name: name.into(),
            client,
            scheme,
            authority,
            host,
            path: base.path().trim_end_matches('/').to_owned(),
            base: base.as_str().trim_end_matches('/').to_owned(),
            connect_timeout,
            idle_timeout,
        })))
    }

    /// Where `path_and_query` is below the upstream's base (a missing leading `/` is added).
    pub fn target(&self, path_and_query: &str) -> Result<Uri, UpstreamError> {
        self.0.uri(path_and_query).map_err(|e| UpstreamError::BadAnswer(e.to_string()))
    }

    /// Forwards `req` to `target` (from [`Upstream::target`]). `public_base` is what the
    /// upstream's own base becomes in a rewritten `Location`.
    pub async fn forward(&self, req: Request, target: Uri, public_base: &str) -> Result<Response, UpstreamError> {
        let up = &*self.0;
        let (parts, body) = req.into_parts();
        let mut headers = parts.headers;
        to_upstream(&mut headers, crate::public_url::peer(&parts.extensions), public_base);
        headers.insert(header::HOST, up.host.clone());
        let span = trace::upstream_span(&up.name, &parts.method, target.path(), &mut headers);
        let moved = Arc::new(AtomicBool::new(false));
        let mut request = http::Request::new(Upload { body, moved: Arc::clone(&moved) });
        *request.method_mut() = parts.method;
        *request.uri_mut() = target;
        *request.headers_mut() = headers;

        // One timer for the whole exchange: the head's deadline, then each body frame's. While
        // an upload still moves, waiting for the head is not idleness: a large image may take
        // far longer to send than `idle_timeout`, and a stalled one is given up within twice it.
        let mut timer = Box::pin(tokio::time::sleep(up.idle_timeout));
        let mut pending = up.client.request(request);
        let answer = async {
            loop {
                tokio::select! {
                    biased;
                    answer = &mut pending => break answer.map_err(|e| up.error(&e)),
                    () = timer.as_mut() => {
                        if !moved.swap(false, Ordering::Relaxed) {
                            break Err(UpstreamError::Timeout(up.idle_timeout));
                        }
                        timer.as_mut().reset(Instant::now() + up.idle_timeout);
                    }
                }
            }
        }
        .instrument(span.clone())
        .await?;
        span.record("status", answer.status().as_u16());
        let (parts, body) = answer.into_parts();
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        rewrite_location(&mut headers, &up.base, public_base);
        // The answer's body gets the same timer, set afresh: its idleness counts from the head.
        let mut response = Response::new(Body::new(IdleTimeout::with_timer(body, up.idle_timeout, timer)));
        *response.status_mut() = parts.status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

impl Inner {
    fn uri(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        let slash = if path_and_query.starts_with('/') { "" } else { "/" };
        let path_and_query = if self.path.is_empty() && slash.is_empty() {
            PathAndQuery::try_from(path_and_query)?
        } else {
            PathAndQuery::try_from([&self.path, slash, path_and_query].concat())?
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Ok(Uri::from_parts(parts)?)
    }

    fn error(&self, e: &hyper_util::client::legacy::Error) -> UpstreamError {
        // The upload failed on the client's side, not the upstream's.
        if let Some(idle) = IdleError::stalled_in(e) {
            return UpstreamError::ClientStalled(idle);
        }
        let timed_out = std::iter::successors(e.source(), |c| (*c).source())
            .filter_map(|c| c.downcast_ref::<std::io::Error>())
            .any(|io| io.kind() == std::io::ErrorKind::TimedOut);
        match (timed_out, e.is_connect()) {
            (true, true) => UpstreamError::Timeout(self.connect_timeout),
            (true, false) => UpstreamError::Timeout(self.idle_timeout),
            (false, true) => UpstreamError::from_transport(&self.name, e, UpstreamError::Unreachable),
            (false, false) => UpstreamError::from_transport(&self.name, e, UpstreamError::BadAnswer),
        }
    }
}

/// Scheme and authority of an http(s) base URL, and the authority as a `Host` value.
fn target(base: &Url) -> Option<(Scheme, Authority, HeaderValue)> {
    let scheme = match base.scheme() {
        "http" => Scheme::HTTP,
        "https" => Scheme::HTTPS,
        _ => return None,
    };
    let host = base.host_str()?;
    let authority: Authority = match base.port() {
        Some(port) => format!("{host}:{port}").parse().ok()?,
        None => host.parse().ok()?,
    };
    let value = HeaderValue::from_str(authority.as_str()).ok()?;
    Some((scheme, authority, value))
}

/// Readies a client's headers for the upstream, in place: hop-by-hop headers and Host go, the
/// peer joins `X-Forwarded-For`, and `-Proto` and `-Host` say what the client used.
fn to_upstream(headers: &mut HeaderMap, peer: Option<IpAddr>, public_base: &str) {
    let host = headers.remove(header::HOST);
    // Taken before the hop-by-hop headers go, so a `Connection` naming it cannot cut the chain.
    let chain = peer.and_then(|peer| {
        let prior = headers.get(const { HeaderName::from_static("x-forwarded-for") }).and_then(|v| v.to_str().ok());
        HeaderValue::try_from(forwarded_for(prior, peer)).ok()
    });
    strip_hop_by_hop(headers);
    if let Some(chain) = chain {
        headers.insert(const { HeaderName::from_static("x-forwarded-for") }, chain);
    }
    let proto = if public_base.starts_with("https://") { "https" } else { "http" };
    headers.insert(const { HeaderName::from_static("x-forwarded-proto") }, HeaderValue::from_static(proto));
    if let Some(host) = host {
        headers.insert(const { HeaderName::from_static("x-forwarded-host") }, host);
    }
}

/// `prior, peer`, or `peer` alone, made in one allocation.
fn forwarded_for(prior: Option<&str>, peer: IpAddr) -> String {
    // An IP address takes at most 39 characters.
    let mut chain = String::with_capacity(prior.map_or(0, |p| p.len() + 2) + 39);
    if let Some(prior) = prior {
        chain.push_str(prior);
        chain.push_str(", ");
    }
    match peer {
        // By hand: `Display` runs the formatter for each octet, ten times the cost, and every
        // passthrough pays it.
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    chain.push('.');
                }
                if octet >= 100 {
                    chain.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    chain.push(char::from(b'0' + octet / 10 % 10));
                }
                chain.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            let _ = write!(chain, "{v6}");
        }
    }
    chain
}

/// Whether `name` describes one connection, not the message (RFC 9110 §7.6.1).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Removes the hop-by-hop headers and those `Connection` names. One look at each name is all
/// it costs a message that has none, as most have.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let found: Vec<HeaderName> = headers.keys().filter(|name| is_hop_by_hop(name)).cloned().collect();
    if found.is_empty() {
        return;
    }
    let named: Vec<HeaderValue> = headers.get_all(header::CONNECTION).iter().cloned().collect();
    for token in named.iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim) {
        // Most tokens (`keep-alive`, `close`) name no header of the message, and removing by
        // name would parse and hash each.
        if headers.keys().any(|name| name.as_str().eq_ignore_ascii_case(token)) {
            headers.remove(token);
        }
    }
    for name in &found {
        headers.remove(name);
    }
}

/// Points a `Location` at the upstream's base to `public_base` instead.
fn rewrite_location(headers: &mut HeaderMap, base: &str, public_base: &str) {
    let location = headers.get(header::LOCATION).and_then(|v| v.to_str().ok());
    let Some(rest) = location.and_then(|l| l.strip_prefix(base)) else { return };
    if let Ok(rewritten) = HeaderValue::try_from(format!("{public_base}{rest}")) {
        headers.insert(header::LOCATION, rewritten);
    }
}

/// A client's request body on its way up, noting that it moves. Trailers stay behind: headers
/// there would escape the edge's filter (identity headers, `crate::trust`), and no upstream
/// here reads them.
struct Upload {
    body: Body,
    moved: Arc<AtomicBool>,
}

impl http_body::Body for Upload {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        loop {
            let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
            if let Some(Ok(frame)) = &frame {
                self.moved.store(true, Ordering::Relaxed);
                if frame.is_trailers() {
                    continue;
                }
            }
            return Poll::Ready(frame);
        }
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

    fn tls() -> ClientTls {
        ClientTls::new("glance", &crate::config::UpstreamTls::default()).unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[test]
    fn hop_by_hop_headers_go_including_those_connection_names() {
        let mut h = headers(&[
            ("connection", "close, X-Private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("x-auth-token", "t"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-auth-token"));
    }

    #[test]
    fn forwarded_headers_extend_the_chain() {
        let mut h =
            headers(&[("host", "gw.example"), ("x-forwarded-for", "192.0.2.7"), ("connection", "x-forwarded-for")]);
        to_upstream(&mut h, Some("10.0.0.2".parse().unwrap()), "https://gw.example");
        assert_eq!(h["x-forwarded-for"], "192.0.2.7, 10.0.0.2");
        for peer in ["0.0.0.0", "9.10.99.100", "255.255.255.255", "::1", "2001:db8::7", "::ffff:10.0.0.1"] {
            assert_eq!(forwarded_for(None, peer.parse().unwrap()), peer);
        }
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "gw.example");
        assert!(!h.contains_key("host") && !h.contains_key("connection"));
    }

    #[test]
    fn locations_at_the_upstream_point_at_the_gateway() {
        let mut h = headers(&[("location", "http://glance:9292/v2/images/1")]);
        rewrite_location(&mut h, "http://glance:9292", "https://gw.example/image");
        assert_eq!(h["location"], "https://gw.example/image/v2/images/1");
        let mut h = headers(&[("location", "http://elsewhere/v2/images/1")]);
        rewrite_location(&mut h, "http://glance:9292", "https://gw.example/image");
        assert_eq!(h["location"], "http://elsewhere/v2/images/1");
    }

    #[test]
    fn targets_are_built_below_the_base_path() {
        let at = |base: &str, pq: &str| {
            let up =
                Upstream::new("glance", base.parse().unwrap(), &tls(), Duration::from_secs(1), Duration::from_secs(1))
                    .unwrap();
            up.0.uri(pq).unwrap().to_string()
        };
        assert_eq!(at("http://glance:9292", "/v2/images?limit=1"), "http://glance:9292/v2/images?limit=1");
        assert_eq!(at("https://cloud.example/image/", "/v2/images"), "https://cloud.example/image/v2/images");
        assert_eq!(at("http://[::1]:80/", "/"), "http://[::1]/");
        assert_eq!(at("http://glance:9292", "?limit=1"), "http://glance:9292/?limit=1");
        assert_eq!(at("https://cloud.example/image/", ""), "https://cloud.example/image/");
        for base in ["ftp://glance", "unix:/run/glance.sock"] {
            let up = Upstream::new("glance", base.parse().unwrap(), &tls(), Duration::ZERO, Duration::ZERO);
            assert!(matches!(up, Err(BuildError::NotHttp(_))), "{base}");
        }
    }

    #[test]
    fn the_host_header_is_the_base_authority() {
        let up = Upstream::new("glance", "http://glance:9292".parse().unwrap(), &tls(), Duration::ZERO, Duration::ZERO)
            .unwrap();
        assert_eq!((up.0.authority.as_str(), &up.0.host), ("glance:9292", &HeaderValue::from_static("glance:9292")));
    }

    #[tokio::test]
    async fn uploads_leave_their_trailers_behind() {
        use http_body_util::BodyExt as _;
        let mut trailers = HeaderMap::new();
        trailers.insert("x-roles", HeaderValue::from_static("admin"));
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> =
            vec![Ok(Frame::data(Bytes::from_static(b"image"))), Ok(Frame::trailers(trailers))];
        let body = Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(frames)));
        let moved = Arc::new(AtomicBool::new(false));
        let collected = Upload { body, moved: moved.clone() }.collect().await.unwrap();
        assert!(collected.trailers().is_none());
        assert_eq!(collected.to_bytes(), "image");
        assert!(moved.load(Ordering::Relaxed));
    }
}
