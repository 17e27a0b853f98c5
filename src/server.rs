//! Server assembly: the middleware stack, the operational endpoints, and the serve loop.
//!
//! Layers, outermost first: sensitive headers marked (tokens never reach a log), request ids
//! checked and made, tracing span, request id echoed, panics caught, metrics and access log;
//! then the routes: `/healthz`, `/readyz`, `/metrics`, the Nova mounts and, without a Glance,
//! the embedded store's native API.

use std::future::IntoFuture;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use http::{header, HeaderName, HeaderValue, Request, StatusCode};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

use crate::app::{App, ImageApi};
use crate::config::Config;
use crate::glance::UpstreamError;
use crate::layers::metrics::{Metrics, MetricsLayer, RouteLabel};
use crate::layers::request_id::{self, MakeOpenStackId};
use crate::passthrough::Upstream;
use crate::{alliance, nova, public_url};

/// How long `/readyz` waits for Glance before calling the gateway not ready.
const READINESS_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The embedded store keeps uploads in memory; this bounds one upload.
const EMBEDDED_BODY_LIMIT: usize = 512 << 20;

#[derive(Clone)]
struct Ops {
    app: Arc<App>,
    metrics: Arc<Metrics>,
    lifecycle: Arc<Lifecycle>,
}

/// Where the process is in its life: once draining, `/readyz` fails so that load balancers
/// stop sending new requests while the gateway still serves the ones that arrive.
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
}

impl Lifecycle {
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// The whole gateway as one service.
pub fn router(app: Arc<App>, metrics: Arc<Metrics>, lifecycle: Arc<Lifecycle>) -> Router {
    let nova_cfg = &app.config.nova;
    let policy = Arc::new(app.config.origin_policy());
    let nova_mounts = Arc::new([nova_cfg.mount.clone(), nova_cfg.legacy_mount.clone()]);
    let mut routes = Router::new()
        .nest_service(&nova_cfg.mount, nova_mount(&app, &nova_cfg.mount, false))
        .nest_service(&nova_cfg.legacy_mount, nova_mount(&app, &nova_cfg.legacy_mount, true));
    let image_mount = &app.config.glance.mount;
    routes = match &app.image_api {
        ImageApi::Embedded(store) => routes.nest_service(
            image_mount,
            store.clone().layer(tower_http::limit::RequestBodyLimitLayer::new(EMBEDDED_BODY_LIMIT)),
        ),
        ImageApi::Glance(glance) => {
            let passthrough: Router = Router::new()
                .route(image_mount, any(glance_passthrough))
                .route(&format!("{image_mount}/{{*rest}}"), any(glance_passthrough))
                .with_state((glance.clone(), image_mount.clone()));
            routes.merge(passthrough)
        }
    };
    let root = Router::new().route("/", get(nova::root)).with_state(app.nova.clone());
    let alliance_mount = &app.config.alliance.mount;
    let alliance = Router::new()
        .route(&format!("{alliance_mount}/images"), any(alliance::handle))
        .route(&format!("{alliance_mount}/images/"), any(alliance::handle))
        .route(&format!("{alliance_mount}/images/{{*rest}}"), any(alliance::handle))
        .with_state(app.alliance.clone());
    let ops = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Ops { app, metrics: metrics.clone(), lifecycle });

    let sensitive: Arc<[HeaderName]> = Arc::new([
        header::AUTHORIZATION,
        header::COOKIE,
        HeaderName::from_static("x-auth-token"),
        HeaderName::from_static("x-subject-token"),
    ]);
    routes.merge(root).merge(alliance).merge(ops).layer(
        ServiceBuilder::new()
            .layer(axum::middleware::from_fn_with_state(nova_mounts, refuse_oversized_headers))
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
            .layer(MetricsLayer::new(metrics))
            .layer(axum::middleware::map_request_with_state(policy, public_url::resolve)),
    )
}

/// Glance's own API through the gateway: the mount is stripped, everything else streams as is.
async fn glance_passthrough(
    State((glance, mount)): State<(Upstream, String)>,
    request: axum::extract::Request,
) -> Response {
    let path_and_query = request.uri().path_and_query().map_or("", |pq| pq.as_str());
    let upstream_path = path_and_query.strip_prefix(mount.as_str()).unwrap_or(path_and_query).to_owned();
    let upstream_path = if upstream_path.is_empty() || upstream_path.starts_with('?') {
        format!("/{upstream_path}")
    } else {
        upstream_path
    };
    let public_base = format!("{}{mount}", public_url::of(request.extensions()));
    let mut response = glance.forward(request, &upstream_path, &public_base).await.unwrap_or_else(|e| {
        let status = match e {
            UpstreamError::Unreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        };
        let title = status.canonical_reason().unwrap_or("");
        let body = serde_json::json!({"code": format!("{} {title}", status.as_u16()), "title": title, "message": e.to_string()});
        (status, axum::Json(body)).into_response()
    });
    response.extensions_mut().insert(RouteLabel { dialect: "glance", route: "glance.passthrough".into() });
    response
}

