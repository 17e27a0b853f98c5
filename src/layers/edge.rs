//! What the gateway does to every request around its routes, as one layer.
//!
//! In order: an over-long request target (414) and oversized headers (431, or Nova's 400) are
//! refused before anything reads, logs or forwards them;
//! identity headers are dropped unless the peer is one of `identity_proxies` ([`crate::trust`]);
//! tokens are marked sensitive (no log prints them); the request gets its id
//! ([`request_id`]) and a tracing span; the routes run, a panic among them becoming a 500; the
//! response is counted and logged ([`metrics`]) and carries the request id back.
//!
//! One layer rather than a stack of tower-http's and axum's (sensitive headers, request ids,
//! trace, catch-panic, `from_fn`): stacked, each costs every request a cloned service, a boxed
//! future, a wrapped body or an extension, even with nothing to do; together they were some
//! 40% of the instructions of a `GET /healthz`.
//!
//! [`metrics`]: super::metrics

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt as _;
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use tower::{Layer, Service};
use tracing::Instrument as _;

use super::metrics::Metrics;
use super::{request_id, trace};
use crate::config::TracingConfig;
use crate::public_url::Cidr;
use crate::trust;

/// Request headers that carry secrets. Marked sensitive, their values print as `Sensitive`.
const SENSITIVE: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::COOKIE,
    HeaderName::from_static("x-auth-token"),
    HeaderName::from_static("x-subject-token"),
];

/// Makes [`Edge`] services.
#[derive(Clone, Debug)]
pub struct EdgeLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    metrics: Arc<Metrics>,
    /// Where refusals are Nova faults.
    nova_mounts: Vec<String>,
    /// Where refusals are in Glance's error shape.
    glance_mount: String,
    /// Longest request target (path and query) served.
    max_target: usize,
    /// Peers whose identity headers are passed on.
    identity_proxies: Vec<Cidr>,
    /// `[tracing]`: whether a client's trace is joined.
    tracing: TracingConfig,
}

impl EdgeLayer {
    pub fn new(
        metrics: Arc<Metrics>,
        nova_mounts: Vec<String>,
        glance_mount: String,
        max_target: usize,
        identity_proxies: Vec<Cidr>,
        tracing: TracingConfig,
    ) -> Self {
        let shared = Shared { metrics, nova_mounts, glance_mount, max_target, identity_proxies, tracing };
        EdgeLayer { shared: Arc::new(shared) }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge { inner, shared: self.shared.clone() }
    }
}

/// The routes, with the gateway's per-request work around them.
#[derive(Clone, Debug)]
pub struct Edge<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        if let Some(refused) = self.refuse(&req) {
            return Box::pin(std::future::ready(Ok(refused)));
        }
        if !trust::peer_in(&self.shared.identity_proxies, crate::public_url::peer(req.extensions())) {
            let dropped = trust::strip_identity_headers(req.headers_mut());
            if dropped > 0 {
                self.shared.metrics.identity_headers_dropped(dropped);
            }
        }
        mark_sensitive(req.headers_mut());
        let id = request_id::ensure(req.headers_mut());
        let tracing = &self.shared.tracing;
        // A new trace is sampled when its spans are exported.
        let (traced, parent) =
            trace::ensure(req.headers_mut(), tracing.accept_client_context, tracing.otlp_endpoint.is_some());
        // Filtered out (a log filter above `info`, no export), the span is inert and its fields never made.
        let span = tracing::info_span!(
            "request",
            // A request's path names images: the span's name is its method, as OpenTelemetry's
            // HTTP conventions have it when the route is not known yet.
            otel.name = %req.method(),
            otel.kind = "server",
            method = %req.method(),
            path = req.uri().path(),
            request_id = id.to_str().unwrap_or(""),
            trace_id = %traced.trace_id(),
            span_id = %traced.span_id(),
            parent_id = parent.map(tracing::field::display),
            sampled = traced.sampled(),
        );
        let exchange = self.shared.metrics.start(&req);
        let called = {
            let _entered = span.enter();
            // Where tower-http's TraceLayer logged, so that log filters keep working.
            tracing::debug!(target: "tower_http::trace::on_request", "started processing request");
            std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req)))
        };
        let respond = async move {
            let answered = match called {
                Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
                Err(panic) => Err(panic),
            };
            let mut response = match answered {
                Ok(Ok(response)) => response,
                Err(panic) => panic_response(panic),
            };
            let latency = exchange.finish(&response, &id, traced.trace_id());
            // An id the handler set (Glance's own, through the passthrough) stands.
            if let header::Entry::Vacant(entry) = response.headers_mut().entry(request_id::HEADER) {
                entry.insert(id);
            }
            trace_response(response.status(), latency);
            Ok(response)
        };
        Box::pin(respond.instrument(span))
    }
}

