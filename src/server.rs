//! Server assembly: the middleware stack, the operational endpoints, and the serve loop.
//!
//! Layers, outermost first: sensitive headers marked (tokens never reach a log), request ids
//! checked and made, tracing span, request id echoed, panics caught, metrics and access log;
//! then the routes: `/healthz`, `/readyz`, `/metrics`, the Nova mounts and, without a Glance,
//! the embedded store's native API.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::{header, HeaderName, HeaderValue, Request, StatusCode};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

use crate::app::{App, Upstream, EMBEDDED_MOUNT};
use crate::layers::metrics::{Metrics, MetricsLayer};
use crate::layers::request_id::{self, MakeOpenStackId};
use crate::nova;

/// How long `/readyz` waits for Glance before calling the gateway not ready.
const READINESS_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The embedded store keeps uploads in memory; this bounds one upload.
const EMBEDDED_BODY_LIMIT: usize = 512 << 20;

#[derive(Clone)]
struct Ops {
    app: Arc<App>,
    metrics: Arc<Metrics>,
}

/// The whole gateway as one service.
pub fn router(app: Arc<App>, metrics: Arc<Metrics>) -> Router {
    let nova_cfg = &app.config.nova;
    let mut routes = Router::new()
        .nest_service(&nova_cfg.mount, nova_mount(&app, &nova_cfg.mount, false))
        .nest_service(&nova_cfg.legacy_mount, nova_mount(&app, &nova_cfg.legacy_mount, true));
    if let Upstream::Embedded(store) = &app.upstream {
        routes = routes.nest_service(
            EMBEDDED_MOUNT,
            store.clone().layer(tower_http::limit::RequestBodyLimitLayer::new(EMBEDDED_BODY_LIMIT)),
        );
    }
    let root = Router::new().route("/", get(nova::root)).with_state(app.nova.clone());
    let ops = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Ops { app, metrics: metrics.clone() });

    let sensitive: Arc<[HeaderName]> = Arc::new([
        header::AUTHORIZATION,
        header::COOKIE,
        HeaderName::from_static("x-auth-token"),
        HeaderName::from_static("x-subject-token"),
    ]);
    routes.merge(root).merge(ops).layer(
        ServiceBuilder::new()
            .layer(SetSensitiveRequestHeadersLayer::from_shared(sensitive))
            .map_request(request_id::drop_malformed)
            .layer(SetRequestIdLayer::new(request_id::HEADER, MakeOpenStackId))
            .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let id =
                    req.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok()).unwrap_or("");
                tracing::info_span!("request", method = %req.method(), path = req.uri().path(), request_id = id)
            }))
            .layer(PropagateRequestIdLayer::new(request_id::HEADER))
            .layer(CatchPanicLayer::custom(panic_response))
            .layer(MetricsLayer::new(metrics)),
    )
}

fn nova_mount(app: &Arc<App>, path: &str, legacy: bool) -> Router {
    nova::mount(app.nova.clone(), path, legacy)
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

/// Ready when the configuration is loaded (it is, or we would not be serving) and Glance answers.
async fn readyz(State(ops): State<Ops>) -> Response {
    match tokio::time::timeout(READINESS_PROBE_TIMEOUT, ops.app.glance.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: Glance did not answer in time\n").into_response(),
    }
}

async fn metrics_text(State(ops): State<Ops>) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))],
        ops.metrics.render(),
    )
        .into_response()
}

/// Serves until SIGTERM or Ctrl-C, then lets requests in flight finish.
pub async fn serve(app: Arc<App>, listener: TcpListener) -> std::io::Result<()> {
    let metrics = Arc::new(Metrics::new());
    axum::serve(listener, router(app, metrics)).with_graceful_shutdown(shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
