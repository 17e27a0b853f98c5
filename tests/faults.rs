//! Upstream faults: the gateway in front of a fake Glance that misbehaves in one way per test
//! (refuses connections, answers something that is not Glance's, cuts its answer short, drops
//! a connection). Faults that are a matter of time (a Glance that never answers, the breaker's
//! cooldown) are in `deadlines.rs`, on tokio's paused clock. Every fault must become the dialect's own error with the
//! status docs/compatibility.md (#5-#7) and docs/alliance.md promise, never a 500 or a hang,
//! and the gateway must go on serving afterwards.
//!
//! The fake is a raw HTTP/1.1 server on 127.0.0.1:0 so that it can misbehave below HTTP (close
//! a connection, stop mid-body). It serves `/versions` and `/v2/schemas/image` as Glance does
//! (shapes taken from the embedded store), so that each fault hits the call under test.

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{client, send, Answer, Failures, Gateway, Harness};
use image_gateway::config::Config;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// The Alliance namespace every gateway here has, in front of its `glance.url`.
const NS: &str = "ccsr1";
const ENV: &str = "faults";

// ---------------------------------------------------------------------------------------------
// The fake Glance
// ---------------------------------------------------------------------------------------------

/// What the fake does with one request.
#[derive(Clone, Debug)]
enum Act {
    /// An answer with this status, content type and body (with its Content-Length).
    Answer(u16, &'static str, Vec<u8>),
    /// These bytes, then the connection is closed.
    RawThenClose(Vec<u8>),
    /// The request is read, then the connection is closed without a byte of answer.
    Close,
}

impl Act {
    fn json(status: u16, body: &Value) -> Act {
        Act::Answer(status, "application/json; charset=UTF-8", body.to_string().into_bytes())
    }

    fn text(status: u16, content_type: &'static str, body: &str) -> Act {
        Act::Answer(status, content_type, body.as_bytes().to_vec())
    }
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    body: Vec<u8>,
    /// How many requests with the same method and path came before this one.
    nth: usize,
}

impl Seen {
    fn param(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The image id of `/v2/images/{id}[/...]`.
    fn image_id(&self) -> Option<&str> {
        self.path.strip_prefix("/v2/images/").map(|rest| rest.split('/').next().unwrap_or(rest))
    }
}

type Rule = dyn Fn(&Seen) -> Act + Send + Sync;

struct FakeGlance {
    url: String,
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl FakeGlance {
    /// Starts a fake on the calling test's runtime (it stops with the test). `/versions` and
    /// `/v2/schemas/image` are answered as Glance does; every other request goes to `rule`.
    fn start(rule: impl Fn(&Seen) -> Act + Send + Sync + 'static) -> FakeGlance {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let listener = TcpListener::from_std(listener).unwrap();
        let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let rule: Arc<Rule> = Arc::new(rule);
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_connection(stream, rule.clone(), log.clone()));
            }
        });
        FakeGlance { url, seen }
    }

    /// How many requests (each on a connection of its own) had this method and path.
    fn count(&self, method: &str, path: &str) -> usize {
        self.seen.lock().unwrap().iter().filter(|(m, p)| m == method && p == path).count()
    }
}