impl<S> Edge<S> {
    /// The gateway's own answer to a request it will not pass on: a request target longer than
    /// `max_target` (414; such a request could only fail upstream, and count against it), or
    /// oversized headers (Nova's 400 under the Nova mounts, as Nova's own server; 431 elsewhere).
    fn refuse(&self, req: &Request) -> Option<Response> {
        let path = req.uri().path();
        let under =
            |m: &String| path.strip_prefix(m.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        let nova = self.shared.nova_mounts.iter().any(under);
        let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        let (status, message) = if target > self.shared.max_target {
            let message = format!("Request-URI Too Long: {target} bytes, the limit is {}", self.shared.max_target);
            (StatusCode::URI_TOO_LONG, message)
        } else {
            let name = crate::body::oversized_header(req.headers())?;
            let status = if nova { StatusCode::BAD_REQUEST } else { StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE };
            (status, format!("Request header field too large: {name}"))
        };
        self.shared.metrics.record_refusal(status);
        if nova {
            return Some(crate::nova::fault::NovaError::Refused(status, message).into_response());
        }
        if under(&self.shared.glance_mount) {
            return Some(crate::glance::error_response(status, &message));
        }
        let title = status.canonical_reason().unwrap_or("");
        let body = serde_json::json!({"error": {"code": status.as_u16(), "title": title, "message": message}});
        Some((status, axum::Json(body)).into_response())
    }
}

/// Marks every value of the [`SENSITIVE`] headers; one pass over a request's few headers
/// rather than a lookup per name.
fn mark_sensitive(headers: &mut HeaderMap) {
    for (name, value) in headers.iter_mut() {
        if SENSITIVE.contains(name) {
            value.set_sensitive(true);
        }
    }
}

/// The events tower-http's TraceLayer wrote when the gateway used it, with its targets.
fn trace_response(status: StatusCode, latency: Duration) {
    let millis = latency.as_millis();
    tracing::debug!(
        target: "tower_http::trace::on_response",
        latency = %format_args!("{millis} ms"),
        status = status.as_u16(),
        "finished processing request"
    );
    if status.is_server_error() {
        tracing::error!(
            target: "tower_http::trace::on_failure",
            classification = %format_args!("Status code: {status}"),
            latency = %format_args!("{millis} ms"),
            "response failed"
        );
    }
}

/// A panic is a gateway bug; the client still gets a well-formed 500 (in Nova's shape, the
/// only dialect whose clients get 500s from us) and the gateway keeps serving.
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("request handler panicked");
    let body =
        serde_json::json!({"computeFault": {"code": 500, "message": "The gateway failed to handle the request."}});
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=UTF-8"))],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::metrics::RouteLabel;
    use tower::{service_fn, ServiceExt};

    fn edge(metrics: &Arc<Metrics>) -> impl Service<Request, Response = Response, Error = Infallible> + Clone {
        edge_trusting(metrics, Vec::new())
    }

    fn edge_trusting(
        metrics: &Arc<Metrics>,
        identity_proxies: Vec<Cidr>,
    ) -> impl Service<Request, Response = Response, Error = Infallible> + Clone {
        let mounts = vec!["/v2.1".to_owned(), "/v2".to_owned()];
        let layer =
            EdgeLayer::new(metrics.clone(), mounts, "/image".into(), 8192, identity_proxies, TracingConfig::default());
        layer.layer(service_fn(|req: Request| async move {
            match req.uri().path() {
                "/panic" => panic!("a bug"),
                // Says which identity headers reached the routes.
                "/identity" => {
                    let mut seen: Vec<_> = req.headers().keys().map(|k| k.as_str().to_owned()).collect();
                    seen.sort();
                    Ok(seen.join(",").into_response())
                }
                "/glance" => Ok::<_, Infallible>(([(request_id::HEADER, "req-from-glance")], "").into_response()),
                _ => {
                    // Says whether the token reached the routes marked sensitive.
                    let sensitive = req.headers().get("x-auth-token").is_some_and(HeaderValue::is_sensitive);
                    let mut res = sensitive.to_string().into_response();
                    res.extensions_mut().insert(RouteLabel { dialect: "nova", route: "nova.images.show".into() });
                    Ok(res)
                }
            }
        }))
    }

    async fn send(svc: impl Service<Request, Response = Response, Error = Infallible>, req: Request) -> Response {
        svc.oneshot(req).await.unwrap()
    }

