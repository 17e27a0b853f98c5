//! W3C trace context across the gateway: a client's `traceparent` reaches every upstream (Glance,
//! Keystone, the passthrough) with the same trace id and the gateway's own span as parent, its
//! `tracestate` passed on; a malformed or missing one starts a new trace; and the access log and
//! the failure logs carry the trace id.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use common::{client, send, Harness};
use image_gateway::config::{Config, Credentials, IdentityMode, NamespaceConfig, Secret};
use serde_json::{json, Value};

const PROJECT: &str = "0123456789abcdef0123456789abcdef";
const USER_TOKEN: &str = "user-of-";
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const TRACESTATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

/// One request an upstream got: which, and the trace context it carried.
#[derive(Clone, Debug)]
struct Seen {
    call: String,
    traceparent: Option<String>,
    tracestate: Option<String>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

async fn issue() -> impl IntoResponse {
    let expires = time::OffsetDateTime::now_utc() + time::Duration::minutes(10);
    let expires = expires.format(&time::format_description::well_known::Rfc3339).unwrap();
    (
        StatusCode::CREATED,
        [("x-subject-token", "tok-1")],
        Json(json!({"token": {"expires_at": expires, "project": {"id": PROJECT}}})),
    )
}

async fn validate(headers: HeaderMap) -> impl IntoResponse {
    let subject = headers.get("x-subject-token").and_then(|v| v.to_str().ok()).unwrap_or_default();
    match subject.strip_prefix(USER_TOKEN) {
        Some(project) => Json(json!({"token": {"project": {"id": project}}})).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Keystone, Glance and Nova in one fake, which notes the trace context of every request.
fn fake() -> (Log, String) {
    let log = Log::default();
    let schema = json!({"properties": {"id": {}, "name": {}, "status": {}}});
    let router = Router::new()
        .route("/v3/auth/tokens", post(issue).get(validate))
        .route("/v2/images", get(|| async { Json(json!({"images": []})) }))
        .route("/v2/schemas/image", get(move || async move { Json(schema.clone()) }))
        // Nova's own image list is answered by the gateway: this one fails, for the failure log.
        .route("/v2/images/{id}", get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }))
        .fallback(|| async { Json(json!({"passed": true})) })
        .layer(tower::util::MapRequestLayer::new({
            let log = log.clone();
            move |request: Request| {
                note(&log, &request);
                request
            }
        }));
    let addr = Harness::get().block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    });
    (log, format!("http://{addr}"))
}

/// Notes what one request carried.
fn note(log: &Log, request: &Request) {
    let header = |name: &str| request.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    let call = format!("{} {}", request.method(), request.uri().path());
    log.lock().unwrap().push(Seen { call, traceparent: header("traceparent"), tracestate: header("tracestate") });
}

fn configure(c: &mut Config, upstream: &str) {
    let namespace = |identity, trusted_callers| NamespaceConfig {
        glance_url: Some(upstream.parse().unwrap()),
        identity,
        trusted_callers,
        ..Default::default()
    };
    let trusting = namespace(IdentityMode::GatewayCredentials, common::loopback_callers());
    c.alliance.namespaces.insert("ns".into(), trusting);
    c.alliance.namespaces.insert("strict".into(), namespace(IdentityMode::Token, Vec::new()));
    c.keystone.url = Some(format!("{upstream}/v3").parse().unwrap());
    let creds =
        Credentials { username: Some("svc".into()), password: Some(Secret::new("s3cret")), ..Default::default() };
    c.keystone.environments.insert(PROJECT.into(), creds);
    c.glance.url = Some(upstream.parse().unwrap());
    c.nova.upstream_url = Some(upstream.parse().unwrap());
}

/// The client calls of the test, and the upstream calls each must make.
fn calls(base: &str) -> Vec<(reqwest::RequestBuilder, &'static [&'static str])> {
    let alliance =
        |ns: &str| client().get(format!("{base}/images")).header("x-target-ns", ns).header("x-environment-id", PROJECT);
    vec![
        // Keystone for the gateway's token, then Glance (the namespace's schema once, then the list).
        (alliance("ns"), &["POST /v3/auth/tokens", "GET /v2/schemas/image", "GET /v2/images"][..]),
        // Keystone validating the client's token, then Glance.
        (
            alliance("strict").header("x-auth-token", format!("{USER_TOKEN}{PROJECT}")),
            &["GET /v3/auth/tokens", "GET /v2/schemas/image", "GET /v2/images"],
        ),
        // The passthrough to Nova, and to Glance on the image mount.
        (client().get(format!("{base}/v2.1/servers")), &["GET /v2.1/servers"]),
        (client().get(format!("{base}/image/v2/tasks")), &["GET /v2/tasks"]),
    ]
}

/// The parts of a `traceparent` that must be valid: (trace id, parent id).
fn parts(traceparent: &str) -> (String, String) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    assert_eq!(fields[0], "00", "{traceparent}");
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    assert!(hex(fields[1], 32) && fields[1] != "0".repeat(32), "{traceparent}");
    assert!(hex(fields[2], 16) && fields[2] != "0".repeat(16), "{traceparent}");
    assert!(hex(fields[3], 2), "{traceparent}");
    (fields[1].to_owned(), fields[2].to_owned())
}

