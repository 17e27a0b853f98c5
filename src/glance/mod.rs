//! The Glance v2 client: every call the dialects make to the image service.
//!
//! One client serves both upstreams: a real Glance over HTTP (reqwest), or the in-memory
//! [`embedded`] store called in-process through its router. Both speak the same HTTP, so the
//! request building, error decoding and pagination below are shared, and the gateway's tests
//! exercise the same code whichever upstream they run against.

mod breaker;
pub mod embedded;

use crate::mapping::PropertyNames;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::OnceCell;
use tower::ServiceExt;
use url::Url;

use crate::config::GlanceConfig;
use breaker::Breaker;

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
    #[error("Glance did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Glance sent an unusable answer: {0}")]
    BadAnswer(String),
    /// The client stopped sending the body being passed on (`server.body_idle_timeout_secs`).
    #[error("the client sent nothing of its request body for {0:?}")]
    ClientStalled(Duration),
}

impl UpstreamError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            UpstreamError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Per-request facts the client needs: the headers to forward, and a meter for the time spent
/// waiting on Glance (reported as the upstream share of the request's duration).
#[derive(Debug, Default)]
pub struct Call {
    headers: HeaderMap,
    upstream_nanos: AtomicU64,
}

impl Call {
    pub fn new(headers: HeaderMap) -> Self {
        Call { headers, upstream_nanos: AtomicU64::new(0) }
    }

    pub fn upstream_time(&self) -> Duration {
        Duration::from_nanos(self.upstream_nanos.load(Ordering::Relaxed))
    }
}

/// One page of results gathered from one or more Glance list calls.
#[derive(Debug)]
pub struct ImageList {
    pub images: Vec<Value>,
}

#[derive(Clone, Debug)]
enum Transport {
    Http { client: reqwest::Client, base: Url },
    Embedded(axum::Router),
}

/// A Glance v2 client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GlanceClient {
    transport: Transport,
    forward: Arc<Vec<HeaderName>>,
    page_size: u32,
    timeout: Duration,
    base_properties: Arc<OnceCell<Arc<PropertyNames>>>,
    breaker: Arc<Breaker>,
}

impl GlanceClient {
    /// A client of the Glance at `config.url`.
    pub fn http(config: &GlanceConfig, base: Url) -> Result<Self, reqwest::Error> {
        crate::install_crypto_provider();
        // Upstreams are reached directly, as the passthrough reaches them: an `HTTPS_PROXY` meant
        // for a pod's egress must not carry Glance's traffic and tokens.
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs_f64(config.connect_timeout_secs))
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .user_agent(concat!("image-gateway/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self::with(Transport::Http { client, base }, config))
    }

    /// A client of an in-process embedded store.
    pub fn embedded(config: &GlanceConfig, router: axum::Router) -> Self {
        Self::with(Transport::Embedded(router), config)
    }

    fn with(transport: Transport, config: &GlanceConfig) -> Self {
        GlanceClient {
            transport,
            forward: Arc::new(
                config.forward_headers.iter().filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok()).collect(),
            ),
            page_size: config.page_size,
            timeout: Duration::from_secs_f64(config.timeout_secs),
            base_properties: Arc::default(),
            breaker: Arc::new(Breaker::new(
                config.circuit_breaker_failures,
                Duration::from_secs_f64(config.circuit_breaker_cooldown_secs),
            )),
        }
    }

    /// The headers of a client request that this client passes on to Glance: the configured
    /// ones, and the request id so one id follows the call into Glance's logs.
    pub fn forwarded(&self, incoming: &HeaderMap) -> HeaderMap {
        let mut out = HeaderMap::new();
        if let Some(id) = incoming.get(crate::layers::request_id::HEADER) {
            out.insert(crate::layers::request_id::HEADER, id.clone());
        }
        for name in self.forward.iter() {
            for value in incoming.get_all(name) {
                out.append(name.clone(), value.clone());
            }
        }
        out
    }

