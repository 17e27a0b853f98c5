//! The Glance v2 client: every call the dialects make to the image service.
//!
//! One client serves both upstreams: a real Glance over HTTP (reqwest), or the in-memory
//! [`embedded`] store called in-process through its router. Both speak the same HTTP, so the
//! request building, error decoding and pagination below are shared, and the gateway's tests
//! exercise the same code whichever upstream they run against.

mod breaker;
mod data;
pub mod embedded;
pub mod replay;

pub use data::{BoxError, ImageData};

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::OnceCell;
use tokio::time::Instant;
use tower::ServiceExt;
use tracing::Instrument as _;
use url::Url;

use crate::config::Config;
use crate::layers::metrics::Metrics;
use crate::layers::trace;
use crate::mapping::{for_each_object, PageError, PageSummary, PropertyNames, RawObject};
use crate::tls::client::ClientTls;
use breaker::{Breaker, Outcome, Permit};

/// How long an idle connection to Glance is kept: under the 5 s `KeepAliveTimeout` of Apache,
/// Glance's usual front, so that the gateway never reuses a connection the server is closing;
/// and short, because an idle connection that read a list page keeps its buffers (about 1.5
/// MiB each, measured): after a burst, they go within twice this.
pub const POOL_IDLE: Duration = Duration::from_secs(4);
/// Idle connections kept per upstream.
pub const POOL_MAX_IDLE: usize = 16;

/// Largest Glance answer the gateway will parse: a 1000-image page is about 1.5 MiB.
const MAX_JSON_ANSWER: usize = 64 << 20;

/// Why a Glance call failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Glance answered with an error status; `message` is its explanation, markup removed.
    #[error("Glance answered {status}: {message}")]
    Status { status: StatusCode, message: String },
    #[error("cannot reach Glance: {0}")]
    Unreachable(String),
    /// TLS with the upstream failed: its certificate is not one `ca_file` (or the system)
    /// trusts, it refused the gateway's client certificate, or the handshake broke down.
    #[error("TLS with the upstream failed: {0}")]
    Tls(String),
    #[error("Glance did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Glance sent an unusable answer: {0}")]
    BadAnswer(String),
    /// The circuit breaker is open: Glance has been failing, and is not tried for this long.
    #[error("Glance has been failing: not trying again for {:.1} s", .0.as_secs_f64())]
    CircuitOpen(Duration),
    /// The client stopped sending the body being passed on (`server.body_idle_timeout_secs`).
    #[error("the client sent nothing of its request body for {0:?}")]
    ClientStalled(Duration),
    /// The client's body being passed on failed (the client went, or sent other than it said).
    #[error("{0}")]
    ClientBody(String),
    /// The request Glance would get is longer than `server.max_request_target_bytes`: not sent.
    #[error("Request-URI Too Long: the request to Glance would be {target} bytes, the limit is {limit}")]
    RequestTooLong { target: usize, limit: usize },
    /// Glance's answer is larger than the gateway reads: a request (a page of images with large
    /// properties, say) the gateway cannot serve, not a failing Glance.
    #[error("Glance's answer is larger than the {0} bytes the gateway reads")]
    TooLarge(usize),
}