async fn serve_connection(mut stream: TcpStream, rule: Arc<Rule>, log: Arc<Mutex<Vec<(String, String)>>>) {
    let Some((method, target, body)) = read_request(&mut stream).await else { return };
    let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
    let nth = {
        let mut log = log.lock().unwrap();
        let nth = log.iter().filter(|(m, p)| *m == method && p == path).count();
        log.push((method.clone(), path.to_owned()));
        nth
    };
    let seen = Seen {
        method,
        path: path.to_owned(),
        query: url::form_urlencoded::parse(query.as_bytes()).into_owned().collect(),
        body,
        nth,
    };
    let act = match (seen.method.as_str(), seen.path.as_str()) {
        ("GET", "/versions") => Act::json(200, &versions()),
        ("GET", "/v2/schemas/image") => Act::json(200, &shapes().schema),
        _ => rule(&seen),
    };
    match act {
        Act::Answer(status, content_type, body) => {
            let length = body.len();
            let head = format!(
                "HTTP/1.1 {status} Fake\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\
                 Connection: close\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&body).await;
            let _ = stream.shutdown().await;
        }
        Act::RawThenClose(bytes) => {
            let _ = stream.write_all(&bytes).await;
            let _ = stream.flush().await;
        }
        Act::Close => {}
    }
}

/// Reads one request: method, target and body (by Content-Length; the gateway sends no
/// chunked bodies). `None` if the client went away first.
async fn read_request(stream: &mut TcpStream) -> Option<(String, String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 1 << 20 {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_owned(), first.next()?.to_owned());
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length.min(1 << 24) {
        let n = stream.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        body.extend_from_slice(&chunk[..n]);
    }
    Some((method, target, body))
}

/// What a real Glance answers, taken from the embedded store: its image schema and an image.
struct Shapes {
    schema: Value,
    image: Value,
}

fn shapes() -> &'static Shapes {
    static SHAPES: OnceLock<Shapes> = OnceLock::new();
    SHAPES.get_or_init(|| {
        Harness::get().block_on(async {
            let store = image_gateway::glance::embedded::router(common::test_store());
            let call = |req: http::Request<axum::body::Body>| async {
                let res = store.clone().oneshot(req).await.unwrap();
                let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
                serde_json::from_slice::<Value>(&bytes).unwrap()
            };
            let schema = call(http::Request::get("/v2/schemas/image").body(axum::body::Body::empty()).unwrap()).await;
            let body = json!({"name": "good", "disk_format": "raw", "container_format": "bare", "os_distro": "cirros"});
            let image = call(
                http::Request::post("/v2/images")
                    .header("content-type", "application/json")
                    .header("x-identity-status", "Confirmed")
                    .header("x-project-id", ENV)
                    .header("x-roles", "member,reader")
                    .body(axum::body::Body::from(body.to_string()))
                    .unwrap(),
            )
            .await;
            assert!(image["id"].is_string() && schema["properties"].is_object(), "{image} {schema}");
            Shapes { schema, image }
        })
    })
}

/// A well-formed Glance image with this id.
fn image(id: &str) -> Value {
    let mut image = shapes().image.clone();
    image["id"] = json!(id);
    image["self"] = json!(format!("/v2/images/{id}"));
    image["file"] = json!(format!("/v2/images/{id}/file"));
    image
}

fn image_list(images: Vec<Value>) -> Value {
    json!({"images": images, "first": "/v2/images", "schema": "/v2/schemas/images"})
}

fn versions() -> Value {
    json!({"versions": [{"id": "v2.17", "status": "CURRENT", "links": [{"rel": "self", "href": "/v2/"}]}]})
}

/// The fake's answer to a request it has no fault for: the image asked for, or a one-image
/// list, or the patched image.
fn well_behaved(seen: &Seen) -> Act {
    match (seen.method.as_str(), seen.image_id()) {
        ("GET" | "PATCH", Some(id)) => Act::json(200, &image(id)),
        ("GET", None) => Act::json(200, &image_list(vec![image(GOOD)])),
        ("POST", None) => Act::json(201, &image(GOOD)),
        ("DELETE", Some(_)) => Act::Answer(204, "text/plain", Vec::new()),
        _ => Act::text(404, "text/plain", "404 Not Found"),
    }
}

/// An image every fake serves correctly: proof that a gateway still works after a fault.
const GOOD: &str = "0a0c3b1e-4e8f-4a53-9c55-d1b7f0f1a000";

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

// ---------------------------------------------------------------------------------------------
// Gateways and calls
// ---------------------------------------------------------------------------------------------

/// A gateway in front of `glance_url`, with the Alliance namespace `ccsr1` on the same Glance.
/// Its circuit breaker is out of the way (each test makes many failing calls on purpose),
/// except where a test sets it.
fn gateway(glance_url: &str, tweak: impl FnOnce(&mut Config)) -> Gateway {
    Harness::get().gateway(|c| {
        c.glance.url = Some(glance_url.parse().unwrap());
        c.glance.circuit_breaker_failures = 1_000_000;
        c.alliance.namespaces.insert(NS.into(), common::trusted_headers_namespace());
        tweak(c);
    })
}