    /// Lists images matching `filters`, following Glance's pages from `marker` until `limit`
    /// images are gathered or Glance has no more.
    pub async fn list_images(
        &self,
        call: &Call,
        filters: &[(String, String)],
        marker: Option<&str>,
        limit: Option<usize>,
    ) -> Result<ImageList, UpstreamError> {
        let mut images = Vec::new();
        let mut marker = marker.map(str::to_owned);
        loop {
            let want = limit.map_or(self.page_size as usize, |l| (l - images.len()).min(self.page_size as usize));
            let mut query = filters.to_vec();
            query.push(("limit".into(), want.to_string()));
            if let Some(m) = &marker {
                query.push(("marker".into(), m.clone()));
            }
            let mut page = self.json(call, Outgoing { query, ..Outgoing::new(Method::GET, &["images"]) }).await?;
            let more = page.get("next").is_some_and(Value::is_string);
            let Some(Value::Array(batch)) = page.get_mut("images").map(Value::take) else {
                return Err(UpstreamError::BadAnswer("list without an `images` array".into()));
            };
            // Every entry must be an image, not just the one the next page starts after.
            for image in &batch {
                image_id(image)?;
            }
            let last_id = batch.last().map(|image| image_id(image).map(str::to_owned)).transpose()?;
            images.extend(batch);
            match last_id {
                // A page that ends where the previous one did would be followed forever.
                Some(id) if marker.as_deref() == Some(id.as_str()) => {
                    return Err(UpstreamError::BadAnswer("list pages do not advance".into()))
                }
                Some(id) if more && limit.is_none_or(|l| images.len() < l) => marker = Some(id),
                _ => return Ok(ImageList { images }),
            }
        }
    }

    pub async fn get_image(&self, call: &Call, id: &str) -> Result<Value, UpstreamError> {
        let image = self.json(call, Outgoing::new(Method::GET, &["images", id])).await?;
        image_id(&image)?;
        Ok(image)
    }

    /// Creates an image record (`POST /v2/images`).
    pub async fn create_image(&self, call: &Call, body: &Value) -> Result<Value, UpstreamError> {
        let body = serde_json::to_vec(body).map_err(|e| UpstreamError::BadAnswer(e.to_string()))?;
        let mut out = Outgoing::new(Method::POST, &["images"]);
        out.body = Some(("application/json", body.into()));
        let image = self.json(call, out).await?;
        image_id(&image)?;
        Ok(image)
    }

    /// Starts Glance's `web-download` import of `uri` into an image (v1's `copy_from`).
    pub async fn import_web_download(&self, call: &Call, id: &str, uri: &str) -> Result<(), UpstreamError> {
        let body = serde_json::json!({"method": {"name": "web-download", "uri": uri}});
        let mut out = Outgoing::new(Method::POST, &["images", id, "import"]);
        out.body = Some(("application/json", body.to_string().into()));
        self.exchange(call, out).await.map(drop)
    }

    pub async fn delete_image(&self, call: &Call, id: &str) -> Result<(), UpstreamError> {
        self.exchange(call, Outgoing::new(Method::DELETE, &["images", id])).await.map(|_| ())
    }

    /// Applies JSON-patch operations (`add`, `replace`, `remove`) in one Glance `PATCH` and
    /// returns the image as Glance has it afterwards.
    pub async fn patch_image(&self, call: &Call, id: &str, ops: &[Value]) -> Result<Value, UpstreamError> {
        let body = serde_json::to_vec(ops).map_err(|e| UpstreamError::BadAnswer(e.to_string()))?;
        let mut out = Outgoing::new(Method::PATCH, &["images", id]);
        out.body = Some((PATCH_MEDIA_TYPE, body.into()));
        let image = self.json(call, out).await?;
        image_id(&image)?;
        Ok(image)
    }

    /// Glance's base (core) image properties, read once from its image schema.
    pub async fn base_properties(&self, call: &Call) -> Result<Arc<PropertyNames>, UpstreamError> {
        self.base_properties
            .get_or_try_init(|| async {
                let schema = self.json(call, Outgoing::new(Method::GET, &["schemas", "image"])).await?;
                base_properties(&schema).map(Arc::new)
            })
            .await
            .cloned()
    }