impl UpstreamError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            UpstreamError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The status a client gets for this failure. A failure that is not an answer of Glance's
    /// (unreachable, too slow, not Glance's, the client's own body) means the same in every
    /// dialect; what Glance's own answer becomes is the dialect's call, `answer(status)`.
    pub fn status_or(&self, answer: impl FnOnce(StatusCode) -> StatusCode) -> StatusCode {
        match self {
            UpstreamError::Unreachable(_) | UpstreamError::CircuitOpen(_) => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            // A certificate problem is not a passing outage: retrying soon will not help.
            UpstreamError::BadAnswer(_) | UpstreamError::TooLarge(_) | UpstreamError::Tls(_) => StatusCode::BAD_GATEWAY,
            UpstreamError::ClientStalled(_) => StatusCode::REQUEST_TIMEOUT,
            UpstreamError::ClientBody(_) => StatusCode::BAD_REQUEST,
            UpstreamError::RequestTooLong { .. } => StatusCode::URI_TOO_LONG,
            UpstreamError::Status { status, .. } => answer(*status),
        }
    }

    /// The failure behind an HTTP client's `error` for the upstream named `upstream`: a TLS
    /// failure is logged (naming both) and told apart; any other is `otherwise(chain)`, the
    /// chain of messages.
    pub fn from_transport(
        upstream: &str,
        error: &(dyn std::error::Error + 'static),
        otherwise: impl FnOnce(String) -> UpstreamError,
    ) -> UpstreamError {
        match crate::tls::client::report_tls_failure(upstream, error) {
            Some(tls) => UpstreamError::Tls(tls),
            None => otherwise(error_chain(error)),
        }
    }

    /// When a client should try again: while the circuit is open.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UpstreamError::CircuitOpen(left) => Some(*left),
            _ => None,
        }
    }

    /// What the failure says about Glance's health: only Glance's own failures count, never
    /// its refusal of a request (a 4xx is a healthy answer).
    fn outcome(&self) -> Outcome {
        match self {
            // 501: a feature Glance is configured without, not a failing Glance.
            UpstreamError::Status { status, .. }
                if status.is_server_error() && *status != StatusCode::NOT_IMPLEMENTED =>
            {
                Outcome::Failed
            }
            UpstreamError::Status { .. }
            | UpstreamError::CircuitOpen(_)
            | UpstreamError::ClientStalled(_)
            | UpstreamError::ClientBody(_)
            | UpstreamError::RequestTooLong { .. }
            | UpstreamError::TooLarge(_) => Outcome::Healthy,
            // A TLS failure says the upstream (or the gateway's trust in it) is broken.
            UpstreamError::Unreachable(_)
            | UpstreamError::Timeout(_)
            | UpstreamError::BadAnswer(_)
            | UpstreamError::Tls(_) => Outcome::Failed,
        }
    }
}

/// Decides an admitted call by its result.
fn settle<T>(permit: Permit, result: Result<T, UpstreamError>) -> Result<T, UpstreamError> {
    permit.record(result.as_ref().err().map_or(Outcome::Healthy, UpstreamError::outcome));
    result
}

/// Per-request facts the client needs: the headers to forward, and a meter for the time spent
/// waiting on Glance (reported as the upstream share of the request's duration). Cheap to
/// clone: a list answer that streams keeps one for its later pages.
#[derive(Clone, Debug, Default)]
pub struct Call(Arc<CallInner>);

#[derive(Debug, Default)]
struct CallInner {
    headers: HeaderMap,
    upstream_nanos: AtomicU64,
}

impl Call {
    pub fn new(headers: HeaderMap) -> Self {
        Call(Arc::new(CallInner { headers, upstream_nanos: AtomicU64::new(0) }))
    }

    pub fn upstream_time(&self) -> Duration {
        Duration::from_nanos(self.0.upstream_nanos.load(Ordering::Relaxed))
    }
}

/// Why a list could not be walked: Glance failed, or the visitor refused an image.
#[derive(Debug, thiserror::Error)]
pub enum ListError<E> {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("{0}")]
    Visit(E),
}

/// Glance's list pages from a marker on, until a limit or the end: each page is read raw and
/// its images handed one by one to the caller, so no page is ever held as a tree.
#[derive(Debug)]
pub struct Listing {
    client: GlanceClient,
    call: Call,
    filters: Vec<(String, String)>,
    marker: Option<String>,
    /// Images still wanted; `None`: all there are.
    remaining: Option<usize>,
    done: bool,
}

impl Listing {
    /// No page is left to fetch.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Fetches no more pages: the caller has what it wants.
    pub fn stop(&mut self) {
        self.done = true;
    }