fn nova_mount(app: &Arc<App>, path: &str, legacy: bool) -> Router {
    nova::mount(app.nova.clone(), path, legacy)
}

/// Refuses a request whose headers are too large before any layer reads, logs or forwards
/// them: Nova's 400 fault under the Nova mounts (as Nova's own server), a 431 elsewhere.
async fn refuse_oversized_headers(
    State(nova_mounts): State<Arc<[String; 2]>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(name) = crate::body::oversized_header(request.headers()) else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    let message = format!("Request header field too large: {name}");
    if nova_mounts.iter().any(|m| path == m || path.starts_with(&format!("{m}/"))) {
        let body = serde_json::json!({"badRequest": {"code": 400, "message": message}});
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    let status = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    let body = serde_json::json!({"error": {"code": 431, "title": status.canonical_reason(), "message": message}});
    (status, axum::Json(body)).into_response()
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
    if ops.lifecycle.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: draining\n").into_response();
    }
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

/// Where the configuration came from, so that a reload reads it again the same way.
#[derive(Clone, Debug)]
pub struct ConfigSource {
    pub path: PathBuf,
    /// Named on the command line (a missing file is then an error).
    pub explicit: bool,
}

/// Serves until SIGTERM or Ctrl-C, then drains: `/readyz` fails at once, requests are still
/// served for `drain_delay_secs` (so Kubernetes or a load balancer stops routing here), then
/// the listener closes and requests in flight get `grace_period_secs` to finish. SIGHUP
/// reloads the configuration and mapping files (see [`reload_on_sighup`]).
pub async fn serve(app: Arc<App>, listener: TcpListener, source: ConfigSource) -> std::io::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let lifecycle = Arc::new(Lifecycle::default());
    let drain = Duration::from_secs_f64(app.config.shutdown.drain_delay_secs);
    let grace = Duration::from_secs_f64(app.config.shutdown.grace_period_secs);
    let (closing_tx, closing_rx) = tokio::sync::oneshot::channel::<()>();
    let drained = {
        let lifecycle = lifecycle.clone();
        async move {
            shutdown_signal().await;
            lifecycle.start_draining();
            tracing::info!(drain_delay_secs = drain.as_secs_f64(), "draining: readiness fails, still serving");
            tokio::time::sleep(drain).await;
            tracing::info!(
                grace_period_secs = grace.as_secs_f64(),
                "closing the listener; finishing requests in flight"
            );
            let _ = closing_tx.send(());
        }
    };
    let current = Arc::new(RwLock::new(router(app.clone(), metrics.clone(), lifecycle.clone())));
    let reload = Reload { source, listen: app.config.listen, store: app.embedded_store(), current: current.clone() };
    tokio::spawn(reload_on_sighup(reload, metrics, lifecycle));
    // Each request runs on the router current when it arrived, even if a reload swaps it meanwhile.
    let dispatch = tower::service_fn(move |req: axum::extract::Request| {
        let router = current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        router.oneshot(req)
    });
    let service =
        Router::new().fallback_service(dispatch).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, service).with_graceful_shutdown(drained).into_future();
    let deadline = async {
        // Starts counting only once the listener is closing.
        if closing_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result,
        () = deadline => {
            tracing::warn!("grace period over: dropping requests still in flight");
            Ok(())
        }
    }
}

/// What a reload needs from the running gateway.
struct Reload {
    source: ConfigSource,
    listen: std::net::SocketAddr,
    /// The in-memory store, kept across reloads.
    store: Option<Router>,
    current: Arc<RwLock<Router>>,
}

/// On each SIGHUP: read the configuration and every mapping file again, build a new gateway,
/// and swap it in; a set that does not load is logged with its reason, counted, and the
/// running set keeps serving. (The listen address cannot change without a restart.)
async fn reload_on_sighup(reload: Reload, metrics: Arc<Metrics>, lifecycle: Arc<Lifecycle>) {
    let Reload { source, listen, store, current } = reload;
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: reloading is off");
        return;
    };
    while hangups.recv().await.is_some() {
        let loaded = Config::load(&source.path, source.explicit)
            .map_err(|e| e.to_string())
            .and_then(|config| App::load_keeping(config, store.clone()).map_err(|e| e.to_string()));
        match loaded {
            Ok(app) => {
                if app.config.listen != listen {
                    tracing::warn!(listen = %app.config.listen, "a new listen address takes a restart; still on {listen}");
                }
                let next = router(Arc::new(app), metrics.clone(), lifecycle.clone());
                *current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = next;
                metrics.record_reload(true);
                tracing::info!(config = %source.path.display(), "configuration reloaded");
            }
            Err(reason) => {
                metrics.record_reload(false);
                tracing::error!(config = %source.path.display(), %reason, "reload rejected: still serving the previous configuration");
            }
        }
    }
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
}
