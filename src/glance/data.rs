//! Image bytes through the client: downloads and uploads that stream, and image members.
//!
//! A transfer is as long as the image is large, so it has no total deadline: Glance gets
//! `glance.timeout_secs` to answer the request's head, and then as long as bytes keep moving,
//! with that same time allowed between two of them in either direction. A client body that
//! fails (the client went, stalled, or sent other than it declared) is the client's failure,
//! never counted against Glance.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::Value;
use tokio::time::Instant;
use tower::ServiceExt as _;
use tracing::Instrument as _;

use super::{checked, error_message, settle, Call, GlanceClient, Outgoing, Transport, UpstreamError};
use crate::glance::breaker::Outcome;
use crate::idle::{IdleError, IdleTimeout};

/// An error answer's body is read up to this much, for its message.
const MAX_ERROR_BODY: usize = 64 << 10;

/// What a client's upload body may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client's body on its way into Glance, and the watch on its progress.
type Upload = (futures_util::stream::BoxStream<'static, Result<Bytes, BoxError>>, Arc<Progress>);

/// The bytes of an image on their way out of Glance.
#[derive(Debug)]
pub struct ImageData {
    /// The length Glance declared.
    pub length: Option<u64>,
    /// The bytes, failing once none came for `glance.timeout_secs`.
    pub body: Body,
}

/// When a transfer last moved, and whether the client's side of it failed.
#[derive(Debug)]
struct Progress {
    start: Instant,
    /// Nanoseconds after `start` of the last movement.
    last: AtomicU64,
    client_failed: AtomicBool,
}

impl Progress {
    fn new() -> Arc<Self> {
        Arc::new(Progress { start: Instant::now(), last: AtomicU64::new(0), client_failed: AtomicBool::new(false) })
    }

    fn touch(&self) {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(nanos, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    async fn stalled(&self, idle: Duration) {
        loop {
            let due = self.start + Duration::from_nanos(self.last.load(Ordering::Relaxed)) + idle;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

/// The client's body, each chunk marking progress; its failure is remembered as the client's.
fn watched<S, E>(body: S, progress: Arc<Progress>) -> impl Stream<Item = Result<Bytes, BoxError>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<BoxError>,
{
    body.map(move |chunk| {
        progress.touch();
        chunk.map_err(|e| {
            progress.client_failed.store(true, Ordering::Relaxed);
            e.into()
        })
    })
}

/// Why the client's body failed, from the error the transfer ended with.
fn client_failure(error: &(dyn std::error::Error + 'static)) -> UpstreamError {
    match IdleError::stalled_in(error) {
        Some(idle) => UpstreamError::ClientStalled(idle),
        None => {
            // The innermost cause is the client body's own error.
            let root = std::iter::successors(Some(error), |e| e.source()).last().unwrap_or(error);
            UpstreamError::ClientBody(root.to_string())
        }
    }
}

impl GlanceClient {
    /// `GET /v2/images/{id}/file`, streamed; `None` when the image has no data (Glance's 204).
    pub async fn download(&self, call: &Call, id: &str) -> Result<Option<ImageData>, UpstreamError> {
        let out = Outgoing::image(Method::GET, id, Some("file"))?;
        let (status, headers, body) = self.open(call, &out, None).await?;
        if !status.is_success() {
            return Err(error_answer(status, body).await);
        }
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let length = headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
        Ok(Some(ImageData { length, body: Body::new(IdleTimeout::new(body, self.timeout)) }))
    }

    /// `PUT /v2/images/{id}/file` with `data` streamed as it comes. `data` failing fails the
    /// upload as the client's error ([`UpstreamError::ClientBody`], [`UpstreamError::ClientStalled`]).
    pub async fn upload<S, E>(&self, call: &Call, id: &str, data: S) -> Result<(), UpstreamError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let out = Outgoing::image(Method::PUT, id, Some("file"))?;
        let progress = Progress::new();
        let stream = watched(data, progress.clone());
        let result = self.open(call, &out, Some((stream.boxed(), progress.clone()))).await;
        match result {
            Ok((status, _, body)) if status.is_success() => {
                // Nothing to read but the end of an empty answer.
                let _ = body.collect().await;
                Ok(())
            }
            Ok((status, _, body)) => Err(error_answer(status, body).await),
            Err(e) => Err(e),
        }
    }

    /// Sends `out` and answers with the head of Glance's answer and its body unread, through the
    /// breaker: an answer's status decides it. With `upload`, the request body streams from it
    /// and the deadline is on each wait for progress, not on the whole request.
    async fn open(
        &self,
        call: &Call,
        out: &Outgoing,
        upload: Option<Upload>,
    ) -> Result<(StatusCode, HeaderMap, Body), UpstreamError> {
        let (permit, span, headers) = self.admit(call, out)?;
        let started = Instant::now();
        let (body, progress) = match upload {
            Some((stream, progress)) => (Some(stream), Some(progress)),
            None => (None, None),
        };
        let exchange = async {
            match &self.transport {
                Transport::Http { client, uploads, base } => {
                    let client = if body.is_some() { uploads } else { client };
                    let mut url = base.clone();
                    url.set_path(&format!("{}{}", base.path().trim_end_matches('/'), out.path));
                    let mut request = client.request(out.method.clone(), url).headers(headers).header(
                        http::header::ACCEPT,
                        if body.is_some() { "application/json" } else { "application/octet-stream" },
                    );
                    if let Some(stream) = body {
                        request = request
                            .header(http::header::CONTENT_TYPE, "application/octet-stream")
                            .body(reqwest::Body::wrap_stream(stream));
                    }
                    let response = request.send().await.map_err(|e| {
                        if progress.as_ref().is_some_and(|p| p.client_failed.load(Ordering::Relaxed)) {
                            return client_failure(&e);
                        }
                        let kind = if e.is_connect() || e.is_request() {
                            UpstreamError::Unreachable
                        } else {
                            UpstreamError::BadAnswer
                        };
                        UpstreamError::from_transport(self.breaker.name(), &e, kind)
                    })?;
                    let (status, headers) = (response.status(), response.headers().clone());
                    Ok((status, headers, Body::from_stream(response.bytes_stream())))
                }
                Transport::Embedded(router) => {
                    let body = body.map_or_else(Body::empty, Body::from_stream);
                    let mut request = Request::builder()
                        .method(out.method.clone())
                        .uri(&out.path)
                        .body(body)
                        .map_err(|e| UpstreamError::BadAnswer(e.to_string()))?;
                    *request.headers_mut() = headers;
                    if progress.is_some() {
                        request
                            .headers_mut()
                            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
                    }
                    let response = router.clone().oneshot(request).await.map_err(|e| match e {})?;
                    let (parts, body) = response.into_parts();
                    Ok((parts.status, parts.headers, body))
                }
            }
        };
        let sent = match &progress {
            // An upload: Glance has `timeout` after each chunk (and after the last) to move on.
            Some(progress) => {
                progress.touch();
                tokio::select! {
                    sent = exchange.instrument(span.clone()) => sent,
                    () = progress.stalled(self.timeout) => Err(UpstreamError::Timeout(self.timeout)),
                }
            }
            None => {
                let exchange = tokio::time::timeout(self.timeout, exchange).instrument(span.clone());
                exchange.await.unwrap_or(Err(UpstreamError::Timeout(self.timeout)))
            }
        };
        let elapsed = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        call.0.upstream_nanos.fetch_add(elapsed, Ordering::Relaxed);
        // The client's failure wins over what Glance made of it (an embedded store says 413).
        let sent = match (&progress, sent) {
            (Some(p), Ok(_)) if p.client_failed.load(Ordering::Relaxed) => {
                Err(UpstreamError::ClientBody("the request body failed".into()))
            }
            (_, sent) => sent,
        };
        match sent {
            Ok((status, headers, body)) => {
                span.record("status", status.as_u16());
                let outcome = if status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED {
                    Outcome::Failed
                } else {
                    Outcome::Healthy
                };
                permit.record(outcome);
                Ok((status, headers, body))
            }
            Err(e) => settle(permit, Err(e)),
        }
    }

    /// The members of an image (`GET /v2/images/{id}/members`).
    pub async fn list_members(&self, call: &Call, id: &str) -> Result<Vec<Value>, UpstreamError> {
        let out = Outgoing::image(Method::GET, id, Some("members"))?;
        self.json(call, out, |v| match v.get("members").and_then(Value::as_array) {
            Some(members) => Ok(members.clone()),
            None => Err(UpstreamError::BadAnswer("members answer without a `members` list".into())),
        })
        .await
    }

    /// One member of an image; an error 404 when it is none.
    pub async fn get_member(&self, call: &Call, id: &str, member: &str) -> Result<Value, UpstreamError> {
        self.json(call, member_path(Method::GET, id, member)?, Ok).await
    }

    /// Makes `member` a member of an image (`POST /v2/images/{id}/members`).
    pub async fn add_member(&self, call: &Call, id: &str, member: &str) -> Result<Value, UpstreamError> {
        let mut out = Outgoing::image(Method::POST, id, Some("members"))?;
        out.body = Some(("application/json", serde_json::json!({ "member": member }).to_string().into()));
        self.json(call, out, Ok).await
    }

    pub async fn remove_member(&self, call: &Call, id: &str, member: &str) -> Result<(), UpstreamError> {
        let (status, body, permit) = self.send(call, &member_path(Method::DELETE, id, member)?).await?;
        settle(permit, checked(status, body)).map(drop)
    }
}

/// Glance's error answer as an error, its message read from the first bytes of its body.
async fn error_answer(status: StatusCode, body: Body) -> UpstreamError {
    let bytes = http_body_util::Limited::new(body, MAX_ERROR_BODY).collect().await;
    let message = bytes.map(|b| error_message(&b.to_bytes())).unwrap_or_default();
    UpstreamError::Status { status, message }
}

/// `/v2/images/{id}/members/{member}`, refused as Glance would refuse an id naming no image.
fn member_path(method: Method, id: &str, member: &str) -> Result<Outgoing, UpstreamError> {
    Outgoing::image(method.clone(), id, None)?;
    Ok(Outgoing::new(method, &["images", id, "members", member]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::metrics::Metrics;
    use axum::routing::{get, put};
    use futures_util::stream;

    const ID: &str = "0b7e3a5c-1f2d-4e6a-8b9c-0d1e2f3a4b5c";

    /// A client of `router` with `glance.timeout_secs` = 30.
    fn client(router: axum::Router) -> GlanceClient {
        let mut config = crate::config::Config::default();
        config.glance.timeout_secs = 30.0;
        GlanceClient::embedded("glance", &config, router, &Metrics::new())
    }

    /// `count` chunks of one byte, `every` apart.
    fn slow(count: usize, every: Duration) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        stream::iter(0..count).then(move |_| async move {
            tokio::time::sleep(every).await;
            Ok(Bytes::from_static(b"x"))
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_download_that_keeps_moving_outlasts_the_call_deadline() {
        let router = axum::Router::new()
            .route("/v2/images/{id}/file", get(|| async { Body::from_stream(slow(5, Duration::from_secs(20))) }));
        let started = Instant::now();
        let data = client(router).download(&Call::default(), ID).await.unwrap().unwrap();
        let bytes = data.body.collect().await.unwrap().to_bytes();
        assert_eq!((bytes.len(), started.elapsed()), (5, Duration::from_secs(100)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_download_that_stops_moving_fails_after_the_idle_time() {
        let router = axum::Router::new().route(
            "/v2/images/{id}/file",
            get(|| async { Body::from_stream(slow(1, Duration::ZERO).chain(stream::pending())) }),
        );
        let started = Instant::now();
        let data = client(router).download(&Call::default(), ID).await.unwrap().unwrap();
        let error = data.body.collect().await.unwrap_err();
        assert_eq!(IdleError::stalled_in(&error), Some(Duration::from_secs(30)));
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn an_upload_that_keeps_moving_outlasts_the_call_deadline_and_a_stalled_glance_does_not() {
        // Glance reads the whole body, then answers.
        let reads = axum::Router::new().route(
            "/v2/images/{id}/file",
            put(|body: Body| async move {
                let n = body.collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
                assert_eq!(n, 5);
                StatusCode::NO_CONTENT
            }),
        );
        let started = Instant::now();
        client(reads).upload(&Call::default(), ID, slow(5, Duration::from_secs(20))).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(100));
        // Glance takes the body, then never answers: the upload fails `timeout` after the last byte.
        let hangs = axum::Router::new().route(
            "/v2/images/{id}/file",
            put(|body: Body| async move {
                let _ = body.collect().await;
                std::future::pending::<StatusCode>().await
            }),
        );
        let started = Instant::now();
        let e = client(hangs).upload(&Call::default(), ID, slow(2, Duration::from_secs(20))).await.unwrap_err();
        assert!(matches!(e, UpstreamError::Timeout(_)), "{e}");
        assert_eq!(started.elapsed(), Duration::from_secs(70));
    }

    #[tokio::test]
    async fn a_failing_client_body_is_the_clients_failure() {
        let router = axum::Router::new().route(
            "/v2/images/{id}/file",
            put(|body: Body| async move {
                match body.collect().await {
                    Ok(_) => StatusCode::NO_CONTENT,
                    Err(_) => StatusCode::PAYLOAD_TOO_LARGE,
                }
            }),
        );
        let glance = client(router);
        let data = stream::iter([Ok(Bytes::from_static(b"abc")), Err(std::io::Error::other("client went"))]);
        let e = glance.upload(&Call::default(), ID, data).await.unwrap_err();
        assert!(matches!(e, UpstreamError::ClientBody(_)), "{e}");
        assert_eq!(e.outcome(), Outcome::Healthy, "not counted against Glance");
    }
}