    /// Fetches the next page and hands each of its images to `visit`, in order; `None` once
    /// the list is done.
    pub async fn next_page<E: fmt::Display>(
        &mut self,
        visit: impl FnMut(&RawObject<'_>) -> Result<(), E>,
    ) -> Result<Option<PageSummary>, ListError<E>> {
        if self.done {
            return Ok(None);
        }
        let page_size = self.client.page_size as usize;
        let want = self.remaining.map_or(page_size, |r| r.min(page_size));
        let mut query = self.filters.clone();
        query.push(("limit".into(), want.to_string()));
        if let Some(m) = &self.marker {
            query.push(("marker".into(), m.clone()));
        }
        let out = Outgoing { query, ..Outgoing::new(Method::GET, &["images"]) };
        let (status, page, permit) = self.client.send(&self.call, &out).await?;
        if !status.is_success() {
            return Err(settle(permit, Err(UpstreamError::Status { status, message: error_message(&page) }))?);
        }
        let summary = match for_each_object(&page, "images", visit) {
            Ok(summary) => summary,
            Err(PageError::Unusable(why)) => return Err(settle(permit, Err(UpstreamError::BadAnswer(why)))?),
            Err(PageError::Visit(e)) => {
                // Glance answered; the gateway could not use what it said.
                permit.record(Outcome::Healthy);
                return Err(ListError::Visit(e));
            }
        };
        self.remaining = self.remaining.map(|r| r.saturating_sub(summary.count));
        match &summary.last_id {
            // A page that ends where the previous one did would be followed forever.
            Some(id) if self.marker.as_deref() == Some(id.as_str()) => {
                return Err(settle(permit, Err(UpstreamError::BadAnswer("list pages do not advance".into())))?)
            }
            Some(id) if summary.next && self.remaining != Some(0) => self.marker = Some(id.clone()),
            _ => self.done = true,
        }
        permit.record(Outcome::Healthy);
        Ok(Some(summary))
    }
}

#[derive(Clone, Debug)]
enum Transport {
    Http {
        client: reqwest::Client,
        /// For uploads: a body that streams from a client cannot be sent twice, so it never
        /// goes on a pooled connection the server may be closing; it gets a new one.
        uploads: reqwest::Client,
        base: Url,
    },
    Embedded(axum::Router),
}

/// A Glance v2 client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GlanceClient {
    transport: Transport,
    /// Longest request target sent: what the gateway refuses from clients, it does not send.
    max_target: usize,
    forward: Arc<Vec<HeaderName>>,
    page_size: u32,
    timeout: Duration,
    base_properties: Arc<OnceCell<Arc<PropertyNames>>>,
    breaker: Arc<Breaker>,
}

impl GlanceClient {
    /// A client of the Glance at `base`, named `name` (`glance`, `glance/<namespace>`) in metrics and logs.
    /// `tls` is the upstream's TLS (`glance.tls`, or the namespace's).
    pub fn http(
        name: &str,
        config: &Config,
        base: Url,
        tls: &ClientTls,
        metrics: &Metrics,
    ) -> Result<Self, reqwest::Error> {
        let builder = || {
            tls.reqwest()
                .connect_timeout(Duration::from_secs_f64(config.glance.connect_timeout_secs))
                .pool_idle_timeout(POOL_IDLE)
                .tcp_nodelay(true)
                .user_agent(concat!("image-gateway/", env!("CARGO_PKG_VERSION")))
        };
        let client = builder().pool_max_idle_per_host(POOL_MAX_IDLE).build()?;
        let uploads = builder().pool_max_idle_per_host(0).build()?;
        Ok(Self::with(name, Transport::Http { client, uploads, base }, config, metrics))
    }

    /// A client of an in-process embedded store (or of any router that speaks Glance v2).
    pub fn embedded(name: &str, config: &Config, router: axum::Router, metrics: &Metrics) -> Self {
        Self::with(name, Transport::Embedded(router), config, metrics)
    }