    /// Whether Glance answers at all (for readiness).
    pub async fn ping(&self) -> Result<(), UpstreamError> {
        let out = Outgoing { path: "/versions".into(), ..Outgoing::new(Method::GET, &[]) };
        self.send(&Call::default(), &out).await.map(|_| ())
    }

    /// Sends a request and decodes its JSON answer.
    async fn json(&self, call: &Call, out: Outgoing) -> Result<Value, UpstreamError> {
        let body = self.exchange(call, out).await?;
        serde_json::from_slice(&body).map_err(|e| UpstreamError::BadAnswer(format!("not JSON: {e}")))
    }

    /// Sends a request; error statuses become [`UpstreamError::Status`].
    async fn exchange(&self, call: &Call, out: Outgoing) -> Result<Bytes, UpstreamError> {
        let (status, body) = self.send(call, &out).await?;
        if !status.is_success() {
            return Err(UpstreamError::Status { status, message: error_message(&body) });
        }
        Ok(body)
    }

    async fn send(&self, call: &Call, out: &Outgoing) -> Result<(StatusCode, Bytes), UpstreamError> {
        if let Err(left) = self.breaker.admit() {
            return Err(UpstreamError::Unreachable(format!(
                "Glance has been failing: not trying again for {:.1} s",
                left.as_secs_f64()
            )));
        }
        let started = Instant::now();
        let result = match &self.transport {
            Transport::Http { client, base } => self.send_http(client, base, call, out).await,
            Transport::Embedded(router) => send_embedded(router, call, out).await,
        };
        call.upstream_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.breaker.record(match &result {
            Ok((status, _)) => status.is_server_error(),
            Err(_) => true,
        });
        result
    }

    async fn send_http(
        &self,
        client: &reqwest::Client,
        base: &Url,
        call: &Call,
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
                .headers(call.headers.clone())
                .header(http::header::ACCEPT, "application/json")
                .timeout(self.timeout);
            if let Some((content_type, body)) = &out.body {
                request = request.header(http::header::CONTENT_TYPE, *content_type).body(body.clone());
            }
            let outcome = async {
                let response = request.send().await?;
                let status = response.status();
                let bytes = read_limited(response).await?;
                Ok::<_, reqwest::Error>((status, bytes))
            }
            .await;
            match outcome {
                Ok(done) => return Ok(done),
                Err(e) if e.is_timeout() => return Err(UpstreamError::Timeout(self.timeout)),
                Err(e) if attempt < attempts && (e.is_connect() || e.is_request()) => continue,
                Err(e) if e.is_connect() || e.is_request() => return Err(UpstreamError::Unreachable(error_chain(&e))),
                Err(e) => return Err(UpstreamError::BadAnswer(error_chain(&e))),
            }
        }
    }
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

async fn read_limited(mut response: reqwest::Response) -> Result<Bytes, reqwest::Error> {
    let mut buf = Vec::with_capacity(response.content_length().unwrap_or(0).min(MAX_JSON_ANSWER as u64) as usize);
    while let Some(chunk) = response.chunk().await? {
        if buf.len() + chunk.len() > MAX_JSON_ANSWER {
            // Keep what we have: the JSON decode then reports it as unusable.
            break;
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.into())
}

async fn send_embedded(
    router: &axum::Router,
    call: &Call,
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
    *request.headers_mut() = call.headers.clone();
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
    /// A request for `/v2/<segments>`, each segment escaped.
    fn new(method: Method, segments: &[&str]) -> Self {
        let mut path = String::from("/v2");
        for seg in segments {
            path.push('/');
            path.extend(percent_encoding::utf8_percent_encode(seg, PATH_SEGMENT));
        }
        Outgoing { method, path, query: Vec::new(), body: None }
    }
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
    fn ids_cannot_escape_their_segment() {
        let enc: String = percent_encoding::utf8_percent_encode("../x/y?z", PATH_SEGMENT).collect();
        assert_eq!(enc, "..%2Fx%2Fy%3Fz");
    }
}
