//! Request metrics and the access log, from one vantage point.
//!
//! Both need the same facts (route, status, total and upstream time), so one layer records
//! them. Dialect handlers say which route they served by putting a [`RouteLabel`] (and, when
//! they called Glance, an [`UpstreamTime`]) into the response extensions; labels are route ids,
//! never raw paths or image ids, so series stay few.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use tower::{Layer, Service};

/// Which dialect and route served a response.
#[derive(Clone, Debug)]
pub struct RouteLabel {
    pub dialect: &'static str,
    pub route: Arc<str>,
}

/// Time the handler spent waiting on Glance.
#[derive(Clone, Copy, Debug)]
pub struct UpstreamTime(pub Duration);

/// The gateway's metric families, in a registry of their own (so tests do not share state).
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream: HistogramVec,
    own: HistogramVec,
    in_flight: IntGauge,
    reloads: IntCounterVec,
}

const BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let labels = &["dialect", "route"];
        let histogram = |name: &str, help: &str| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()), labels)
                .expect("valid histogram");
            registry.register(Box::new(h.clone())).expect("unique metric");
            h
        };
        let duration =
            histogram("image_gateway_request_duration_seconds", "Time from request to response headers, per route.");
        let upstream = histogram("image_gateway_upstream_duration_seconds", "Time spent waiting on Glance, per route.");
        let own = histogram(
            "image_gateway_own_duration_seconds",
            "Request time not spent waiting on Glance: the gateway's own cost.",
        );
        let requests = IntCounterVec::new(
            Opts::new("image_gateway_requests_total", "Requests answered, by dialect, route and status."),
            &["dialect", "route", "status"],
        )
        .expect("valid counter");
        registry.register(Box::new(requests.clone())).expect("unique metric");
        let in_flight =
            IntGauge::new("image_gateway_requests_in_flight", "Requests being served.").expect("valid gauge");
        registry.register(Box::new(in_flight.clone())).expect("unique metric");
        let reloads = IntCounterVec::new(
            Opts::new("image_gateway_config_reloads_total", "Configuration reloads (SIGHUP), by result."),
            &["result"],
        )
        .expect("valid counter");
        registry.register(Box::new(reloads.clone())).expect("unique metric");
        Metrics { registry, requests, duration, upstream, own, in_flight, reloads }
    }

    pub fn record_reload(&self, ok: bool) {
        self.reloads.with_label_values(&[if ok { "success" } else { "failure" }]).inc();
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn observe(&self, label: &RouteLabel, status: u16, total: Duration, upstream: Option<Duration>) {
        let labels = [label.dialect, &label.route];
        self.requests.with_label_values(&[label.dialect, &label.route, &status.to_string()]).inc();
        self.duration.with_label_values(&labels).observe(total.as_secs_f64());
        let upstream = upstream.unwrap_or_default();
        if !upstream.is_zero() {
            self.upstream.with_label_values(&labels).observe(upstream.as_secs_f64());
        }
        self.own.with_label_values(&labels).observe(total.saturating_sub(upstream).as_secs_f64());
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

// === impl MetricsLayer ===

/// Records every response that carries a [`RouteLabel`] and logs it at target `access_log`.
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
}

impl MetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        MetricsLayer { metrics }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner, metrics: self.metrics.clone() }
    }
}

// === impl MetricsService ===

#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> Service<Request<B>> for MetricsService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    RB: http_body::Body,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RB>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let started = Instant::now();
        let method = req.method().clone();
        let bytes_in = content_length(req.headers());
        let request_id =
            req.headers().get(crate::layers::request_id::HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let metrics = self.metrics.clone();
        // Probes and scrapes are not traffic: a scrape must not count itself in flight.
        let probe = matches!(req.uri().path(), "/metrics" | "/healthz" | "/readyz");
        let guard = (!probe).then(|| InFlight::new(&metrics.in_flight));
        let future = self.inner.call(req);
        Box::pin(async move {
            let response = future.await?;
            drop(guard);
            if let Some(label) = response.extensions().get::<RouteLabel>().cloned() {
                let total = started.elapsed();
                let upstream = response.extensions().get::<UpstreamTime>().map(|u| u.0);
                let status = response.status().as_u16();
                // Known for every answer the gateway builds; absent for a streamed passthrough.
                let bytes_out = response.body().size_hint().exact().or_else(|| content_length(response.headers()));
                metrics.observe(&label, status, total, upstream);
                tracing::info!(
                    target: "access_log",
                    dialect = label.dialect,
                    route = &*label.route,
                    method = %method,
                    status,
                    duration_ms = total.as_secs_f64() * 1e3,
                    upstream_ms = upstream.unwrap_or_default().as_secs_f64() * 1e3,
                    bytes_in,
                    bytes_out,
                    request_id = request_id.as_deref().unwrap_or(""),
                );
            }
            Ok(response)
        })
    }
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Counts a request in flight until dropped, also when the client goes away mid-request.
struct InFlight(IntGauge);

impl InFlight {
    fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{service_fn, ServiceExt};

    #[tokio::test]
    async fn labelled_responses_are_counted_by_route_and_status() {
        let metrics = Arc::new(Metrics::new());
        let svc = MetricsLayer::new(metrics.clone()).layer(service_fn(|req: Request<()>| async move {
            let mut res = Response::new(String::from("{}"));
            if req.uri().path() == "/labelled" {
                res.extensions_mut().insert(RouteLabel { dialect: "nova", route: "nova.images.show".into() });
                res.extensions_mut().insert(UpstreamTime(Duration::from_millis(3)));
                *res.status_mut() = http::StatusCode::NOT_FOUND;
            }
            Ok::<_, Infallible>(res)
        }));
        svc.clone().oneshot(Request::get("/labelled").body(()).unwrap()).await.unwrap();
        svc.oneshot(Request::get("/healthz").body(()).unwrap()).await.unwrap();
        let text = metrics.render();
        assert!(
            text.contains(r#"image_gateway_requests_total{dialect="nova",route="nova.images.show",status="404"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"image_gateway_upstream_duration_seconds_count{dialect="nova",route="nova.images.show"} 1"#
            ),
            "{text}"
        );
        assert!(!text.contains("healthz"), "unlabelled requests are not series: {text}");
        assert!(text.contains("image_gateway_requests_in_flight 0"), "{text}");
    }
}