/// A gateway in front of the harness's (healthy) Glance.
fn healthy() -> &'static Gateway {
    static HEALTHY: OnceLock<Gateway> = OnceLock::new();
    HEALTHY.get_or_init(|| {
        Harness::get().gateway(|c| {
            c.alliance.namespaces.insert(NS.into(), common::trusted_headers_namespace());
        })
    })
}

/// A bound on every call, so that a gateway that hangs fails the test instead of stalling it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

async fn nova(gw: &Gateway, method: &str, path: &str, body: Option<Value>) -> Answer {
    let mut req = client()
        .request(method.parse().unwrap(), format!("{}{path}", gw.base))
        .headers(Harness::get().member())
        .timeout(CLIENT_TIMEOUT);
    if let Some(body) = body {
        req = req.json(&body);
    }
    send(req).await
}

async fn alliance(gw: &Gateway, method: &str, path: &str, body: Option<Value>) -> Answer {
    let mut req = client()
        .request(method.parse().unwrap(), format!("{}{path}", gw.base))
        .header("x-target-ns", NS)
        .header("x-environment-id", ENV)
        .timeout(CLIENT_TIMEOUT);
    if let Some(body) = body {
        req = req.json(&body);
    }
    send(req).await
}

/// A Nova fault: one of `statuses`, `{"<name>": {"code": <status>, "message": "..."}}` with the
/// name Nova gives that status.
fn nova_fault(a: &Answer, statuses: &[u16]) -> Result<(), String> {
    if !statuses.contains(&a.status) {
        return Err(format!("status {} (want {statuses:?}): {}", a.status, a.text));
    }
    let name = match a.status {
        400 => "badRequest",
        403 => "forbidden",
        404 => "itemNotFound",
        413 => "overLimit",
        503 => "serviceUnavailable",
        _ => "computeFault",
    };
    let body: Value = serde_json::from_str(&a.text).map_err(|e| format!("{}: not JSON ({e}): {}", a.status, a.text))?;
    let fault = &body[name];
    let one_key = body.as_object().is_some_and(|o| o.len() == 1);
    if !one_key || fault["code"] != a.status || !fault["message"].is_string() {
        return Err(format!("{}: not a Nova `{name}` fault: {}", a.status, a.text));
    }
    Ok(())
}

/// An Alliance error: one of `statuses`, `{"error": {"code", "title", "message"}}`.
fn alliance_error(a: &Answer, statuses: &[u16]) -> Result<(), String> {
    if !statuses.contains(&a.status) {
        return Err(format!("status {} (want {statuses:?}): {}", a.status, a.text));
    }
    let body: Value = serde_json::from_str(&a.text).map_err(|e| format!("{}: not JSON ({e}): {}", a.status, a.text))?;
    let error = &body["error"];
    let title = http::StatusCode::from_u16(a.status).unwrap().canonical_reason().unwrap();
    let one_key = body.as_object().is_some_and(|o| o.len() == 1);
    if !one_key || error["code"] != a.status || error["title"] != title || !error["message"].is_string() {
        return Err(format!("{}: not an Alliance error: {}", a.status, a.text));
    }
    Ok(())
}

/// The faulty gateway still answers, its good image included, and so does a healthy one.
async fn still_serving(gw: &Gateway) {
    let a = send(client().get(format!("{}/healthz", gw.base)).timeout(CLIENT_TIMEOUT)).await;
    assert_eq!(a.status, 200, "healthz after the fault: {}", a.text);
    let a = nova(healthy(), "GET", "/v2.1/images?limit=1", None).await;
    assert_eq!(a.status, 200, "a healthy gateway: {}", a.text);
    let a = alliance(healthy(), "GET", "/images?limit=1", None).await;
    assert_eq!(a.status, 200, "a healthy gateway: {}", a.text);
}

