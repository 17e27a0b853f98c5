//! Deadlines, the circuit breaker and the admission limit, on tokio's paused clock.
//!
//! The gateway runs in-process (its router called with `oneshot`, no sockets) in front of the
//! embedded Glance store behind a switch that makes Glance hang, fail or answer. With no I/O
//! outside the runtime, the clock moves only when every task waits, straight to the next
//! deadline: a test of a 30 s timeout takes no time and cannot be flaky, and the times it
//! asserts are exact.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{Request, StatusCode};
use image_gateway::app::App;
use image_gateway::config::Config;
use image_gateway::layers::metrics::Metrics;
use serde_json::{json, Value};
use tokio::time::Instant;
use tower::ServiceExt;

const PROJECT: &str = "0123456789abcdef0123456789abcdef";
const NS: &str = "local";

/// What the fake Glance does with image calls (its schema and versions are always served).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// The embedded store answers.
    Serve,
    /// Nothing comes back, ever.
    Hang,
    /// 500.
    Fail,
}

/// A gateway in front of an embedded store behind a switch.
struct World {
    gateway: axum::Router,
    app: Arc<App>,
    metrics: Arc<Metrics>,
    mode: Arc<Mutex<Mode>>,
    /// Image calls that reached the fake Glance.
    calls: Arc<AtomicUsize>,
}

impl World {
    fn new(tweak: impl FnOnce(&mut Config)) -> World {
        let store = image_gateway::glance::embedded::router(common::test_store());
        let mode = Arc::new(Mutex::new(Mode::Serve));
        let calls = Arc::new(AtomicUsize::new(0));
        let (switch, seen) = (mode.clone(), calls.clone());
        let glance = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let (store, mode, seen) = (store.clone(), *switch.lock().unwrap(), seen.clone());
            async move {
                let image_call = request.uri().path().starts_with("/v2/images");
                if image_call {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                match mode {
                    Mode::Hang if image_call => std::future::pending::<Response>().await,
                    Mode::Fail if image_call => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    _ => store.oneshot(request).await.unwrap_or_else(|e| match e {}),
                }
            }
        });
        let mut config = common::test_config();
        config.alliance.namespaces.insert(NS.into(), common::trusted_headers_namespace());
        tweak(&mut config);
        config.validate("test").unwrap();
        let metrics = Arc::new(Metrics::new());
        let app = Arc::new(App::load(config, metrics.clone(), Some(glance)).unwrap());
        let gateway = image_gateway::server::router(app.clone(), Default::default());
        World { gateway, app, metrics, mode, calls }
    }

    /// This gateway reloaded (as on SIGHUP) with its configuration changed by `tweak`, in front
    /// of the same fake Glance.
    fn reloaded(&self, tweak: impl FnOnce(&mut Config)) -> World {
        let mut config = self.app.config.clone();
        tweak(&mut config);
        let app = Arc::new(self.app.reload(config).unwrap());
        let gateway = image_gateway::server::router(app.clone(), Default::default());
        World { gateway, app, metrics: self.metrics.clone(), mode: self.mode.clone(), calls: self.calls.clone() }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let started = Instant::now();
        let response = self.respond(method, path, body).await;
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer { status, retry_after, json, took: started.elapsed() }
    }

    /// The gateway's response to a member of the test project calling from loopback, its body
    /// not yet read (a list answer streams as it is read).
    async fn respond(&self, method: &str, path: &str, body: Option<Value>) -> Response {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("x-identity-status", "Confirmed")
            .header("x-project-id", PROJECT)
            .header("x-roles", "member,reader")
            .header("x-target-ns", NS)
            .header("x-environment-id", PROJECT);
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        self.gateway.clone().oneshot(from_loopback(request.body(body).unwrap())).await.unwrap()
    }

    /// A gateway admitting one list at a time, in front of three images listed one per page:
    /// a list answer is still being written until its last page is read.
    async fn admitting_one_list() -> World {
        let world = World::new(|c| {
            c.limits.max_heavy_in_flight = 1;
            c.glance.page_size = 1;
        });
        for _ in 0..3 {
            world.image().await;
        }
        world
    }

    /// An image made through the store, answered by any mode's schema call.
    async fn image(&self) -> String {
        let mode = *self.mode.lock().unwrap();
        self.set(Mode::Serve);
        let created = self
            .send(
                "POST",
                "/images",
                Some(json!({"image": {"name": "x", "disk_format": "raw", "container_format": "bare"}})),
            )
            .await;
        assert_eq!(created.status, 201, "{:?}", created.json);
        self.set(mode);
        created.json["id"].as_str().unwrap().to_owned()
    }

    fn metric(&self, series: &str) -> String {
        common::metric(&self.metrics.render(), series)
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    json: Value,
    took: Duration,
}