    fn with(name: &str, transport: Transport, config: &Config, metrics: &Metrics) -> Self {
        let (server, config) = (&config.server, &config.glance);
        GlanceClient {
            transport,
            max_target: server.max_request_target_bytes,
            forward: Arc::new(
                config.forward_headers.iter().filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok()).collect(),
            ),
            page_size: config.page_size,
            timeout: Duration::from_secs_f64(config.timeout_secs),
            base_properties: Arc::default(),
            breaker: Arc::new(Breaker::new(
                name,
                config.circuit_breaker_failures,
                Duration::from_secs_f64(config.circuit_breaker_cooldown_secs),
                metrics.upstream(name),
            )),
        }
    }

    /// This client, keeping the circuit breaker of `previous` (the client it replaces in a
    /// reload) when both call the same upstream with the same breaker settings: a reload must
    /// neither close a circuit that is open nor forget the failures counted so far.
    pub fn carry_over(mut self, previous: Option<&GlanceClient>) -> Self {
        let same_upstream = |p: &GlanceClient| match (&p.transport, &self.transport) {
            (Transport::Http { base: a, .. }, Transport::Http { base: b, .. }) => a == b,
            (Transport::Embedded(_), Transport::Embedded(_)) => true,
            _ => false,
        };
        if let Some(previous) = previous.filter(|p| same_upstream(p) && p.breaker.same_settings(&self.breaker)) {
            self.breaker = previous.breaker.clone();
        }
        self
    }

    /// The headers of a client request that this client passes on to Glance: the configured
    /// ones, and the request id and trace context so that the call can be followed into Glance.
    pub fn forwarded(&self, incoming: &HeaderMap) -> HeaderMap {
        let mut out = HeaderMap::new();
        trace::correlate(incoming, &mut out);
        for name in self.forward.iter() {
            for value in incoming.get_all(name) {
                out.append(name.clone(), value.clone());
            }
        }
        out
    }

    /// The images matching `filters` from `marker` on, up to `limit`, page by page.
    pub fn listing(
        &self,
        call: &Call,
        filters: Vec<(String, String)>,
        marker: Option<&str>,
        limit: Option<usize>,
    ) -> Listing {
        Listing {
            client: self.clone(),
            call: call.clone(),
            filters,
            marker: marker.map(str::to_owned),
            remaining: limit,
            done: limit == Some(0),
        }
    }

    /// As [`GlanceClient::listing`], gathered: for the few images a lookup needs.
    pub async fn list_images(
        &self,
        call: &Call,
        filters: Vec<(String, String)>,
        limit: usize,
    ) -> Result<Vec<Value>, UpstreamError> {
        let mut listing = self.listing(call, filters, None, Some(limit));
        let mut images = Vec::new();
        while !listing.is_done() {
            listing.next_page(|image| image.to_value().map(|v| images.push(v))).await.map_err(|e| match e {
                ListError::Upstream(e) => e,
                ListError::Visit(e) => UpstreamError::BadAnswer(e.to_string()),
            })?;
        }
        Ok(images)
    }

    pub async fn get_image(&self, call: &Call, id: &str) -> Result<Value, UpstreamError> {
        self.image(call, Outgoing::image(Method::GET, id, None)?).await
    }

    /// Creates an image record (`POST /v2/images`).
    pub async fn create_image(&self, call: &Call, body: &Value) -> Result<Value, UpstreamError> {
        let body = serde_json::to_vec(body).map_err(|e| UpstreamError::BadAnswer(e.to_string()))?;
        let mut out = Outgoing::new(Method::POST, &["images"]);
        out.body = Some(("application/json", body.into()));
        self.image(call, out).await
    }

    /// Starts Glance's `web-download` import of `uri` into an image (v1's `copy_from`).
    pub async fn import_web_download(&self, call: &Call, id: &str, uri: &str) -> Result<(), UpstreamError> {
        let body = serde_json::json!({"method": {"name": "web-download", "uri": uri}});
        let mut out = Outgoing::image(Method::POST, id, Some("import"))?;
        out.body = Some(("application/json", body.to_string().into()));
        self.exchange(call, out).await.map(drop)
    }

    pub async fn delete_image(&self, call: &Call, id: &str) -> Result<(), UpstreamError> {
        self.exchange(call, Outgoing::image(Method::DELETE, id, None)?).await.map(|_| ())
    }

    /// Applies JSON-patch operations (`add`, `replace`, `remove`) in one Glance `PATCH` and
    /// returns the image as Glance has it afterwards.
    pub async fn patch_image(&self, call: &Call, id: &str, ops: &[Value]) -> Result<Value, UpstreamError> {
        let body = serde_json::to_vec(ops).map_err(|e| UpstreamError::BadAnswer(e.to_string()))?;
        let mut out = Outgoing::image(Method::PATCH, id, None)?;
        out.body = Some((PATCH_MEDIA_TYPE, body.into()));
        self.image(call, out).await
    }

    /// Glance's base (core) image properties, read once from its image schema.
    pub async fn base_properties(&self, call: &Call) -> Result<Arc<PropertyNames>, UpstreamError> {
        self.base_properties
            .get_or_try_init(|| async {
                let out = Outgoing::new(Method::GET, &["schemas", "image"]);
                self.json(call, out, |schema| base_properties(&schema).map(Arc::new)).await
            })
            .await
            .cloned()
    }

    /// Sends a request for one image.
    async fn image(&self, call: &Call, out: Outgoing) -> Result<Value, UpstreamError> {
        self.json(call, out, |image| image_id(&image).map(drop).map(|()| image)).await
    }

    /// Sends a request and decodes its JSON answer with `decode`; an answer that does not
    /// decode is Glance's failure.
    async fn json<T>(
        &self,
        call: &Call,
        out: Outgoing,
        decode: impl FnOnce(Value) -> Result<T, UpstreamError>,
    ) -> Result<T, UpstreamError> {
        let (status, body, permit) = self.send(call, &out).await?;
        let decoded = checked(status, body).and_then(|body| {
            let value =
                serde_json::from_slice(&body).map_err(|e| UpstreamError::BadAnswer(format!("not JSON: {e}")))?;
            decode(value)
        });
        settle(permit, decoded)
    }

    /// Sends a request; error statuses become [`UpstreamError::Status`].
    async fn exchange(&self, call: &Call, out: Outgoing) -> Result<Bytes, UpstreamError> {
        let (status, body, permit) = self.send(call, &out).await?;
        settle(permit, checked(status, body))
    }

    /// Sends a request through the breaker, within `glance.timeout_secs`. A transport failure
    /// is decided here; an answer comes with its permit, for the caller to decide once it
    /// knows whether the answer is usable.
    async fn send(&self, call: &Call, out: &Outgoing) -> Result<(StatusCode, Bytes, Permit), UpstreamError> {
        let (permit, span, headers) = self.admit(call, out)?;
        let started = Instant::now();
        let sent = match &self.transport {
            Transport::Http { client, base, .. } => {
                let sending = send_http(self.breaker.name(), client, base, headers, out);
                tokio::time::timeout(self.timeout, sending).instrument(span.clone()).await
            }
            Transport::Embedded(router) => {
                tokio::time::timeout(self.timeout, send_embedded(router, headers, out)).instrument(span.clone()).await
            }
        };
        let elapsed = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        call.0.upstream_nanos.fetch_add(elapsed, Ordering::Relaxed);
        match sent.unwrap_or(Err(UpstreamError::Timeout(self.timeout))) {
            Ok((status, body)) => {
                span.record("status", status.as_u16());
                Ok((status, body, permit))
            }
            Err(e) => settle(permit, Err(e)),
        }
    }

    /// The span of one call to Glance, and the headers that carry it there.
    /// What every call takes before it is sent: a request line Glance can take, the breaker's
    /// leave, and the call's span with the headers that carry it.
    fn admit(&self, call: &Call, out: &Outgoing) -> Result<(Permit, tracing::Span, HeaderMap), UpstreamError> {
        // Escaping can make a filter three times longer than the client sent it; a Glance
        // front that drops an over-long request line must not count that against Glance.
        let target = out.target_len();
        if target > self.max_target {
            return Err(UpstreamError::RequestTooLong { target, limit: self.max_target });
        }
        let permit = self.breaker.admit().map_err(UpstreamError::CircuitOpen)?;
        let mut headers = call.0.headers.clone();
        let span = trace::upstream_span(self.breaker.name(), &out.method, &out.path, &mut headers);
        Ok((permit, span, headers))
    }
}