/// `still_serving`, plus a good call through the faulty gateway itself (its fake serves GOOD).
async fn still_serving_good(gw: &Gateway) {
    still_serving(gw).await;
    let a = nova(gw, "GET", &format!("/v2.1/images/{GOOD}"), None).await;
    assert_eq!((a.status, a.json()["image"]["id"].clone()), (200, json!(GOOD)), "{}", a.text);
    let a = alliance(gw, "GET", &format!("/images/{GOOD}"), None).await;
    assert_eq!((a.status, a.json()["id"].clone()), (200, json!(GOOD)), "{}", a.text);
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn refused_connections_are_503s_at_once() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let gw = gateway(&dead, |_| {});
    let id = uuid();
    // Fail-fast is the property under test (docs/compatibility.md #5): generous bound.
    let bound = Duration::from_secs(2);
    let mut failures = Failures::default();
    for (method, path, body) in [
        ("GET", "/v2.1/images/detail".to_owned(), None),
        ("GET", "/v2.1/images".to_owned(), None),
        ("GET", format!("/v2.1/images/{id}"), None),
        ("GET", format!("/v2.1/images/{id}/metadata"), None),
        ("POST", format!("/v2.1/images/{id}/metadata"), Some(json!({"metadata": {"k": "v"}}))),
        ("DELETE", format!("/v2.1/images/{id}"), None),
    ] {
        let started = Instant::now();
        let a = nova(&gw, method, &path, body).await;
        let took = started.elapsed();
        failures.check(format!("nova {method} {path}"), nova_fault(&a, &[503]));
        if took >= bound {
            failures.check(format!("nova {method} {path}"), Err(format!("took {took:?}")));
        }
    }
    for (method, path, body) in [
        ("GET", "/images".to_owned(), None),
        ("GET", format!("/images/{id}"), None),
        ("GET", "/images/by-name".to_owned(), None),
        ("POST", "/images".to_owned(), Some(json!({"image": {"name": "x"}}))),
        ("PATCH", format!("/images/{id}"), Some(json!({"image": {"name": "x"}}))),
        ("DELETE", format!("/images/{id}"), None),
    ] {
        let started = Instant::now();
        let a = alliance(&gw, method, &path, body).await;
        let took = started.elapsed();
        failures.check(format!("alliance {method} {path}"), alliance_error(&a, &[503]));
        if took >= bound {
            failures.check(format!("alliance {method} {path}"), Err(format!("took {took:?}")));
        }
    }
    failures.assert_none();
    still_serving(&gw).await;
}

