//! Request metrics and the access log, from one vantage point.
//!
//! Both need the same facts (route, status, total and upstream time), so one place records
//! them: the edge layer ([`super::edge`]) starts an [`Exchange`] for each request and finishes
//! it with the response. Dialect handlers say which route they served by putting a
//! [`RouteLabel`] (and, when they called Glance, an [`UpstreamTime`]) into the response
//! extensions; labels are route ids, never raw paths or image ids, so series stay few.
//!
//! The server's connection metrics are here too ([`Metrics::connection_opened`]), for the
//! same registry.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, Request, Response};

use super::trace::TraceId;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// One upstream's health, as its circuit breaker keeps it.
#[derive(Clone, Debug)]
pub struct UpstreamMetrics {
    pub up: IntGauge,
    pub state: IntGauge,
    pub opened: IntCounter,
    pub refused: IntCounter,
}

/// The admission limit's series.
#[derive(Clone, Debug)]
pub struct HeavyMetrics {
    pub in_flight: IntGauge,
    /// By dialect.
    pub refused: IntCounterVec,
}

/// Which dialect and route served a response.
#[derive(Clone, Debug)]
pub struct RouteLabel {
    pub dialect: &'static str,
    pub route: Arc<str>,
}

/// Time the handler spent waiting on Glance.
#[derive(Clone, Copy, Debug)]
pub struct UpstreamTime(pub Duration);

/// What asked for a reload of the configuration and mapping files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadTrigger {
    /// SIGHUP.
    Signal,
    /// The watch of their directories saw them change (`reload.watch`).
    Change,
}

/// Why the gateway closed a client connection, when one of its server limits did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionClose {
    /// A request head did not arrive within `server.header_read_timeout_secs`.
    HeaderTimeout,
    /// A kept-alive connection waited `server.keepalive_timeout_secs` for a request.
    IdleTimeout,
    /// A request body sent nothing for `server.body_idle_timeout_secs`.
    BodyIdleTimeout,
    /// A head over `server.max_header_bytes` or `server.max_headers`: hyper's 431.
    HeadersTooLarge,
    /// Answered with its request body unread (a 413, say): closed after a lingering close.
    LingeringClose,
    /// The client read nothing of its answer for `server.send_timeout_secs`.
    SendTimeout,
    /// A TLS client did not finish its handshake within `server.header_read_timeout_secs`.
    HandshakeTimeout,
}

impl ConnectionClose {
    const ALL: [ConnectionClose; 7] = [
        ConnectionClose::HeaderTimeout,
        ConnectionClose::IdleTimeout,
        ConnectionClose::BodyIdleTimeout,
        ConnectionClose::HeadersTooLarge,
        ConnectionClose::LingeringClose,
        ConnectionClose::SendTimeout,
        ConnectionClose::HandshakeTimeout,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ConnectionClose::HeaderTimeout => "header_timeout",
            ConnectionClose::IdleTimeout => "idle_timeout",
            ConnectionClose::BodyIdleTimeout => "body_idle_timeout",
            ConnectionClose::HeadersTooLarge => "headers_too_large",
            ConnectionClose::LingeringClose => "lingering_close",
            ConnectionClose::SendTimeout => "send_timeout",
            ConnectionClose::HandshakeTimeout => "handshake_timeout",
        }
    }
}

