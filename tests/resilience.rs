//! One client can never take the gateway away from the others: the release binary's answers to
//! an over-long id storm, a burst beyond the admission limit, a circuit-breaker trial that is
//! dropped, and a `copy_from` on the in-memory store. The precise times of deadlines and of the
//! breaker are tested on tokio's paused clock in `deadlines.rs`; here the binary is run as an
//! operator runs it, and what is waited for is polled, never slept for.
//!
//! The storm runs against the harness's Glance: the real Glance 33 when `scripts/test.sh`
//! provides it, else the embedded store.

mod common;

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::{IntoResponse, Response};
use common::process::Process;
use common::{client, send, Answer, GlanceFixtures, Harness};
use serde_json::json;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// How long anything polled for may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// Runs the binary in a scratch directory with `env` as its configuration.
/// The binary with `env`, trusting the test (on loopback) as `common::test_config` does: its
/// identity headers, and acting without a token in the namespaces `env` sets an identity for.
fn gateway(env: &[(&str, &str)]) -> (Process, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let callers: Vec<(String, String)> = env
        .iter()
        .filter_map(|(k, _)| k.strip_suffix("__IDENTITY"))
        .map(|ns| (format!("{ns}__TRUSTED_CALLERS"), r#"[{networks=["127.0.0.0/8"]}]"#.to_owned()))
        .collect();
    let mut all: Vec<(&str, &str)> = vec![
        ("IMAGE_GATEWAY_IDENTITY_PROXIES", r#"["127.0.0.0/8"]"#),
        ("IMAGE_GATEWAY_GLANCE__EMBEDDED_IDENTITY", "headers"),
    ];
    all.extend(env.iter().copied());
    all.extend(callers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    (Process::start(dir.path(), &[], &all), dir)
}

async fn get(url: String, headers: reqwest::header::HeaderMap) -> Answer {
    send(client().get(url).headers(headers).timeout(PATIENCE)).await
}

/// One series of the gateway's metrics.
async fn metric(base: &str, series: &str) -> String {
    common::metric(&get(format!("{base}/metrics"), Default::default()).await.text, series)
}

fn alliance_headers(ns: &str, env: &str) -> reqwest::header::HeaderMap {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("x-target-ns", ns.parse().unwrap());
    h.insert("x-environment-id", env.parse().unwrap());
    h
}

/// Ids that cannot be Glance's, over and over, from an anonymous client: the gateway answers
/// them itself (414 past 8 KiB of target, else the dialect's 404), so Glance is never made to
/// drop a connection, the circuit stays closed, readiness stays green, and the next client is
/// served as if nothing happened.
#[test]
fn an_over_long_id_storm_changes_nothing_for_the_next_client() {
    let h = Harness::get();
    let (gw, _dir) = gateway(&[
        ("IMAGE_GATEWAY_GLANCE__URL", &h.glance_url),
        ("IMAGE_GATEWAY_GLANCE__CIRCUIT_BREAKER_FAILURES", "2"),
        ("IMAGE_GATEWAY_ALLIANCE__NAMESPACES__STORM__IDENTITY", "trusted_headers"),
    ]);
    let base = gw.base.clone();
    gw.block_on(async {
        let fixtures = GlanceFixtures { h, http: client() };
        let image = fixtures.active(json!({"name": "after-the-storm"}), 16).await;
        let id = image["id"].as_str().unwrap().to_owned();
        storm(&base, "storm", &h.project).await;
        let shown = get(format!("{base}/v2.1/images/{id}"), h.member()).await;
        assert_eq!(shown.status, 200, "{}", shown.text);
        assert_eq!(shown.json()["image"]["name"], "after-the-storm");
        let listed = get(format!("{base}/v2.1/images/detail?name=after-the-storm"), h.member()).await;
        assert_eq!(listed.status, 200, "{}", listed.text);
        assert_eq!(listed.json()["images"][0]["id"], id.as_str());
        let ready = get(format!("{base}/readyz"), Default::default()).await;
        assert_eq!((ready.status, ready.text.as_str()), (200, "ready\n"));
        assert_eq!(metric(&base, r#"image_gateway_circuit_breaker_state{upstream="glance"}"#).await, "0");
        assert_eq!(metric(&base, r#"image_gateway_circuit_breaker_opened_total{upstream="glance"}"#).await, "0");
        assert_eq!(metric(&base, r#"image_gateway_upstream_up{upstream="glance"}"#).await, "1");
        assert_eq!(metric(&base, r#"image_gateway_refused_total{status="414"}"#).await, "20");
    });
}

/// Ten rounds of ids that cannot be Glance's: 414s past 8 KiB of target, the dialect's 404
/// below it (`ns` is an Alliance namespace of the gateway at `base`).
async fn storm(base: &str, ns: &str, project: &str) {
    let huge = "x".repeat(20_000);
    let long = "y".repeat(5_000);
    for _ in 0..10 {
        let a = get(format!("{base}/v2.1/images/{huge}"), Default::default()).await;
        assert_eq!((a.status, a.json()["computeFault"]["code"].as_u64()), (414, Some(414)), "{}", a.text);
        let a = get(format!("{base}/image/v2/images/{huge}"), Default::default()).await;
        assert_eq!(a.status, 414, "{}", a.text);
        for path in [format!("/v2.1/images/{long}"), format!("/v2.1/images/{long}/metadata"), "/v2.1/images/-1".into()]
        {
            let a = get(format!("{base}{path}"), Default::default()).await;
            assert_eq!(a.status, 404, "{path}: {}", a.text);
            assert_eq!(a.json()["itemNotFound"]["message"], "Image not found.", "{path}");
        }
        let deleted = send(client().delete(format!("{base}/v2.1/images/{long}"))).await;
        assert_eq!(deleted.status, 404, "{}", deleted.text);
        let a = get(format!("{base}/images/{long}"), alliance_headers(ns, project)).await;
        assert_eq!((a.status, a.json()["error"]["code"].as_u64()), (404, Some(404)), "{}", a.text);
    }
}

/// The storm never reaches Glance at all: the gateway answers every one of those requests itself.
#[test]
fn an_over_long_id_storm_never_reaches_glance() {
    let glance = FakeGlance::start(true);
    let (gw, _dir) = gateway(&[
        ("IMAGE_GATEWAY_GLANCE__URL", &glance.url),
        ("IMAGE_GATEWAY_ALLIANCE__NAMESPACES__STORM__IDENTITY", "trusted_headers"),
    ]);
    let base = gw.base.clone();
    gw.block_on(async {
        storm(&base, "storm", "0123456789abcdef0123456789abcdef").await;
        assert_eq!(glance.calls.load(Ordering::SeqCst), 0, "Glance was asked");
    });
}

/// What the fake Glance of the tests below does with image calls.
const SERVE: u8 = 0;
const FAIL: u8 = 1;
const HANG: u8 = 2;

/// An embedded Glance store on loopback behind a switch (`mode`), whose list calls also wait at
/// `gate` for a permit each, counted in `waiting` while they wait.
struct FakeGlance {
    url: String,
    mode: Arc<AtomicU8>,
    gate: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    /// Image calls received.
    calls: Arc<AtomicUsize>,
}

impl FakeGlance {
    fn start(gate_open: bool) -> FakeGlance {
        let store = image_gateway::glance::embedded::router(common::test_store());
        let mode = Arc::new(AtomicU8::new(SERVE));
        let gate = Arc::new(Semaphore::new(if gate_open { Semaphore::MAX_PERMITS } else { 0 }));
        let waiting = Arc::new(AtomicUsize::new(0));
        let calls = Arc::new(AtomicUsize::new(0));
        let (m, g, w, c) = (mode.clone(), gate.clone(), waiting.clone(), calls.clone());
        let router = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let (store, mode, gate, waiting) = (store.clone(), m.load(Ordering::SeqCst), g.clone(), w.clone());
            let calls = c.clone();
            async move {
                let path = request.uri().path();
                let image_call = path.starts_with("/v2/images");
                if image_call {
                    calls.fetch_add(1, Ordering::SeqCst);
                }
                match mode {
                    FAIL if image_call => return http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    HANG if image_call => return std::future::pending::<Response>().await,
                    _ => {}
                }
                if path == "/v2/images" && request.method() == http::Method::GET {
                    waiting.fetch_add(1, Ordering::SeqCst);
                    let permit = gate.acquire().await;
                    waiting.fetch_sub(1, Ordering::SeqCst);
                    permit.unwrap().forget();
                }
                store.oneshot(request).await.unwrap_or_else(|e| match e {})
            }
        });
        let url = Harness::get().block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
            format!("http://{addr}")
        });
        FakeGlance { url, mode, gate, waiting, calls }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    /// An image of `project` in the store.
    async fn image(&self, project: &str) -> String {
        let body = json!({"name": "held", "disk_format": "raw", "container_format": "bare"});
        let created = send(
            client()
                .post(format!("{}/v2/images", self.url))
                .header("x-identity-status", "Confirmed")
                .header("x-project-id", project)
                .header("x-roles", "member,reader")
                .json(&body),
        )
        .await;
        assert_eq!(created.status, 201, "{}", created.text);
        created.json()["id"].as_str().unwrap().to_owned()
    }
}

/// Polls `done` until it holds, failing after [`PATIENCE`].
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < PATIENCE, "still waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lists beyond `limits.max_heavy_in_flight` are answered at once, 503 with `Retry-After`, in
/// the client's dialect; a single image is still served, readiness stays green, and the held
/// lists complete once Glance answers.
#[test]
fn a_burst_beyond_the_admission_limit_is_answered_503_with_retry_after() {
    let h = Harness::get();
    let glance = FakeGlance::start(false);
    let (gw, _dir) = gateway(&[
        ("IMAGE_GATEWAY_GLANCE__URL", &glance.url),
        ("IMAGE_GATEWAY_LIMITS__MAX_HEAVY_IN_FLIGHT", "2"),
        ("IMAGE_GATEWAY_LIMITS__RETRY_AFTER_SECS", "3"),
        ("IMAGE_GATEWAY_ALLIANCE__NAMESPACES__BURST__IDENTITY", "trusted_headers"),
    ]);
    let base = gw.base.clone();
    gw.block_on(async {
        let id = glance.image(&h.project).await;
        let held: Vec<_> =
            (0..2).map(|_| tokio::spawn(get(format!("{base}/v2.1/images/detail"), h.member()))).collect();
        until("two lists held by Glance", || async { glance.waiting.load(Ordering::SeqCst) == 2 }).await;
        for _ in 0..5 {
            let refused = get(format!("{base}/v2.1/images/detail"), h.member()).await;
            assert_eq!(refused.status, 503, "{}", refused.text);
            assert_eq!(refused.json()["serviceUnavailable"]["code"], 503);
            assert_eq!(refused.header("retry-after"), Some("3"));
        }
        let refused = get(format!("{base}/images"), alliance_headers("burst", &h.project)).await;
        assert_eq!((refused.status, refused.header("retry-after")), (503, Some("3")), "{}", refused.text);
        assert_eq!(refused.json()["error"]["code"], 503);
        let shown = get(format!("{base}/v2.1/images/{id}"), h.member()).await;
        assert_eq!(shown.status, 200, "a single image is not held up: {}", shown.text);
        let ready = get(format!("{base}/readyz"), Default::default()).await;
        assert_eq!(ready.status, 200);
        assert_eq!(metric(&base, r#"image_gateway_heavy_requests_refused_total{dialect="nova"}"#).await, "5");
        assert_eq!(metric(&base, "image_gateway_heavy_requests_in_flight").await, "2");
        glance.gate.add_permits(Semaphore::MAX_PERMITS / 2);
        for list in held {
            let a = list.await.unwrap();
            assert_eq!(a.status, 200, "{}", a.text);
            assert_eq!(a.json()["images"][0]["id"], id.as_str());
        }
        assert_eq!(get(format!("{base}/v2.1/images/detail"), h.member()).await.status, 200);
        assert_eq!(metric(&base, "image_gateway_heavy_requests_in_flight").await, "0");
    });
}

/// The breaker's one trial call, lost before it records its result (here: cut by the whole-
/// request deadline while Glance hangs), does not keep the circuit open: once Glance answers,
/// the next call after the cooldown closes it.
#[test]
fn a_dropped_trial_does_not_keep_the_circuit_open() {
    let h = Harness::get();
    let glance = FakeGlance::start(true);
    let (gw, _dir) = gateway(&[
        ("IMAGE_GATEWAY_GLANCE__URL", &glance.url),
        ("IMAGE_GATEWAY_GLANCE__CIRCUIT_BREAKER_FAILURES", "1"),
        ("IMAGE_GATEWAY_GLANCE__CIRCUIT_BREAKER_COOLDOWN_SECS", "0.2"),
        ("IMAGE_GATEWAY_LIMITS__REQUEST_TIMEOUT_SECS", "1"),
    ]);
    let base = gw.base.clone();
    gw.block_on(async {
        let id = glance.image(&h.project).await;
        let show = || get(format!("{base}/v2.1/images/{id}"), h.member());
        glance.set(FAIL);
        assert_eq!(show().await.status, 502);
        assert_eq!(metric(&base, r#"image_gateway_circuit_breaker_state{upstream="glance"}"#).await, "1");
        glance.set(HANG);
        // 503s while the circuit cools down, then the trial, which Glance never answers.
        until("the trial, cut by the request deadline", || async { show().await.status == 504 }).await;
        glance.set(SERVE);
        until("the circuit to close", || async { show().await.status == 200 }).await;
        assert_eq!(metric(&base, r#"image_gateway_circuit_breaker_state{upstream="glance"}"#).await, "0");
        assert_eq!(metric(&base, r#"image_gateway_upstream_up{upstream="glance"}"#).await, "1");
    });
}

/// With no `glance.url`, `copy_from` is imported by the in-memory store: the image ends
/// `active` with the bytes served at the URL.
#[test]
fn copy_from_on_the_embedded_store_ends_active() {
    let blob: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let served = blob.clone();
    let source = Harness::get().block_on(async move {
        let router = axum::Router::new().route("/blob.raw", axum::routing::get(move || async move { served }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{addr}/blob.raw")
    });
    let (gw, _dir) = gateway(&[("IMAGE_GATEWAY_ALLIANCE__NAMESPACES__LOCAL__IDENTITY", "trusted_headers")]);
    let base = gw.base.clone();
    let env = "0f3c5a1e9b7d4c2a8e6f1b3d5c7a9e01";
    gw.block_on(async {
        let body =
            json!({"image": {"name": "copied", "disk_format": "raw", "container_format": "bare", "copy_from": source}});
        let created =
            send(client().post(format!("{base}/images")).headers(alliance_headers("local", env)).json(&body)).await;
        assert_eq!(created.status, 201, "{}", created.text);
        let id = created.json()["id"].as_str().unwrap().to_owned();
        let status = || async {
            let a = get(format!("{base}/images/{id}"), alliance_headers("local", env)).await;
            a.json()["status"].as_str().unwrap_or_default().to_owned()
        };
        until("the import to end", || async { status().await != "importing" }).await;
        assert_eq!(status().await, "active");
        let file = client()
            .get(format!("{base}/image/v2/images/{id}/file"))
            .header("x-identity-status", "Confirmed")
            .header("x-project-id", env)
            .header("x-roles", "member,reader")
            .send()
            .await
            .unwrap();
        assert_eq!(file.status(), 200);
        assert!(file.bytes().await.unwrap() == blob, "the image holds what copy_from named");
    });
    assert!(!gw.log().contains("panicked"), "{}", gw.log());
}