/// The body of a successful answer; an error status becomes [`UpstreamError::Status`].
fn checked(status: StatusCode, body: Bytes) -> Result<Bytes, UpstreamError> {
    if status.is_success() {
        Ok(body)
    } else {
        Err(UpstreamError::Status { status, message: error_message(&body) })
    }
}

async fn send_http(
    upstream: &str,
    client: &reqwest::Client,
    base: &Url,
    headers: HeaderMap,
    out: &Outgoing,
) -> Result<(StatusCode, Bytes), UpstreamError> {
    let mut url = base.clone();
    url.set_path(&format!("{}{}", base.path().trim_end_matches('/'), out.path));
    if !out.query.is_empty() {
        url.query_pairs_mut().extend_pairs(&out.query);
    }
    // A pooled connection the server already closed fails at once; an idempotent call
    // gets one more try on a fresh connection. Writes are never repeated.
    let attempts = if out.method == Method::GET { 2 } else { 1 };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut request = client
            .request(out.method.clone(), url.clone())
            .headers(headers.clone())
            .header(http::header::ACCEPT, "application/json");
        if let Some((content_type, body)) = &out.body {
            request = request.header(http::header::CONTENT_TYPE, *content_type).body(body.clone());
        }
        let outcome = async {
            let response = request.send().await?;
            let status = response.status();
            let bytes = read_limited(response, MAX_JSON_ANSWER).await?;
            Ok::<_, reqwest::Error>((status, bytes))
        }
        .await;
        match outcome {
            Ok((status, Some(body))) => return Ok((status, body)),
            Ok((_, None)) => return Err(UpstreamError::TooLarge(MAX_JSON_ANSWER)),
            Err(e) => {
                let unreachable = e.is_connect() || e.is_request();
                // A certificate refused once is refused again: no second try.
                if unreachable && attempt < attempts && crate::tls::client::tls_failure(&e).is_none() {
                    continue;
                }
                let kind = if unreachable { UpstreamError::Unreachable } else { UpstreamError::BadAnswer };
                return Err(UpstreamError::from_transport(upstream, &e, kind));
            }
        }
    }
}