/// The gateway's metric families, in a registry of their own (so tests do not share state).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream: HistogramVec,
    own: HistogramVec,
    in_flight: IntGauge,
    /// `success` then `failure`, made at start so that a first failure is an increase.
    reloads: [IntCounter; 2],
    /// One series per [`ReloadTrigger`], in its order, made at start.
    reload_triggers: [IntCounter; 2],
    upstream_up: IntGaugeVec,
    breaker_state: IntGaugeVec,
    breaker_opened: IntCounterVec,
    breaker_refused: IntCounterVec,
    heavy_in_flight: IntGauge,
    heavy_refused: IntCounterVec,
    refused: IntCounterVec,
    connections_open: IntGauge,
    /// One series per [`ConnectionClose`], in its order, made at start so each reads 0 until it acts.
    connections_closed: [IntCounter; 7],
    connection_limit_reached: IntCounter,
    accept_errors: IntCounter,
    identity_headers_dropped: IntCounter,
    tls_handshake_failures: IntCounter,
    /// `success` then `failure`, made at start so both read 0 until a reload.
    tls_certificate_reloads: [IntCounter; 2],
    /// By `cert_file`: no series without TLS, so that an expiry alert has nothing to fire on.
    tls_certificate_expiry: IntGaugeVec,
    /// Each (dialect, route, status)'s series, looked up once: `with_label_values` hashes and
    /// compares every label and allocates the status text on each call. Hashed with foldhash,
    /// five times faster than SipHash here: the keys are the gateway's own, not the client's.
    series: RwLock<HashMap<SeriesKey, Series, foldhash::fast::RandomState>>,
}