/// Answers that are not Glance's: for a show (`GET /v2/images/{id}`), a list
/// (`GET /v2/images?name=<case>`) and a create or patch. Each case is (name, show answer, list
/// answer).
fn unusable_cases() -> Vec<(&'static str, Act, Act)> {
    let html = "<html><head><title>Welcome to nginx!</title></head><body>It works!</body></html>";
    let id = uuid();
    vec![
        ("html with 200", Act::text(200, "text/html", html), Act::text(200, "text/html", html)),
        (
            "truncated JSON",
            Act::text(200, "application/json", &format!("{{\"id\": \"{id}\", \"name\": \"tr")),
            Act::text(200, "application/json", &format!("{{\"images\": [{{\"id\": \"{id}\", \"na")),
        ),
        ("empty 200", Act::text(200, "application/json", ""), Act::text(200, "application/json", "")),
        ("JSON null", Act::json(200, &Value::Null), Act::json(200, &Value::Null)),
        ("JSON array", Act::json(200, &json!([image(&id)])), Act::json(200, &json!([image(&id)]))),
        ("a string", Act::json(200, &json!("image")), Act::json(200, &json!({"images": "many"}))),
        ("a number", Act::json(200, &json!(5)), Act::json(200, &json!({"images": 5}))),
        (
            "object without id, images null",
            Act::json(200, &json!({"name": "no id"})),
            Act::json(200, &json!({"images": null})),
        ),
        (
            "image without id",
            Act::json(200, &{
                let mut i = image(&id);
                i.as_object_mut().unwrap().remove("id");
                i
            }),
            Act::json(200, &image_list(vec![json!({"name": "no id", "status": "active"})])),
        ),
        (
            "id not a string",
            Act::json(200, &json!({"id": 5, "name": "numeric id", "status": "active"})),
            Act::json(200, &image_list(vec![json!({"id": 5, "name": "numeric id"})])),
        ),
        (
            "a bad image before a good one",
            Act::json(200, &json!({"id": null, "name": "null id"})),
            Act::json(200, &image_list(vec![json!({"name": "no id", "status": "active"}), image(&id)])),
        ),
        (
            "a non-object before a good one",
            Act::json(200, &json!({"id": ["a"], "name": "array id"})),
            Act::json(200, &image_list(vec![json!(5), image(&id)])),
        ),
        (
            "500 with Glance's JSON",
            Act::json(
                500,
                &json!({"code": "500 Internal Server Error", "title": "Internal Server Error", "message": "boom"}),
            ),
            Act::json(
                500,
                &json!({"code": "500 Internal Server Error", "title": "Internal Server Error", "message": "boom"}),
            ),
        ),
        (
            "500 with HTML",
            Act::text(500, "text/html", "<html><body><h1>500 Internal Server Error</h1></body></html>"),
            Act::text(500, "text/html", "<html><body><h1>500 Internal Server Error</h1></body></html>"),
        ),
        ("502 from a proxy", Act::text(502, "text/html", "Bad Gateway"), Act::text(502, "text/html", "Bad Gateway")),
        (
            "504 from a proxy",
            Act::text(504, "text/html", "Gateway Timeout"),
            Act::text(504, "text/html", "Gateway Timeout"),
        ),
    ]
}