impl Answer {
    /// A Nova fault with this status (`{"<name>": {"code": status, ...}}`).
    fn nova_fault(&self, status: u16, name: &str) {
        assert_eq!(self.status, status, "{:?}", self.json);
        assert_eq!(self.json[name]["code"], status, "{:?}", self.json);
    }

    /// An Alliance error with this status (`{"error": {"code": status, ...}}`).
    fn alliance_error(&self, status: u16) {
        assert_eq!(self.status, status, "{:?}", self.json);
        assert_eq!(self.json["error"]["code"], status, "{:?}", self.json);
    }
}

const OPEN: &str = r#"image_gateway_circuit_breaker_state{upstream="glance"}"#;

#[tokio::test(start_paused = true)]
async fn a_glance_that_never_answers_is_a_504_at_glance_timeout_secs_in_each_dialect() {
    let world = World::new(|c| c.glance.timeout_secs = 7.0);
    let id = world.image().await;
    world.set(Mode::Hang);
    let want = Duration::from_secs(7);
    let before = world.calls();
    let show = world.send("GET", &format!("/v2.1/images/{id}"), None).await;
    show.nova_fault(504, "computeFault");
    assert_eq!(world.calls(), before + 1, "a read that timed out is not tried again");
    let detail = world.send("GET", "/v2.1/images/detail", None).await;
    detail.nova_fault(504, "computeFault");
    let alliance_show = world.send("GET", &format!("/images/{id}"), None).await;
    alliance_show.alliance_error(504);
    let alliance_list = world.send("GET", "/images", None).await;
    alliance_list.alliance_error(504);
    for answer in [&show, &detail, &alliance_show, &alliance_list] {
        assert_eq!(answer.took, want, "{answer:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_request_deadline_bounds_a_slow_glance_too() {
    let world = World::new(|c| c.limits.request_timeout_secs = 2.5);
    let id = world.image().await;
    world.set(Mode::Hang);
    let nova = world.send("GET", &format!("/v2.1/images/{id}"), None).await;
    nova.nova_fault(504, "computeFault");
    let alliance = world.send("GET", &format!("/images/{id}"), None).await;
    alliance.alliance_error(504);
    assert_eq!((nova.took, alliance.took), (Duration::from_millis(2500), Duration::from_millis(2500)));
}

/// After consecutive failures the breaker answers at once (503, Retry-After), without calling
/// Glance, until a trial call after the cooldown finds Glance answering again.
#[tokio::test(start_paused = true)]
async fn the_circuit_breaker_opens_and_closes_again() {
    let world = World::new(|c| {
        c.glance.circuit_breaker_failures = 3;
        c.glance.circuit_breaker_cooldown_secs = 5.0;
    });
    let id = world.image().await;
    world.set(Mode::Fail);
    for _ in 0..3 {
        world.send("GET", &format!("/v2.1/images/{id}"), None).await.nova_fault(502, "computeFault");
    }
    assert_eq!(world.metric(OPEN), "1");
    let before = world.calls();
    let refused = world.send("GET", &format!("/v2.1/images/{id}"), None).await;
    refused.nova_fault(503, "serviceUnavailable");
    assert_eq!((refused.retry_after.as_deref(), refused.took), (Some("5"), Duration::ZERO));
    let refused = world.send("GET", "/images", None).await;
    refused.alliance_error(503);
    assert_eq!(refused.retry_after.as_deref(), Some("5"));
    assert_eq!(world.calls(), before, "an open circuit sends nothing to Glance");
    world.set(Mode::Serve);
    tokio::time::sleep(Duration::from_millis(4900)).await;
    world.send("GET", &format!("/v2.1/images/{id}"), None).await.nova_fault(503, "serviceUnavailable");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(world.send("GET", &format!("/v2.1/images/{id}"), None).await.status, 200, "the trial call closes it");
    assert_eq!(world.send("GET", "/v2.1/images/detail", None).await.status, 200);
    assert_eq!(world.metric(OPEN), "0");
    assert_eq!(world.metric(r#"image_gateway_circuit_breaker_opened_total{upstream="glance"}"#), "1");
}

/// A reload (SIGHUP) keeps what the breaker knows: an open circuit stays open for its cooldown,
/// rather than letting every replica's reload send a burst to a Glance that is down. A breaker
/// whose settings change starts afresh.
#[tokio::test(start_paused = true)]
async fn a_reload_keeps_an_open_circuit_open() {
    let world = World::new(|c| {
        c.glance.circuit_breaker_failures = 2;
        c.glance.circuit_breaker_cooldown_secs = 5.0;
    });
    let id = world.image().await;
    world.set(Mode::Fail);
    for _ in 0..2 {
        world.send("GET", &format!("/v2.1/images/{id}"), None).await.nova_fault(502, "computeFault");
    }
    let reloaded = world.reloaded(|c| c.nova.max_limit = 500);
    let before = world.calls();
    let refused = reloaded.send("GET", &format!("/v2.1/images/{id}"), None).await;
    refused.nova_fault(503, "serviceUnavailable");
    assert_eq!(refused.retry_after.as_deref(), Some("5"));
    reloaded.send("GET", "/images", None).await.alliance_error(503);
    assert_eq!(world.calls(), before, "the reloaded gateway's circuit is still open");
    let afresh = reloaded.reloaded(|c| c.glance.circuit_breaker_cooldown_secs = 7.0);
    afresh.send("GET", &format!("/v2.1/images/{id}"), None).await.nova_fault(502, "computeFault");
    assert_eq!(world.calls(), before + 1, "a new breaker tries Glance");
}

/// A reload keeps the admission limit's count: lists in flight under the old configuration
/// still hold their places, so a reload never lets twice the limit in.
#[tokio::test(start_paused = true)]
async fn a_reload_keeps_the_lists_in_flight_counted() {
    let world = World::admitting_one_list().await;
    let held = world.respond("GET", "/v2.1/images/detail", None).await;
    assert_eq!(held.status(), 200);
    let reloaded = world.reloaded(|c| c.nova.max_limit = 500);
    reloaded.send("GET", "/v2.1/images/detail", None).await.nova_fault(503, "serviceUnavailable");
    drop(held);
    assert_eq!(reloaded.send("GET", "/v2.1/images/detail", None).await.status, 200);
}

/// Only Glance's own failures count against it: however many requests Glance refuses (404 for
/// images that do not exist, in every dialect), the circuit stays closed for everyone.
#[tokio::test(start_paused = true)]
async fn glance_refusing_requests_never_opens_the_circuit() {
    let world = World::new(|c| c.glance.circuit_breaker_failures = 2);
    let id = world.image().await;
    for _ in 0..10 {
        let missing = uuid::Uuid::new_v4();
        world.send("GET", &format!("/v2.1/images/{missing}"), None).await.nova_fault(404, "itemNotFound");
        world.send("DELETE", &format!("/v2.1/images/{missing}"), None).await.nova_fault(404, "itemNotFound");
        world.send("GET", &format!("/images/{missing}"), None).await.alliance_error(404);
        let bad_filter = world.send("GET", "/v2.1/images/detail?changes-since=yesterday", None).await;
        bad_filter.nova_fault(400, "badRequest");
    }
    assert_eq!(world.metric(OPEN), "0");
    assert_eq!(world.metric(r#"image_gateway_upstream_up{upstream="glance"}"#), "1");
    assert_eq!(world.send("GET", &format!("/v2.1/images/{id}"), None).await.status, 200);
    // Two failures of Glance's own, though, and it opens.
    world.set(Mode::Fail);
    for _ in 0..2 {
        world.send("GET", &format!("/v2.1/images/{id}"), None).await.nova_fault(502, "computeFault");
    }
    assert_eq!(world.metric(OPEN), "1");
}

/// A filter that escaping makes longer than `server.max_request_target_bytes` is refused by the
/// gateway (414), not sent: a Glance front that drops an over-long request line must not count
/// it against Glance.
#[tokio::test(start_paused = true)]
async fn a_filter_too_long_once_escaped_is_a_414_and_never_sent() {
    let world = World::new(|_| {});
    world.image().await;
    let before = world.calls();
    // 2,800 bytes as sent, 8,400 once Glance's query is form-encoded (`,` becomes `%2C`).
    let commas = ",".repeat(2800);
    world.send("GET", &format!("/v2.1/images/detail?name={commas}"), None).await.nova_fault(414, "computeFault");
    world.send("GET", &format!("/images?name={commas}"), None).await.alliance_error(414);
    assert_eq!(world.calls(), before, "Glance was never asked");
    assert_eq!(world.metric(OPEN), "0");
    // Within the limit once escaped, it is sent.
    let fewer = ",".repeat(2000);
    assert_eq!(world.send("GET", &format!("/v2.1/images/detail?name={fewer}"), None).await.status, 200);
}

/// The trial call lost before it records its result (here: the whole-request deadline, as a
/// client hanging up or a probe giving up would) does not keep the circuit open.
#[tokio::test(start_paused = true)]
async fn a_trial_that_is_dropped_does_not_keep_the_circuit_open() {
    let world = World::new(|c| {
        c.glance.circuit_breaker_failures = 1;
        c.glance.circuit_breaker_cooldown_secs = 5.0;
        c.glance.timeout_secs = 60.0;
        c.limits.request_timeout_secs = 10.0;
    });
    let id = world.image().await;
    world.set(Mode::Fail);
    world.send("GET", &format!("/v2.1/images/{id}"), None).await.nova_fault(502, "computeFault");
    tokio::time::sleep(Duration::from_secs(5)).await;
    world.set(Mode::Hang);
    let trial = world.send("GET", &format!("/v2.1/images/{id}"), None).await;
    trial.nova_fault(504, "computeFault");
    assert_eq!(trial.took, Duration::from_secs(10), "cut by the request deadline, not Glance's timeout");
    // A client that hangs up on the next trial: its future is dropped mid-call.
    let hung_up = tokio::time::timeout(Duration::from_secs(1), world.send("GET", "/v2.1/images", None)).await;
    assert!(hung_up.is_err());
    world.set(Mode::Serve);
    let after = world.send("GET", &format!("/v2.1/images/{id}"), None).await;
    assert_eq!(after.status, 200, "the next call is a trial, and closes the circuit: {:?}", after.json);
    assert_eq!(world.metric(OPEN), "0");
}

/// Lists beyond `limits.max_heavy_in_flight` are answered at once with 503 and Retry-After, in
/// the client's dialect, and counted; others are not held up, and places come back.
#[tokio::test(start_paused = true)]
async fn lists_beyond_the_admission_limit_are_503s_with_retry_after_at_once() {
    let world = Arc::new(World::new(|c| {
        c.limits.max_heavy_in_flight = 2;
        c.limits.retry_after_secs = 2.0;
    }));
    let id = world.image().await;
    world.set(Mode::Hang);
    let held: Vec<_> = (0..2)
        .map(|_| {
            let world = world.clone();
            tokio::spawn(async move { world.send("GET", "/v2.1/images/detail", None).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(world.metric("image_gateway_heavy_requests_in_flight"), "2");
    let nova = world.send("GET", "/v2.1/images/detail", None).await;
    nova.nova_fault(503, "serviceUnavailable");
    assert_eq!((nova.retry_after.as_deref(), nova.took), (Some("2"), Duration::ZERO));
    let alliance = world.send("GET", "/images", None).await;
    alliance.alliance_error(503);
    assert_eq!((alliance.retry_after.as_deref(), alliance.took), (Some("2"), Duration::ZERO));
    assert_eq!(world.metric(r#"image_gateway_heavy_requests_refused_total{dialect="nova"}"#), "1");
    assert_eq!(world.metric(r#"image_gateway_heavy_requests_refused_total{dialect="alliance"}"#), "1");
    // A single-image call is not heavy: the limit does not hold it up.
    world.set(Mode::Serve);
    assert_eq!(world.send("GET", &format!("/v2.1/images/{id}"), None).await.status, 200);
    // The held lists end at Glance's timeout; their places come back.
    for list in held {
        list.await.unwrap().nova_fault(504, "computeFault");
    }
    assert_eq!(world.metric("image_gateway_heavy_requests_in_flight"), "0");
    assert_eq!(world.send("GET", "/v2.1/images/detail", None).await.status, 200);
}

/// `request` as the server hands it over from a loopback peer: the test is a trusted caller
/// and identity proxy (`common::test_config`).
fn from_loopback(mut request: Request<Body>) -> Request<Body> {
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
    request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
    request
}

/// A streamed list keeps its admission ticket until its last byte: a client that reads slowly
/// holds a place, and gives it back when it goes away.
#[tokio::test(start_paused = true)]
async fn a_streamed_list_holds_its_place_until_sent() {
    let world = World::admitting_one_list().await;
    let response = world.respond("GET", "/v2.1/images/detail", None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(world.metric("image_gateway_heavy_requests_in_flight"), "1", "still being written");
    world.send("GET", "/v2.1/images/detail", None).await.nova_fault(503, "serviceUnavailable");
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let listed: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(listed["images"].as_array().map(Vec::len), Some(3), "three pages of one: {listed}");
    assert_eq!(world.metric("image_gateway_heavy_requests_in_flight"), "0");
}