type SeriesKey = (&'static str, Arc<str>, u16);

/// The series one (dialect, route, status) records into.
#[derive(Debug)]
struct Series {
    requests: IntCounter,
    duration: Histogram,
    own: Histogram,
    /// Made on the first observation with Glance time: a route that never waits on Glance has
    /// no upstream series at all.
    upstream: OnceLock<Histogram>,
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
        let counters = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let gauges = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let reloads = counters(
            "image_gateway_config_reloads_total",
            "Reloads of the configuration and mapping files (SIGHUP or a change of the files), by result.",
            &["result"],
        );
        let reloads = ["success", "failure"].map(|result| reloads.with_label_values(&[result]));
        let reload_triggers = counters(
            "image_gateway_config_reload_triggers_total",
            "Reloads of the configuration attempted, by what asked: SIGHUP (signal) or a change of the files (change).",
            &["trigger"],
        );
        let reload_triggers = ["signal", "change"].map(|trigger| reload_triggers.with_label_values(&[trigger]));
        let upstream_up = gauges(
            "image_gateway_upstream_up",
            "1 when the upstream's last call succeeded and its circuit is closed, else 0.",
            &["upstream"],
        );
        let breaker_state = gauges(
            "image_gateway_circuit_breaker_state",
            "The upstream's circuit: 0 closed, 1 open (calls refused at once), 2 half-open (one trial call).",
            &["upstream"],
        );
        let breaker_opened = counters(
            "image_gateway_circuit_breaker_opened_total",
            "Times the upstream's circuit opened.",
            &["upstream"],
        );
        let breaker_refused = counters(
            "image_gateway_circuit_breaker_refused_total",
            "Calls answered 503 at once because the upstream's circuit was open.",
            &["upstream"],
        );
        let heavy_in_flight = IntGauge::new(
            "image_gateway_heavy_requests_in_flight",
            "Heavy requests (translated lists) being served, against limits.max_heavy_in_flight.",
        )
        .expect("valid gauge");
        registry.register(Box::new(heavy_in_flight.clone())).expect("unique metric");
        let heavy_refused = counters(
            "image_gateway_heavy_requests_refused_total",
            "Heavy requests answered 503 with Retry-After at once: limits.max_heavy_in_flight were in flight.",
            &["dialect"],
        );
        let refused = counters(
            "image_gateway_refused_total",
            "Requests the gateway refused before routing them: over-long targets (414), oversized headers (431, or Nova's 400).",
            &["status"],
        );
        let connections_open =
            IntGauge::new("image_gateway_connections_open", "Client connections open.").expect("valid gauge");
        registry.register(Box::new(connections_open.clone())).expect("unique metric");
        let closed = IntCounterVec::new(
            Opts::new(
                "image_gateway_connections_closed_total",
                "Client connections the gateway closed because a server limit acted, by limit.",
            ),
            &["reason"],
        )
        .expect("valid counter");
        registry.register(Box::new(closed.clone())).expect("unique metric");
        let connections_closed = ConnectionClose::ALL.map(|reason| closed.with_label_values(&[reason.label()]));
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid counter");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let connection_limit_reached = counter(
            "image_gateway_connection_limit_reached_total",
            "Times the gateway reached server.max_connections and stopped accepting.",
        );
        let accept_errors =
            counter("image_gateway_accept_errors_total", "Failed accepts of client connections (EMFILE, ...).");
        let identity_headers_dropped = counter(
            "image_gateway_identity_headers_dropped_total",
            "Identity headers (X-Roles, X-Project-Id, ...) dropped from requests of peers outside identity_proxies.",
        );
        let tls_handshake_failures = counter(
            "image_gateway_tls_handshake_failures_total",
            "TLS handshakes of client connections that failed (no or unverified client certificate, not TLS, ...).",
        );
        let reloads_tls = counters(
            "image_gateway_tls_certificate_reloads_total",
            "Reloads of the listener's certificate and key after their files changed, by result.",
            &["result"],
        );
        let tls_certificate_reloads = ["success", "failure"].map(|result| reloads_tls.with_label_values(&[result]));
        let tls_certificate_expiry = gauges(
            "image_gateway_tls_certificate_expiry_timestamp_seconds",
            "When the listener's certificate being served expires (its notAfter), in seconds since the epoch.",
            &["cert_file"],
        );
        Metrics {
            refused,
            registry,
            requests,
            duration,
            upstream,
            own,
            in_flight,
            reloads,
            reload_triggers,
            upstream_up,
            breaker_state,
            breaker_opened,
            breaker_refused,
            heavy_in_flight,
            heavy_refused,
            connections_open,
            connections_closed,
            connection_limit_reached,
            accept_errors,
            identity_headers_dropped,
            tls_handshake_failures,
            tls_certificate_reloads,
            tls_certificate_expiry,
            series: RwLock::default(),
        }
    }

    /// The series of one upstream (`glance`, `glance/<namespace>`).
    pub fn upstream(&self, name: &str) -> UpstreamMetrics {
        let up = self.upstream_up.with_label_values(&[name]);
        let state = self.breaker_state.with_label_values(&[name]);
        up.set(1);
        state.set(0);
        UpstreamMetrics {
            up,
            state,
            opened: self.breaker_opened.with_label_values(&[name]),
            refused: self.breaker_refused.with_label_values(&[name]),
        }
    }

    /// A request refused at the edge, with `status`.
    pub fn record_refusal(&self, status: http::StatusCode) {
        self.refused.with_label_values(&[status.as_str()]).inc();
    }

    /// The series of the admission limit.
    pub fn heavy(&self) -> HeavyMetrics {
        HeavyMetrics { in_flight: self.heavy_in_flight.clone(), refused: self.heavy_refused.clone() }
    }

    /// Counts a client connection open until the returned guard is dropped.
    pub fn connection_opened(self: &Arc<Self>) -> OpenConnection {
        self.connections_open.inc();
        OpenConnection(Arc::clone(self))
    }

    pub fn connection_closed(&self, reason: ConnectionClose) {
        self.connections_closed[reason as usize].inc();
    }

    pub fn connection_limit_reached(&self) {
        self.connection_limit_reached.inc();
    }

    pub fn accept_error(&self) {
        self.accept_errors.inc();
    }

    pub fn identity_headers_dropped(&self, count: usize) {
        self.identity_headers_dropped.inc_by(count as u64);
    }

    pub fn record_reload(&self, trigger: ReloadTrigger, ok: bool) {
        self.reload_triggers[trigger as usize].inc();
        self.reloads[usize::from(!ok)].inc();
    }

    pub fn tls_handshake_failed(&self) {
        self.tls_handshake_failures.inc();
    }

    pub fn tls_certificate_reloaded(&self, ok: bool) {
        self.tls_certificate_reloads[usize::from(!ok)].inc();
    }

    pub fn tls_certificate_expires(&self, cert_file: &str, not_after: i64) {
        self.tls_certificate_expiry.with_label_values(&[cert_file]).set(not_after);
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Starts recording one request: counted in flight (unless it is a probe or a scrape) until
    /// its [`Exchange`] is finished or dropped.
    pub fn start<B>(self: &Arc<Self>, req: &Request<B>) -> Exchange {
        // Probes and scrapes are not traffic: a scrape must not count itself in flight.
        let in_flight = !matches!(req.uri().path(), "/metrics" | "/healthz" | "/readyz");
        if in_flight {
            self.in_flight.inc();
        }
        Exchange {
            metrics: Arc::clone(self),
            started: Instant::now(),
            method: req.method().clone(),
            bytes_in: content_length(req.headers()),
            in_flight,
        }
    }

    fn observe(&self, label: &RouteLabel, status: u16, total: Duration, upstream: Option<Duration>) {
        let key = (label.dialect, Arc::clone(&label.route), status);
        let known = self.series.read().unwrap_or_else(PoisonError::into_inner);
        if let Some((key, series)) = known.get_key_value(&key) {
            return self.record(key, series, total, upstream);
        }
        drop(known);
        let mut known = self.series.write().unwrap_or_else(PoisonError::into_inner);
        let series = known.entry(key.clone()).or_insert_with(|| {
            let labels = [label.dialect, &label.route];
            Series {
                requests: self.requests.with_label_values(&[label.dialect, &label.route, &status.to_string()]),
                duration: self.duration.with_label_values(&labels),
                own: self.own.with_label_values(&labels),
                upstream: OnceLock::new(),
            }
        });
        self.record(&key, series, total, upstream);
    }

    fn record(&self, key: &SeriesKey, series: &Series, total: Duration, upstream: Option<Duration>) {
        series.requests.inc();
        series.duration.observe(total.as_secs_f64());
        let upstream = upstream.unwrap_or_default();
        if !upstream.is_zero() {
            let histogram = series.upstream.get_or_init(|| self.upstream.with_label_values(&[key.0, &key.1]));
            histogram.observe(upstream.as_secs_f64());
        }
        series.own.observe(total.saturating_sub(upstream).as_secs_f64());
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// One request on its way through: what its access line and metrics need, taken before the
/// handler consumes the request. Dropped unfinished (the client went away, the handler
/// panicked), it only leaves the in-flight count.
#[derive(Debug)]
pub struct Exchange {
    metrics: Arc<Metrics>,
    started: Instant,
    method: Method,
    bytes_in: Option<u64>,
    in_flight: bool,
}

impl Exchange {
    /// Records the response, if it carries a [`RouteLabel`], in the metrics and as a line at
    /// target `access_log`. Returns the time since the request arrived.
    pub fn finish<B: http_body::Body>(
        mut self,
        response: &Response<B>,
        request_id: &HeaderValue,
        trace_id: TraceId,
    ) -> Duration {
        self.leave();
        let total = self.started.elapsed();
        let Some(label) = response.extensions().get::<RouteLabel>() else { return total };
        let upstream = response.extensions().get::<UpstreamTime>().map(|u| u.0);
        let status = response.status().as_u16();
        // Known for every answer the gateway builds; absent for a streamed passthrough.
        let bytes_out = response.body().size_hint().exact().or_else(|| content_length(response.headers()));
        self.metrics.observe(label, status, total, upstream);
        tracing::info!(
            target: "access_log",
            dialect = label.dialect,
            route = &*label.route,
            method = %self.method,
            status,
            duration_ms = total.as_secs_f64() * 1e3,
            upstream_ms = upstream.unwrap_or_default().as_secs_f64() * 1e3,
            bytes_in = self.bytes_in,
            bytes_out,
            request_id = request_id.to_str().unwrap_or(""),
            trace_id = %trace_id,
        );
        total
    }

    fn leave(&mut self) {
        if std::mem::take(&mut self.in_flight) {
            self.metrics.in_flight.dec();
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.leave();
    }
}

/// A client connection counted open; dropping it counts it closed.
#[derive(Debug)]
pub struct OpenConnection(Arc<Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections_open.dec();
    }
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::trace::TraceParent;

    #[test]
    fn labelled_responses_are_counted_by_route_and_status() {
        let metrics = Arc::new(Metrics::new());
        let id = HeaderValue::from_static("req-6f1c1bd8-4f0e-4b8a-9d7e-1d2b3c4d5e6f");
        let trace = TraceParent::fresh(false).trace_id();
        let exchange = metrics.start(&Request::get("/labelled").body(()).unwrap());
        assert_eq!(metrics.in_flight.get(), 1);
        let mut res = Response::new(String::from("{}"));
        res.extensions_mut().insert(RouteLabel { dialect: "nova", route: "nova.images.show".into() });
        res.extensions_mut().insert(UpstreamTime(Duration::from_millis(3)));
        *res.status_mut() = http::StatusCode::NOT_FOUND;
        exchange.finish(&res, &id, trace);
        // The second time through, the series are the ones resolved the first time.
        metrics.start(&Request::get("/labelled").body(()).unwrap()).finish(&res, &id, trace);
        let probe = metrics.start(&Request::get("/healthz").body(()).unwrap());
        assert_eq!(metrics.in_flight.get(), 0, "probes are not in flight");
        probe.finish(&Response::new(String::new()), &id, trace);
        let text = metrics.render();
        assert!(
            text.contains(r#"image_gateway_requests_total{dialect="nova",route="nova.images.show",status="404"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"image_gateway_upstream_duration_seconds_count{dialect="nova",route="nova.images.show"} 2"#
            ),
            "{text}"
        );
        assert!(!text.contains("healthz"), "unlabelled requests are not series: {text}");
        assert!(text.contains("image_gateway_requests_in_flight 0"), "{text}");
    }

    #[test]
    fn routes_without_glance_time_have_no_upstream_series() {
        let metrics = Arc::new(Metrics::new());
        let mut res = Response::new(String::new());
        res.extensions_mut().insert(RouteLabel { dialect: "glance", route: "glance.passthrough".into() });
        let trace = TraceParent::fresh(false).trace_id();
        let exchange = metrics.start(&Request::get("/image/v2/images").body(()).unwrap());
        exchange.finish(&res, &HeaderValue::from_static(""), trace);
        let text = metrics.render();
        assert!(
            text.contains(r#"image_gateway_own_duration_seconds_count{dialect="glance",route="glance.passthrough"} 1"#)
        );
        assert!(!text.contains("image_gateway_upstream_duration_seconds_count"), "{text}");
    }

    #[test]
    fn connections_are_counted_open_and_closed_by_reason() {
        let metrics = Arc::new(Metrics::new());
        let text = metrics.render();
        for reason in ConnectionClose::ALL {
            let series = format!("image_gateway_connections_closed_total{{reason=\"{}\"}} 0", reason.label());
            assert!(text.contains(&series), "{series} missing before any close: {text}");
        }
        let open = metrics.connection_opened();
        assert_eq!(metrics.connections_open.get(), 1);
        metrics.connection_closed(ConnectionClose::IdleTimeout);
        drop(open);
        assert_eq!(metrics.connections_open.get(), 0);
        assert!(metrics.render().contains(r#"image_gateway_connections_closed_total{reason="idle_timeout"} 1"#));
    }

    #[test]
    fn an_exchange_dropped_unfinished_leaves_the_in_flight_count() {
        let metrics = Arc::new(Metrics::new());
        let exchange = metrics.start(&Request::get("/v2.1/images").body(()).unwrap());
        assert_eq!(metrics.in_flight.get(), 1);
        drop(exchange);
        assert_eq!(metrics.in_flight.get(), 0);
    }
}
