//! Server assembly: the routes, the operational endpoints, and the serve loop.
//!
//! The connections themselves, and the limits set on them, are [`listener`]'s.
//!
//! Around every route, the edge layer ([`crate::layers::edge`]): oversized headers refused,
//! tokens marked sensitive, request ids checked, made and echoed, a tracing span, panics
//! caught, metrics and the access log. The routes: `/healthz`, `/readyz`, `/metrics`, the Nova
//! mounts, the Alliance dialect and Glance's own API (passed through, or without a Glance the
//! embedded store's).

mod conn;
pub mod listener;
pub mod reload;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use http::{header, HeaderValue, StatusCode};
use tokio::net::TcpListener;
use tower::Service as _;

use crate::app::{App, ImageApi};
use crate::layers::edge::EdgeLayer;
use crate::layers::metrics::{Metrics, RouteLabel};
use crate::passthrough::Upstream;
use crate::public_url::OriginPolicy;
use crate::tls::server::ServerTls;
use crate::{alliance, nova};

/// The embedded store keeps uploads in memory; this bounds one upload.
const EMBEDDED_BODY_LIMIT: usize = 512 << 20;

#[derive(Clone)]
struct Ops {
    metrics: Arc<Metrics>,
    lifecycle: Arc<Lifecycle>,
}

/// Where the process is in its life: once draining, `/readyz` fails so that load balancers
/// stop sending new requests while the gateway still serves the ones that arrive.
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
    at_connection_limit: AtomicBool,
}

impl Lifecycle {
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Whether all `server.max_connections` are taken and the gateway waits for one to close
    /// before it accepts another: an overloaded replica.
    pub fn at_connection_limit(&self) -> bool {
        self.at_connection_limit.load(Ordering::Relaxed)
    }

    fn set_at_connection_limit(&self, at_limit: bool) {
        self.at_connection_limit.store(at_limit, Ordering::Relaxed);
    }
}

/// The whole gateway as one service.
pub fn router(app: Arc<App>, lifecycle: Arc<Lifecycle>) -> Router {
    let metrics = app.metrics.clone();
    let max_target = app.config.server.max_request_target_bytes;
    let mut routes = Router::new();
    let mut nova_mounts = Vec::new();
    if let Some(nova) = &app.nova {
        let settings = &nova.settings;
        let mounts = settings.mounts.iter().map(|m| (m, false)).chain(settings.legacy_mounts.iter().map(|m| (m, true)));
        for (path, legacy) in mounts {
            routes = routes.nest_service(path, nova::mount(nova.clone(), path, legacy));
            nova_mounts.push(path.clone());
        }
        routes = routes.merge(Router::new().route("/", get(nova::root)).with_state(nova.clone()));
    }
    if let Some(alliance) = &app.alliance {
        for mount in &alliance.mounts {
            routes = routes.merge(alliance::router(alliance.clone(), mount));
        }
    }
    if let Some(v1) = &app.glance_v1 {
        for mount in &v1.settings.mounts {
            routes = routes.nest_service(mount, crate::glance_v1::mount(v1.clone(), mount));
        }
    }
    let image_mount = &app.config.glance.mount;
    routes = match &app.image_api {
        ImageApi::Embedded(store) => routes.nest_service(
            image_mount,
            store.clone().layer(tower_http::limit::RequestBodyLimitLayer::new(EMBEDDED_BODY_LIMIT)),
        ),
        ImageApi::Glance(glance) => {
            let state = Arc::new(GlanceMount {
                upstream: glance.clone(),
                mount: image_mount.clone(),
                origin: app.origin.clone(),
                label: RouteLabel { dialect: "glance", route: "glance.passthrough".into() },
            });
            let passthrough: Router = Router::new()
                .route(image_mount, any(glance_passthrough))
                .route(&format!("{image_mount}/{{*rest}}"), any(glance_passthrough))
                .with_state(state);
            routes.merge(passthrough)
        }
    };
    let ops = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Ops { metrics: metrics.clone(), lifecycle });
    routes.merge(ops).layer(EdgeLayer::new(
        metrics,
        nova_mounts,
        image_mount.clone(),
        max_target,
        app.config.identity_proxies(),
        app.config.tracing.clone(),
    ))
}

/// What the Glance passthrough needs, made once: handlers' state is cloned for every request.
struct GlanceMount {
    upstream: Upstream,
    mount: String,
    origin: Arc<OriginPolicy>,
    label: RouteLabel,
}

/// Glance's own API through the gateway: the mount is stripped, everything else streams as is.
async fn glance_passthrough(State(glance): State<Arc<GlanceMount>>, request: axum::extract::Request) -> Response {
    let path_and_query = request.uri().path_and_query().map_or("", |pq| pq.as_str());
    let target = glance.upstream.target(path_and_query.strip_prefix(glance.mount.as_str()).unwrap_or(path_and_query));
    let public_base = glance.origin.url(request.headers(), request.extensions(), &glance.mount);
    let response = match target {
        Ok(target) => glance.upstream.forward(request, target, &public_base).await,
        Err(e) => Err(e),
    };
    let mut response = response.unwrap_or_else(|e| crate::glance::passthrough_error(&e));
    response.extensions_mut().insert(glance.label.clone());
    response
}

/// Whether this replica can take traffic: its configuration is loaded (it is, or it would not
/// be serving), it is not draining, and it is not at `server.max_connections` (the probe's own
/// connection took the last place: no client could connect after it). Upstreams are
/// deliberately not asked: an outage of Glance is answered by each dialect's 503 and shown in
/// `image_gateway_upstream_up` and the breaker's metrics; failing readiness for it would take
/// every replica, and every passthrough route with it (Nova's `/servers` included), out of the
/// Service at once.
async fn readyz(State(ops): State<Ops>) -> Response {
    if ops.lifecycle.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: draining\n").into_response();
    }
    if ops.lifecycle.at_connection_limit() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: at server.max_connections\n").into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
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
/// the listener closes and requests in flight get `grace_period_secs` to finish. SIGHUP, and a
/// change of the files with `reload.watch`, reload the configuration and mapping files (see
/// [`reload`]). Over TLS with `tls` (made from `server.tls`).
pub async fn serve(app: Arc<App>, listener: TcpListener, tls: Option<ServerTls>, source: ConfigSource) {
    let metrics = app.metrics.clone();
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
    let current = Arc::new(ArcSwap::from_pointee(router(app.clone(), lifecycle.clone())));
    reload::start(source, app.clone(), lifecycle.clone(), current.clone());
    // Each request runs on the router current when it arrived, even if a reload swaps it meanwhile.
    let dispatch = tower::service_fn(move |req: axum::extract::Request| Router::clone(&current.load()).call(req));
    let server = listener::serve(listener, tls, dispatch, &app.config.server, metrics, lifecycle, drained);
    let deadline = async {
        // Starts counting only once the listener is closing.
        if closing_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = server => {},
        () = deadline => tracing::warn!("grace period over: dropping requests still in flight"),
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