    async fn text(res: Response) -> String {
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn requests_get_ids_sensitive_tokens_and_metrics() {
        let metrics = Arc::new(Metrics::new());
        let mine = "req-6f1c1bd8-4f0e-4b8a-9d7e-1d2b3c4d5e6f";
        let req = Request::get("/v2.1/images/x").header(request_id::HEADER, mine).header("x-auth-token", "t");
        let res = send(edge(&metrics), req.body(Default::default()).unwrap()).await;
        assert_eq!(res.headers()[request_id::HEADER], mine);
        assert_eq!(text(res).await, "true");
        let res = send(edge(&metrics), Request::get("/").body(Default::default()).unwrap()).await;
        assert!(request_id::is_valid(&res.headers()[request_id::HEADER]));
        let res = send(edge(&metrics), Request::get("/glance").body(Default::default()).unwrap()).await;
        assert_eq!(res.headers()[request_id::HEADER], "req-from-glance");
        let text = metrics.render();
        assert!(
            text.contains(r#"image_gateway_requests_total{dialect="nova",route="nova.images.show",status="200"} 2"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_panic_is_a_500_with_the_request_id() {
        let res = send(edge(&Arc::new(Metrics::new())), Request::get("/panic").body(Default::default()).unwrap()).await;
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(request_id::is_valid(&res.headers()[request_id::HEADER]));
        assert!(text(res).await.contains("computeFault"));
    }

    #[tokio::test]
    async fn over_long_targets_are_414s_before_anything_else() {
        let metrics = Arc::new(Metrics::new());
        let long = format!("/v2.1/images/{}", "x".repeat(8192));
        let query = format!("/images?name={}", "x".repeat(8192));
        let glance = format!("/image/v2/images/{}", "x".repeat(8192));
        for (target, code) in
            [(long.as_str(), "/computeFault/code"), (query.as_str(), "/error/code"), (glance.as_str(), "/code")]
        {
            let res = send(edge(&metrics), Request::get(target).body(Default::default()).unwrap()).await;
            assert_eq!(res.status(), StatusCode::URI_TOO_LONG, "{target}");
            let body: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
            let want = if code == "/code" { serde_json::json!("414 URI Too Long") } else { serde_json::json!(414) };
            assert_eq!(body.pointer(code), Some(&want), "{body}");
        }
        let just = format!("/v2.1/{}", "x".repeat(8192 - 6));
        let res = send(edge(&metrics), Request::get(just.as_str()).body(Default::default()).unwrap()).await;
        assert_eq!(res.status(), StatusCode::OK, "at the limit exactly");
        assert!(metrics.render().contains(r#"image_gateway_refused_total{status="414"} 3"#), "{}", metrics.render());
    }

    #[tokio::test]
    async fn oversized_headers_are_refused_before_anything_else() {
        let big = "x".repeat(crate::body::MAX_HEADER_VALUE + 1);
        for (path, status) in [("/v2.1/images", 400), ("/v2", 400), ("/v2x", 431), ("/image/v2/images", 431)] {
            let req = Request::get(path).header("x-big", &big).body(Default::default()).unwrap();
            let res = send(edge(&Arc::new(Metrics::new())), req).await;
            assert_eq!(res.status(), status, "{path}");
            assert!(!res.headers().contains_key(request_id::HEADER), "{path}");
            assert!(text(res).await.contains("Request header field too large: x-big"), "{path}");
        }
    }

    #[tokio::test]
    async fn identity_headers_reach_the_routes_only_from_identity_proxies() {
        let metrics = Arc::new(Metrics::new());
        let request = |peer: &str| {
            let mut req = Request::get("/identity")
                .header("x-roles", "admin")
                .header("x-project-id", "someone-else")
                .header("x-service-roles", "service")
                .header("x-auth-token", "t")
                .body(axum::body::Body::empty())
                .unwrap();
            let addr = std::net::SocketAddr::new(peer.parse().unwrap(), 40000);
            req.extensions_mut().insert(axum::extract::ConnectInfo(addr));
            req
        };
        let proxies = vec!["10.0.0.0/8".parse().unwrap()];
        let untrusted = text(send(edge_trusting(&metrics, proxies.clone()), request("192.0.2.7")).await).await;
        assert_eq!(untrusted, "traceparent,x-auth-token,x-openstack-request-id");
        assert!(metrics.render().contains("image_gateway_identity_headers_dropped_total 3"));
        for peer in ["10.1.2.3", "::ffff:10.1.2.3"] {
            let trusted = text(send(edge_trusting(&metrics, proxies.clone()), request(peer)).await).await;
            assert_eq!(
                trusted, "traceparent,x-auth-token,x-openstack-request-id,x-project-id,x-roles,x-service-roles",
                "{peer}"
            );
        }
    }
}