#[tokio::test]
async fn answers_that_are_not_glances_are_502s() {
    let cases: Arc<Vec<(&'static str, Act, Act)>> = Arc::new(unusable_cases());
    // Case i is served for reads of image ids[i], for the list filter name=case-<i>, for a
    // create named case-<i>, and for PATCHes of image writes[i] (whose reads are fine, as the
    // writes read the image first).
    let ids: Arc<Vec<String>> = Arc::new(cases.iter().map(|_| uuid()).collect());
    let writes: Arc<Vec<String>> = Arc::new(cases.iter().map(|_| uuid()).collect());
    let fake = {
        let (cases, ids, writes) = (cases.clone(), ids.clone(), writes.clone());
        FakeGlance::start(move |seen| {
            let case = |n: Option<&str>| n?.strip_prefix("case-")?.parse::<usize>().ok();
            let read = seen.image_id().and_then(|id| ids.iter().position(|i| i == id));
            let write = seen.image_id().and_then(|id| writes.iter().position(|i| i == id));
            let created = serde_json::from_slice::<Value>(&seen.body).ok().and_then(|b| case(b["name"].as_str()));
            match (seen.method.as_str(), read, write) {
                ("GET", Some(i), _) => cases[i].1.clone(),
                ("PATCH", _, Some(i)) => cases[i].1.clone(),
                ("GET", None, None) if case(seen.param("name")).is_some() => {
                    cases[case(seen.param("name")).unwrap_or_default()].2.clone()
                }
                ("POST", None, None) if created.is_some() => match &cases[created.unwrap_or_default()].1 {
                    Act::Answer(200, ct, body) => Act::Answer(201, ct, body.clone()),
                    other => other.clone(),
                },
                _ => well_behaved(seen),
            }
        })
    };
    let gw = gateway(&fake.url, |_| {});
    let mut failures = Failures::default();
    for (i, (case, _, _)) in cases.iter().enumerate() {
        let id = &ids[i];
        // Glance's 503 stays 503 (docs/compatibility.md #7); everything else here is a 502.
        let want: &[u16] = &[502];
        let a = nova(&gw, "GET", &format!("/v2.1/images/{id}"), None).await;
        failures.check(format!("{case}: nova show"), nova_fault(&a, want));
        let a = nova(&gw, "GET", &format!("/v2.1/images/detail?name=case-{i}"), None).await;
        failures.check(format!("{case}: nova detail"), nova_fault(&a, want));
        let a = nova(&gw, "GET", &format!("/v2.1/images?name=case-{i}"), None).await;
        failures.check(format!("{case}: nova list"), nova_fault(&a, want));
        let a = alliance(&gw, "GET", &format!("/images/{id}"), None).await;
        failures.check(format!("{case}: alliance show"), alliance_error(&a, want));
        let a = alliance(&gw, "GET", &format!("/images?name=case-{i}"), None).await;
        failures.check(format!("{case}: alliance list"), alliance_error(&a, want));
        let a = alliance(&gw, "POST", "/images", Some(json!({"image": {"name": format!("case-{i}")}}))).await;
        failures.check(format!("{case}: alliance create"), alliance_error(&a, want));
    }
    // Writes whose PATCH answer is unusable (the image read before it is fine).
    for (i, (case, _, _)) in cases.iter().enumerate() {
        let id = &writes[i];
        let a = nova(&gw, "POST", &format!("/v2.1/images/{id}/metadata"), Some(json!({"metadata": {"k": "v"}}))).await;
        failures.check(format!("{case}: nova metadata merge"), nova_fault(&a, &[502]));
        let a = alliance(&gw, "PATCH", &format!("/images/{id}"), Some(json!({"image": {"min_ram": 64}}))).await;
        failures.check(format!("{case}: alliance update"), alliance_error(&a, &[502]));
    }
    failures.assert_none();
    still_serving_good(&gw).await;
}

#[tokio::test]
async fn glances_503_stays_a_503() {
    let fake = FakeGlance::start(|seen| {
        if seen.image_id() == Some(GOOD) {
            well_behaved(seen)
        } else {
            Act::json(
                503,
                &json!({"code": "503 Service Unavailable", "title": "Service Unavailable", "message": "busy"}),
            )
        }
    });
    let gw = gateway(&fake.url, |_| {});
    let id = uuid();
    nova_fault(&nova(&gw, "GET", &format!("/v2.1/images/{id}"), None).await, &[503]).unwrap();
    nova_fault(&nova(&gw, "GET", "/v2.1/images/detail", None).await, &[503]).unwrap();
    alliance_error(&alliance(&gw, "GET", &format!("/images/{id}"), None).await, &[503]).unwrap();
    alliance_error(&alliance(&gw, "GET", "/images", None).await, &[503]).unwrap();
    still_serving_good(&gw).await;
}

#[tokio::test]
async fn a_glance_url_that_answers_300_multiple_choices_is_a_502() {
    // What Glance answers for a path without a known version prefix, e.g. a glance.url that
    // points at the wrong place: its versions document with 300. Not a Glance image: a 502
    // (docs/compatibility.md #7), not a 500.
    let fake =
        FakeGlance::start(
            |seen| {
                if seen.image_id() == Some(GOOD) {
                    well_behaved(seen)
                } else {
                    Act::json(300, &versions())
                }
            },
        );
    let gw = gateway(&fake.url, |_| {});
    let id = uuid();
    let mut failures = Failures::default();
    failures.check("nova show", nova_fault(&nova(&gw, "GET", &format!("/v2.1/images/{id}"), None).await, &[502]));
    failures.check("nova detail", nova_fault(&nova(&gw, "GET", "/v2.1/images/detail", None).await, &[502]));
    failures
        .check("alliance show", alliance_error(&alliance(&gw, "GET", &format!("/images/{id}"), None).await, &[502]));
    failures.check("alliance list", alliance_error(&alliance(&gw, "GET", "/images", None).await, &[502]));
    failures.assert_none();
    still_serving_good(&gw).await;
}

#[tokio::test]
async fn pages_that_never_end_do_not_keep_the_gateway_busy() {
    // A Glance whose every page is the same full page with a `next` link: the gateway must see
    // that the marker does not move and stop, not follow it until the request deadline. The
    // first page is answered before the second is asked for (lists stream page by page), so
    // the client sees the answer cut short: never a complete one.
    let fake = FakeGlance::start(|seen| match (seen.method.as_str(), seen.image_id()) {
        ("GET", None) => {
            let mut page = image_list(vec![image(GOOD)]);
            page["next"] = json!(format!("/v2/images?marker={GOOD}"));
            Act::json(200, &page)
        }
        _ => well_behaved(seen),
    });
    let gw = gateway(&fake.url, |c| {
        c.glance.page_size = 1;
        c.limits.request_timeout_secs = 3.0;
    });
    let a = nova(&gw, "GET", "/v2.1/images/detail", None).await;
    let nova_pages = fake.count("GET", "/v2/images");
    let b = alliance(&gw, "GET", "/images", None).await;
    let alliance_pages = fake.count("GET", "/v2/images") - nova_pages;
    let mut failures = Failures::default();
    for (dialect, answer) in [("nova", &a), ("alliance", &b)] {
        if answer.status != 200 || answer.cut.is_none() {
            failures.check(dialect, Err(format!("{} (cut: {:?}): {}", answer.status, answer.cut, answer.text)));
        }
    }
    for (dialect, pages) in [("nova", nova_pages), ("alliance", alliance_pages)] {
        if pages > 10 {
            failures.check(dialect, Err(format!("followed {pages} pages of the same image")));
        }
    }
    failures.assert_none();
    still_serving_good(&gw).await;
}

#[tokio::test]
async fn an_answer_cut_short_is_a_502_not_a_hang() {
    let cut_fixed =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"images\"".to_vec();
    let cut_chunked =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\na\r\n{\"images\":\r\n"
            .to_vec();
    let cut_head = b"HTTP/1.1 200 OK\r\nContent-Type: appli".to_vec();
    let cases = [("Content-Length 1000, 10 bytes", cut_fixed), ("chunked, cut", cut_chunked), ("head cut", cut_head)];
    let ids: Vec<String> = cases.iter().map(|_| uuid()).collect();
    let fake = {
        let (cases, ids) = (cases.clone(), ids.clone());
        FakeGlance::start(move |seen| {
            let by_id = seen.image_id().and_then(|id| ids.iter().position(|i| i == id));
            let by_name = seen.param("name").and_then(|n| n.strip_prefix("cut-")).and_then(|i| i.parse::<usize>().ok());
            match by_id.or(by_name) {
                Some(i) if seen.method == "GET" => Act::RawThenClose(cases[i].1.clone()),
                _ => well_behaved(seen),
            }
        })
    };
    // A hang would end at this deadline as a 504, which fails the test.
    let gw = gateway(&fake.url, |c| c.glance.timeout_secs = 10.0);
    let mut failures = Failures::default();
    for (i, (case, _)) in cases.iter().enumerate() {
        let id = &ids[i];
        let want: &[u16] = &[502, 503];
        let a = nova(&gw, "GET", &format!("/v2.1/images/{id}"), None).await;
        failures.check(format!("{case}: nova show"), nova_fault(&a, want));
        let a = nova(&gw, "GET", &format!("/v2.1/images/detail?name=cut-{i}"), None).await;
        failures.check(format!("{case}: nova detail"), nova_fault(&a, want));
        let a = alliance(&gw, "GET", &format!("/images/{id}"), None).await;
        failures.check(format!("{case}: alliance show"), alliance_error(&a, want));
        let a = alliance(&gw, "GET", &format!("/images?name=cut-{i}"), None).await;
        failures.check(format!("{case}: alliance list"), alliance_error(&a, want));
    }
    failures.assert_none();
    still_serving_good(&gw).await;
}

#[tokio::test]
async fn a_read_is_retried_once_on_a_fresh_connection() {
    // The first connection of every request is closed without an answer; the second is served.
    let flaky = uuid();
    let dead = uuid();
    let fake = {
        let (flaky, dead) = (flaky.clone(), dead.clone());
        FakeGlance::start(move |seen| match seen.image_id() {
            Some(id) if id == dead => Act::Close,
            Some(id) if id == flaky && seen.nth == 0 => Act::Close,
            Some(id) if id == flaky && seen.nth == 2 => Act::Close,
            None if seen.method == "GET" && seen.nth == 0 => Act::Close,
            _ => well_behaved(seen),
        })
    };
    let gw = gateway(&fake.url, |_| {});
    let show = format!("/v2/images/{flaky}");

    let a = nova(&gw, "GET", &format!("/v2.1/images/{flaky}"), None).await;
    assert_eq!((a.status, a.json()["image"]["id"].clone()), (200, json!(flaky)), "{}", a.text);
    assert_eq!(fake.count("GET", &show), 2, "one retry");

    let a = alliance(&gw, "GET", &format!("/images/{flaky}"), None).await;
    assert_eq!((a.status, a.json()["id"].clone()), (200, json!(flaky)), "{}", a.text);
    assert_eq!(fake.count("GET", &show), 4, "one retry");

    let a = nova(&gw, "GET", "/v2.1/images/detail", None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(fake.count("GET", "/v2/images"), 2, "one retry of the list");

    // A Glance that drops every connection: two tries, then 503 (unreachable).
    let a = nova(&gw, "GET", &format!("/v2.1/images/{dead}"), None).await;
    nova_fault(&a, &[503]).unwrap();
    assert_eq!(fake.count("GET", &format!("/v2/images/{dead}")), 2, "exactly one retry");
    let a = alliance(&gw, "GET", &format!("/images/{dead}"), None).await;
    alliance_error(&a, &[503]).unwrap();
    assert_eq!(fake.count("GET", &format!("/v2/images/{dead}")), 4, "exactly one retry");
    still_serving_good(&gw).await;
}

#[tokio::test]
async fn a_write_is_never_repeated() {
    // Reads are served; every write's connection is closed without an answer. Glance may have
    // applied it, so the gateway must not send it again.
    let fake = FakeGlance::start(|seen| match seen.method.as_str() {
        "GET" => well_behaved(seen),
        _ => Act::Close,
    });
    let gw = gateway(&fake.url, |_| {});
    let mut failures = Failures::default();
    let want: &[u16] = &[502, 503];
    let cases: [(&str, &str, &str, Value, &str); 5] = [
        ("nova", "POST", "/v2.1/images/{id}/metadata", json!({"metadata": {"k": "v"}}), "PATCH"),
        ("nova", "PUT", "/v2.1/images/{id}/metadata", json!({"metadata": {"k": "v"}}), "PATCH"),
        ("nova", "PUT", "/v2.1/images/{id}/metadata/k", json!({"meta": {"k": "v"}}), "PATCH"),
        ("alliance", "PATCH", "/images/{id}", json!({"image": {"min_ram": 64}}), "PATCH"),
        ("alliance", "PUT", "/images/{id}", json!({"image": {"min_ram": 64}}), "PATCH"),
    ];
    for (dialect, method, template, body, upstream) in cases {
        let id = uuid();
        let path = template.replace("{id}", &id);
        if dialect == "nova" {
            failures.check(
                format!("nova {method} {template}"),
                nova_fault(&nova(&gw, method, &path, Some(body)).await, want),
            );
        } else {
            let a = alliance(&gw, method, &path, Some(body)).await;
            failures.check(format!("alliance {method} {template}"), alliance_error(&a, want));
        }
        let sent = fake.count(upstream, &format!("/v2/images/{id}"));
        if sent != 1 {
            failures.check(format!("{dialect} {method} {template}"), Err(format!("Glance saw {sent} {upstream}s")));
        }
    }
    let a = alliance(&gw, "POST", "/images", Some(json!({"image": {"name": "once"}}))).await;
    failures.check("alliance POST /images", alliance_error(&a, want));
    let sent = fake.count("POST", "/v2/images");
    if sent != 1 {
        failures.check("alliance POST /images", Err(format!("Glance saw {sent} POSTs")));
    }
    failures.assert_none();
    still_serving(&gw).await;
}