/// How Glance's own API, passed through at `glance.mount`, answers a failure to reach Glance
/// (its one error table: each dialect has its own, in its module): in Glance's error shape.
pub fn passthrough_error(e: &UpstreamError) -> axum::response::Response {
    // Glance's own answers pass through as they are; one that did not is Glance's status.
    error_response(e.status_or(|status| status), &e.to_string())
}

/// An error in Glance's own shape, for answers the gateway gives on Glance's mount.
pub fn error_response(status: StatusCode, message: &str) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let title = status.canonical_reason().unwrap_or("");
    let body = serde_json::json!({"code": format!("{} {title}", status.as_u16()), "title": title, "message": message});
    (status, axum::Json(body)).into_response()
}

/// The base properties an image schema declares: a property is base unless the schema marks it
/// `"is_base": false`, the rule glanceclient applies.
pub fn base_properties(schema: &Value) -> Result<PropertyNames, UpstreamError> {
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .ok_or_else(|| UpstreamError::BadAnswer("image schema without properties".into()))?;
    let base = props.iter().filter(|(_, p)| p.get("is_base").and_then(Value::as_bool).unwrap_or(true));
    Ok(base.map(|(k, _)| k.clone()).collect())
}

/// An answer's body, or `None` when it is larger than `limit`.
async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Option<Bytes>, reqwest::Error> {
    let mut buf = Vec::with_capacity(response.content_length().unwrap_or(0).min(limit as u64) as usize);
    while let Some(chunk) = response.chunk().await? {
        if buf.len() + chunk.len() > limit {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(buf.into()))
}

async fn send_embedded(
    router: &axum::Router,
    headers: HeaderMap,
    out: &Outgoing,
) -> Result<(StatusCode, Bytes), UpstreamError> {
    let mut uri = out.path.clone();
    if !out.query.is_empty() {
        uri.push('?');
        uri.push_str(&url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&out.query).finish());
    }
    let body = out.body.as_ref().map_or_else(Body::empty, |(_, b)| Body::from(b.clone()));
    let mut request = Request::builder()
        .method(out.method.clone())
        .uri(uri)
        .body(body)
        .map_err(|e| UpstreamError::BadAnswer(e.to_string()))?;
    *request.headers_mut() = headers;
    request.headers_mut().insert(http::header::ACCEPT, HeaderValue::from_static("application/json"));
    if let Some((content_type, _)) = &out.body {
        request.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    let response = router.clone().oneshot(request).await.map_err(|e| match e {})?;
    let status = response.status();
    let bytes = response.into_body().collect().await.map_err(|e| UpstreamError::BadAnswer(e.to_string()))?.to_bytes();
    Ok((status, bytes))
}

/// One request to Glance.
struct Outgoing {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    body: Option<(&'static str, Bytes)>,
}

impl Outgoing {
    /// The request target's length as sent: the path, and the query form-encoded.
    fn target_len(&self) -> usize {
        if self.query.is_empty() {
            return self.path.len();
        }
        let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&self.query).finish();
        self.path.len() + 1 + query.len()
    }

    /// A request for `/v2/<segments>`, each segment escaped.
    fn new(method: Method, segments: &[&str]) -> Self {
        let mut path = String::from("/v2");
        for seg in segments {
            path.push('/');
            path.extend(percent_encoding::utf8_percent_encode(seg, PATH_SEGMENT));
        }
        Outgoing { method, path, query: Vec::new(), body: None }
    }

    /// A request for `/v2/images/<id>[/<then>]`. An id that cannot name a Glance image is
    /// answered here as Glance answers it, 404, without asking Glance: such a request says
    /// nothing of Glance's health, and a hostile one (a 20,000-character id) could make a
    /// Glance drop the connection and count against it.
    fn image(method: Method, id: &str, then: Option<&str>) -> Result<Self, UpstreamError> {
        if !is_image_id(id) {
            let message = format!("No image found with ID {id}");
            return Err(UpstreamError::Status { status: StatusCode::NOT_FOUND, message });
        }
        Ok(match then {
            Some(then) => Outgoing::new(method, &["images", id, then]),
            None => Outgoing::new(method, &["images", id]),
        })
    }
}

/// Whether `id` can name a Glance image: Glance's image schema admits only hyphenated UUIDs.
pub fn is_image_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 36
        && b.iter()
            .enumerate()
            .all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { *c == b'-' } else { c.is_ascii_hexdigit() })
}