/// Sends each call with `traceparent` (if any) and the test's `tracestate` to a new gateway
/// (whose caches are empty) in front of `upstream`, and returns, for each, the trace context
/// its upstream calls carried.
async fn trace_each(upstream: &str, log: &Log, tweak: fn(&mut Config), traceparent: Option<&str>) -> Vec<Vec<Seen>> {
    let gw = Harness::get().gateway(|c| {
        configure(c, upstream);
        tweak(c);
    });
    let mut out = Vec::new();
    for (request, expected) in calls(&gw.base) {
        log.lock().unwrap().clear();
        let mut request = request.header("tracestate", TRACESTATE);
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let a = send(request).await;
        assert_eq!(a.status, 200, "{expected:?}: {}", a.text);
        let seen = log.lock().unwrap().clone();
        assert_eq!(seen.iter().map(|s| s.call.as_str()).collect::<Vec<_>>(), expected);
        out.push(seen);
    }
    out
}

#[tokio::test]
async fn a_client_trace_reaches_every_upstream_below_the_gateways_spans() {
    let (log, upstream) = fake();
    let client = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let mut parents = Vec::new();
    for seen in trace_each(&upstream, &log, |_| {}, Some(&client)).await {
        for s in seen {
            let (trace, parent) = parts(s.traceparent.as_deref().unwrap_or_else(|| panic!("{s:?}")));
            assert_eq!(trace, CLIENT_TRACE, "{s:?}");
            assert_ne!(parent, CLIENT_SPAN, "{s:?}: the gateway's span is the parent");
            assert!(s.traceparent.as_deref().unwrap().ends_with("-01"), "sampled stays: {s:?}");
            assert_eq!(s.tracestate.as_deref(), Some(TRACESTATE), "{s:?}");
            parents.push(parent);
        }
    }
    // One span per upstream call.
    let distinct: std::collections::HashSet<_> = parents.iter().collect();
    assert_eq!(distinct.len(), parents.len(), "{parents:?}");
}

#[tokio::test]
async fn a_malformed_or_missing_traceparent_starts_a_new_trace() {
    let (log, upstream) = fake();
    let mut traces = Vec::new();
    let malformed = [
        format!("00-{}-{CLIENT_SPAN}-01", "0".repeat(32)),
        format!("00-{CLIENT_TRACE}-{}-01", "0".repeat(16)),
        format!("00-{}-{CLIENT_SPAN}-01", CLIENT_TRACE.to_uppercase()),
        format!("ff-{CLIENT_TRACE}-{CLIENT_SPAN}-01"),
        format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}"),
    ];
    for traceparent in malformed.iter().map(|t| Some(t.as_str())).chain([None]) {
        for seen in trace_each(&upstream, &log, |_| {}, traceparent).await {
            let ids: Vec<_> = seen.iter().map(|s| parts(s.traceparent.as_deref().unwrap()).0).collect();
            assert!(ids.iter().all(|id| *id == ids[0]), "one trace per request: {seen:?}");
            assert_ne!(ids[0], CLIENT_TRACE, "{traceparent:?}");
            // The state belonged to the trace that was refused.
            assert!(seen.iter().all(|s| s.tracestate.is_none()), "{seen:?}");
            traces.push(ids[0].clone());
        }
    }
    let distinct: std::collections::HashSet<_> = traces.iter().collect();
    assert_eq!(distinct.len(), traces.len(), "each request its own trace: {traces:?}");
}

#[tokio::test]
async fn a_gateway_that_accepts_no_client_context_starts_its_own_traces() {
    let (log, upstream) = fake();
    let client = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let refusing: fn(&mut Config) = |c| c.tracing.accept_client_context = false;
    for seen in trace_each(&upstream, &log, refusing, Some(&client)).await {
        for s in seen {
            assert_ne!(parts(s.traceparent.as_deref().unwrap()).0, CLIENT_TRACE, "{s:?}");
            assert_eq!(s.tracestate, None, "{s:?}");
        }
    }
}

/// Log lines, as the binary writes them (JSON, with the current span's fields).
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured_logs() -> &'static Lines {
    static LINES: OnceLock<Lines> = OnceLock::new();
    LINES.get_or_init(|| {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_writer(move || writer.clone())
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        lines
    })
}

#[tokio::test]
async fn the_access_log_and_failure_logs_carry_the_trace_id() {
    let lines = captured_logs();
    let (_log, upstream) = fake();
    let gw = Harness::get().gateway(|c| configure(c, &upstream));
    let ok = uuid::Uuid::new_v4().simple().to_string();
    let a = send(
        client()
            .get(format!("{}/images", gw.base))
            .header("x-target-ns", "ns")
            .header("x-environment-id", PROJECT)
            .header("traceparent", format!("00-{ok}-{CLIENT_SPAN}-01")),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    // Glance fails a Nova image read: the dialect's failure line.
    let failed = uuid::Uuid::new_v4().simple().to_string();
    let image = uuid::Uuid::new_v4();
    let a = send(
        client()
            .get(format!("{}/v2.1/images/{image}", gw.base))
            .headers(Harness::get().member())
            .header("traceparent", format!("00-{failed}-{CLIENT_SPAN}-00")),
    )
    .await;
    assert!(a.status >= 500, "{}", a.text);
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let logged: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let access = |trace: &str| logged.iter().find(|l| l["target"] == "access_log" && l["trace_id"] == trace).cloned();
    let line = access(&ok).unwrap_or_else(|| panic!("no access line with trace {ok}:\n{text}"));
    assert_eq!(line["status"], 200, "{line}");
    assert!(access(&failed).is_some(), "no access line with trace {failed}:\n{text}");
    let failure =
        logged.iter().find(|l| l["message"] == "nova call failed" && l["span"]["trace_id"] == failed.as_str());
    assert!(failure.is_some(), "no failure line with trace {failed}:\n{text}");
}