/// Glance accepts image PATCHes only in its own JSON-patch media type.
const PATCH_MEDIA_TYPE: &str = "application/openstack-images-v2.1-json-patch";

/// Characters escaped in one path segment: an image id can never add a path level.
const PATH_SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

fn image_id(image: &Value) -> Result<&str, UpstreamError> {
    image
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| UpstreamError::BadAnswer("image without a string `id`".into()))
}

/// Glance's JSON errors carry an HTML-ish `message`; plain-text and HTML ones are used as is.
fn error_message(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(v) => v.get("message").and_then(Value::as_str).map(str::to_owned),
        Err(_) => None,
    }
    .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let text = text.replace("<br />", "\n");
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glance_error_messages_lose_their_markup() {
        let body = br#"{"message": "No image found with ID bogus<br /><br />\n\n\n", "code": "400 Bad Request", "title": "Bad Request"}"#;
        assert_eq!(error_message(body), "No image found with ID bogus");
        assert_eq!(error_message(b"400 Bad Request\n\nbad thing\n\n   "), "400 Bad Request bad thing");
    }

    #[test]
    fn image_ids_are_hyphenated_uuids() {
        for id in ["0b7e3a5c-1f2d-4e6a-8b9c-0d1e2f3a4b5c", "0B7E3A5C-1F2D-4E6A-8B9C-0D1E2F3A4B5C"] {
            assert!(is_image_id(id), "{id}");
        }
        for id in [
            "",
            "-1",
            "detail",
            "0b7e3a5c1f2d4e6a8b9c0d1e2f3a4b5c",
            "0b7e3a5c-1f2d-4e6a-8b9c-0d1e2f3a4b5",
            "0b7e3a5c-1f2d-4e6a-8b9c-0d1e2f3a4b5c0",
            "0b7e3a5c-1f2d-4e6a-8b9c_0d1e2f3a4b5c",
            "0b7e3a5c-1f2d-4e6a-8b9c-0d1e2f3a4b5g",
            "{0b7e3a5c-1f2d-4e6a-8b9c-0d1e2f3a4b5}",
            "0b7e3a5c-1f2d-4e6a-8b9c-0d1e2f3a4bé",
        ] {
            assert!(!is_image_id(id), "{id}");
        }
    }

    #[tokio::test]
    async fn ids_that_name_no_image_are_404s_without_a_call() {
        let calls = Arc::new(AtomicU64::new(0));
        let seen = calls.clone();
        let router = axum::Router::new().fallback(move || {
            seen.fetch_add(1, Ordering::SeqCst);
            async { StatusCode::INTERNAL_SERVER_ERROR }
        });
        let glance = GlanceClient::embedded("glance", &crate::config::Config::default(), router, &Metrics::new());
        let call = Call::default();
        let long = "x".repeat(20_000);
        for id in ["detail", "-1", long.as_str()] {
            let e = glance.get_image(&call, id).await.unwrap_err();
            assert_eq!(e.status(), Some(StatusCode::NOT_FOUND), "{id}");
            assert_eq!(glance.delete_image(&call, id).await.unwrap_err().status(), Some(StatusCode::NOT_FOUND));
            assert_eq!(glance.patch_image(&call, id, &[]).await.unwrap_err().status(), Some(StatusCode::NOT_FOUND));
            let import = glance.import_web_download(&call, id, "http://127.0.0.1/x").await.unwrap_err();
            assert_eq!(import.status(), Some(StatusCode::NOT_FOUND));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0, "Glance was never asked");
    }

    #[tokio::test]
    async fn an_answer_too_large_to_read_is_not_glance_failing() {
        let answer = |body: &'static str| reqwest::Response::from(http::Response::new(body));
        assert_eq!(read_limited(answer("0123456789"), 10).await.unwrap().as_deref(), Some(&b"0123456789"[..]));
        assert_eq!(read_limited(answer("0123456789a"), 10).await.unwrap(), None);
        assert_eq!(UpstreamError::TooLarge(10).outcome(), Outcome::Healthy, "the request's size, not Glance's health");
        assert_eq!(passthrough_error(&UpstreamError::TooLarge(10)).status(), StatusCode::BAD_GATEWAY);
        let long = UpstreamError::RequestTooLong { target: 9000, limit: 8192 };
        assert_eq!((long.outcome(), passthrough_error(&long).status()), (Outcome::Healthy, StatusCode::URI_TOO_LONG));
    }

    #[test]
    fn ids_cannot_escape_their_segment() {
        let enc: String = percent_encoding::utf8_percent_encode("../x/y?z", PATH_SEGMENT).collect();
        assert_eq!(enc, "..%2Fx%2Fy%3Fz");
    }
}
