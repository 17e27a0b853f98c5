//! Hostile input against a gateway in front of the harness's Glance: malformed and deeply
//! nested JSON, wrong types, bodies over the limit (declared or chunked), huge headers and URLs,
//! query values that try to smuggle Glance parameters, path segments that try to climb out,
//! and metadata bodies with 100k keys. Every one is a clear 4xx in the dialect's own error
//! shape, never a 5xx or a hang, and the gateway keeps serving others meanwhile.
//!
//! Requests whose bytes an HTTP client would change (dot segments, oversized heads) are sent
//! raw over TCP.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::{client, send, Answer, Failures, Gateway, GlanceFixtures, Harness};

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NS: &str = "ccsr1";
/// The body limit of the `small` gateway.
const SMALL_LIMIT: u64 = 4096;
/// A bound on every call, so that a gateway that hangs fails the test instead of stalling it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

struct World {
    h: &'static Harness,
    /// Default limits.
    gw: Gateway,
    /// `limits.body_limit_bytes = 4096`.
    small: Gateway,
}

fn with_alliance(c: &mut image_gateway::config::Config) {
    c.alliance.namespaces.insert(NS.into(), common::trusted_headers_namespace());
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let h = Harness::get();
        let gw = h.gateway(with_alliance);
        let small = h.gateway(|c| {
            with_alliance(c);
            c.limits.body_limit_bytes = SMALL_LIMIT;
        });
        World { h, gw, small }
    })
}

fn env() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

impl World {
    fn glance(&self) -> GlanceFixtures<'_> {
        GlanceFixtures { h: self.h, http: client() }
    }

    /// A Nova call with a member's identity; `body` is sent as is (no Content-Type).
    async fn nova(&self, gw: &Gateway, method: &str, path: &str, body: Option<reqwest::Body>) -> Answer {
        let mut req = client()
            .request(method.parse().unwrap(), format!("{}{path}", gw.base))
            .headers(self.h.member())
            .timeout(CLIENT_TIMEOUT);
        if let Some(body) = body {
            req = req.body(body);
        }
        send(req).await
    }

    /// An Alliance call for environment `env`; `body` is sent as is (no Content-Type).
    async fn alliance(&self, gw: &Gateway, env: &str, method: &str, path: &str, body: Option<reqwest::Body>) -> Answer {
        let mut req = client()
            .request(method.parse().unwrap(), format!("{}{path}", gw.base))
            .header("x-target-ns", NS)
            .header("x-environment-id", env)
            .timeout(CLIENT_TIMEOUT);
        if let Some(body) = body {
            req = req.body(body);
        }
        send(req).await
    }

    /// A good call of each dialect through `gw`.
    async fn good_calls(&self, gw: &Gateway) -> Result<(), String> {
        let a = self.nova(gw, "GET", "/v2.1/images?limit=1", None).await;
        if a.status != 200 {
            return Err(format!("good nova call: {} {}", a.status, a.text));
        }
        let a = self.alliance(gw, &env(), "GET", "/images", None).await;
        if a.status != 200 {
            return Err(format!("good alliance call: {} {}", a.status, a.text));
        }
        Ok(())
    }

    /// The gateway still answers.
    async fn still_serving(&self, gw: &Gateway) {
        let a = send(client().get(format!("{}/healthz", gw.base)).timeout(CLIENT_TIMEOUT)).await;
        assert_eq!(a.status, 200, "healthz: {}", a.text);
        self.good_calls(gw).await.unwrap();
    }
}

/// The body as one buffer (sent with Content-Length).
fn fixed(bytes: impl Into<Vec<u8>>) -> reqwest::Body {
    reqwest::Body::from(bytes.into())
}

/// The body in 1 KiB chunks of unknown total length (sent chunked, without Content-Length).
fn chunked(bytes: impl Into<Vec<u8>>) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = bytes.into().chunks(1024).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

/// A Nova fault: one of `statuses`, `{"<name>": {"code": <status>, "message": "..."}}` with the
/// name Nova gives that status.
fn nova_fault(a: &Answer, statuses: &[u16]) -> Result<(), String> {
    if !statuses.contains(&a.status) {
        return Err(format!("status {} (want {statuses:?}): {}", a.status, cut(&a.text)));
    }
    let name = match a.status {
        400 => "badRequest",
        403 => "forbidden",
        404 => "itemNotFound",
        413 => "overLimit",
        415 => "badMediaType",
        503 => "serviceUnavailable",
        _ => "computeFault",
    };
    let body: Value =
        serde_json::from_str(&a.text).map_err(|e| format!("{}: not JSON ({e}): {}", a.status, cut(&a.text)))?;
    let fault = &body[name];
    let one_key = body.as_object().is_some_and(|o| o.len() == 1);
    if !one_key || fault["code"] != a.status || !fault["message"].is_string() {
        return Err(format!("{}: not a Nova `{name}` fault: {}", a.status, cut(&a.text)));
    }
    Ok(())
}

/// Nova's 404 comes in two shapes: a fault (the route ran) or WebOb's page (no route); with
/// `Accept: application/json` the page is WebOb's JSON.
fn nova_not_found(a: &Answer) -> Result<(), String> {
    if nova_fault(a, &[404]).is_ok() {
        return Ok(());
    }
    let page: Option<Value> = serde_json::from_str(&a.text).ok();
    match page {
        Some(p) if a.status == 404 && p["code"] == "404 Not Found" => Ok(()),
        _ => Err(format!("status {} (want a Nova 404): {}", a.status, cut(&a.text))),
    }
}

/// An Alliance error: one of `statuses`, `{"error": {"code", "title", "message"}}`.
fn alliance_error(a: &Answer, statuses: &[u16]) -> Result<(), String> {
    if !statuses.contains(&a.status) {
        return Err(format!("status {} (want {statuses:?}): {}", a.status, cut(&a.text)));
    }
    let body: Value =
        serde_json::from_str(&a.text).map_err(|e| format!("{}: not JSON ({e}): {}", a.status, cut(&a.text)))?;
    let error = &body["error"];
    let title = http::StatusCode::from_u16(a.status).unwrap().canonical_reason().unwrap();
    let one_key = body.as_object().is_some_and(|o| o.len() == 1);
    if !one_key || error["code"] != a.status || error["title"] != title || !error["message"].is_string() {
        return Err(format!("{}: not an Alliance error: {}", a.status, cut(&a.text)));
    }
    Ok(())
}

/// A client error: status in `statuses` (any body; the answer may come from the HTTP layer).
fn client_error(a: &Answer, statuses: &[u16]) -> Result<(), String> {
    if statuses.contains(&a.status) {
        Ok(())
    } else {
        Err(format!("status {} (want {statuses:?}): {}", a.status, cut(&a.text)))
    }
}

/// At most 300 characters of a text, for failure messages.
fn cut(text: &str) -> String {
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}... ({} bytes)", &text[..i], text.len()),
        None => text.to_owned(),
    }
}

/// A 200 list of exactly the images `want`, in that order.
fn lists(a: &Answer, want: &[String]) -> Result<(), String> {
    let listed = serde_json::from_str::<Value>(&a.text).ok().and_then(|v| v["images"].as_array().cloned());
    let got: Vec<String> =
        listed.unwrap_or_default().iter().map(|i| i["id"].as_str().unwrap_or("?").to_owned()).collect();
    if a.status == 200 && got == want {
        Ok(())
    } else {
        Err(format!("{} {got:?} (want {want:?}): {}", a.status, cut(&a.text)))
    }
}

/// Sends one request byte for byte (`Connection: close`, `Host` added) and reads the answer.
async fn raw(gw: &Gateway, method: &str, target: &str, headers: &HeaderMap, body: &[u8]) -> Answer {
    let addr = gw.base.trim_start_matches("http://");
    let mut request = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n").into_bytes();
    for (name, value) in headers {
        request.extend_from_slice(name.as_str().as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() && !headers.contains_key("content-length") && !headers.contains_key("transfer-encoding") {
        request.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading everything: keep what it says.
    let _ = stream.write_all(&request).await;
    let mut answer = Vec::new();
    let read = async {
        let mut chunk = [0u8; 16384];
        while let Ok(n) = stream.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(CLIENT_TIMEOUT, read).await.expect("the gateway did not answer");
    parse_answer(&answer)
}

fn parse_answer(bytes: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no answer head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut headers = HeaderMap::new();
    for (name, value) in lines.filter_map(|l| l.split_once(':')) {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.trim().as_bytes()), HeaderValue::from_str(value.trim())) {
            headers.append(n, v);
        }
    }
    let chunked = headers.get("transfer-encoding").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    let text = if chunked { dechunk(body) } else { body.to_owned() };
    Answer { status, headers, text, cut: None }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

fn alliance_headers(env: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-target-ns", HeaderValue::from_static(NS));
    h.insert("x-environment-id", env.parse().unwrap());
    h.insert("accept", HeaderValue::from_static("application/json"));
    h
}

fn nova_headers(h: &Harness) -> HeaderMap {
    let mut headers = h.member();
    headers.insert("accept", HeaderValue::from_static("application/json"));
    headers
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Bodies that are not JSON at all.
fn malformed_bodies() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("not JSON", b"{bad".to_vec()),
        ("unterminated string", b"{\"metadata\": {\"k\": \"v".to_vec()),
        ("unbalanced", b"{\"metadata\": {\"k\": \"v\"}".to_vec()),
        ("trailing garbage", b"{\"metadata\": {\"k\": \"v\"}} trailing".to_vec()),
        ("trailing comma", b"{\"metadata\": {\"k\": \"v\"},}".to_vec()),
        ("two documents", b"{} {}".to_vec()),
        ("byte order mark", b"\xEF\xBB\xBF{\"metadata\": {}}".to_vec()),
        ("invalid UTF-8", b"{\"metadata\": {\"k\": \"\xFF\xFE\"}}".to_vec()),
        ("lone surrogate", br#"{"metadata": {"k": "\ud800"}}"#.to_vec()),
        ("number out of range", b"{\"metadata\": {\"k\": 1e999999}}".to_vec()),
        ("NUL bytes", b"\0\0\0\0".to_vec()),
        ("single quotes", b"{'metadata': {'k': 'v'}}".to_vec()),
        ("NaN", b"{\"image\": {\"min_ram\": NaN}, \"metadata\": {\"k\": NaN}}".to_vec()),
    ]
}

#[tokio::test]
async fn malformed_json_is_a_400_in_each_dialect() {
    let w = world();
    let e = env();
    let id = uuid();
    let mut failures = Failures::default();
    for (case, body) in malformed_bodies() {
        let a = w.nova(&w.gw, "POST", &format!("/v2.1/images/{id}/metadata"), Some(fixed(body.clone()))).await;
        failures.check(format!("{case}: nova POST metadata"), nova_fault(&a, &[400]));
        let a = w.nova(&w.gw, "PUT", &format!("/v2.1/images/{id}/metadata/k"), Some(fixed(body.clone()))).await;
        failures.check(format!("{case}: nova PUT metadata item"), nova_fault(&a, &[400]));
        let a = w.alliance(&w.gw, &e, "POST", "/images", Some(fixed(body.clone()))).await;
        failures.check(format!("{case}: alliance POST"), alliance_error(&a, &[400]));
        let a = w.alliance(&w.gw, &e, "PATCH", &format!("/images/{id}"), Some(fixed(body.clone()))).await;
        failures.check(format!("{case}: alliance PATCH"), alliance_error(&a, &[400]));
    }
    failures.assert_none();
    assert!(w.h.owned_image_ids(&e).await.is_empty(), "nothing was created");
    w.still_serving(&w.gw).await;
}

#[tokio::test]
async fn deep_nesting_is_a_400_and_others_are_served_meanwhile() {
    let w = world();
    let e = env();
    let id = uuid();
    const DEPTH: usize = 100_000;
    let open = "[".repeat(DEPTH);
    let cases: Vec<(&str, String)> = vec![
        ("100k [", open.clone()),
        ("100k [ ]", format!("{open}{}", "]".repeat(DEPTH))),
        ("100k {\"a\":", format!("{}1{}", "{\"a\":".repeat(DEPTH), "}".repeat(DEPTH))),
        ("inside the envelope", format!("{{\"metadata\": {{\"k\": {open}1{}}}}}", "]".repeat(DEPTH))),
        ("inside the image", format!("{{\"image\": {{\"tags\": {open}{}}}}}", "]".repeat(DEPTH))),
    ];
    let hostile = async {
        let mut failures = Failures::default();
        for (case, body) in &cases {
            let a = w.nova(&w.gw, "POST", &format!("/v2.1/images/{id}/metadata"), Some(fixed(body.clone()))).await;
            failures.check(format!("{case}: nova POST metadata"), nova_fault(&a, &[400]));
            let a = w.nova(&w.gw, "PUT", &format!("/v2.1/images/{id}/metadata"), Some(chunked(body.clone()))).await;
            failures.check(format!("{case}: nova PUT metadata (chunked)"), nova_fault(&a, &[400]));
            let a = w.alliance(&w.gw, &e, "POST", "/images", Some(fixed(body.clone()))).await;
            failures.check(format!("{case}: alliance POST"), alliance_error(&a, &[400]));
            let a = w.alliance(&w.gw, &e, "PATCH", &format!("/images/{id}"), Some(chunked(body.clone()))).await;
            failures.check(format!("{case}: alliance PATCH (chunked)"), alliance_error(&a, &[400]));
        }
        failures
    };
    let (failures, good) = tokio::join!(hostile, w.good_calls(&w.gw));
    failures.assert_none();
    good.unwrap();
    assert!(w.h.owned_image_ids(&e).await.is_empty(), "nothing was created");
    w.still_serving(&w.gw).await;
}

#[tokio::test]
async fn wrong_types_are_400s_before_glance_is_asked() {
    let w = world();
    let e = env();
    let id = uuid();
    let mut failures = Failures::default();
    let nova_bodies = [
        json!(null),
        json!([]),
        json!("metadata"),
        json!(5),
        json!(true),
        json!({"metadata": []}),
        json!({"metadata": "k=v"}),
        json!({"metadata": null}),
        json!({"metadata": {"k": 1}}),
        json!({"metadata": {"k": null}}),
        json!({"metadata": {"k": true}}),
        json!({"metadata": {"k": ["v"]}}),
        json!({"metadata": {"k": {"nested": "v"}}}),
        json!({"metadata": {"": "v"}}),
        json!({"metadata": {"k/../x": "v"}}),
        json!({"metadata": {"k": "v".repeat(256)}}),
        json!({"metadata": {"k": "v"}, "extra": {}}),
        json!({"meta": {"k": "v"}}),
    ];
    for body in nova_bodies {
        let a = w.nova(&w.gw, "POST", &format!("/v2.1/images/{id}/metadata"), Some(fixed(body.to_string()))).await;
        failures.check(format!("nova POST metadata {body}"), nova_fault(&a, &[400]));
        let a = w.nova(&w.gw, "PUT", &format!("/v2.1/images/{id}/metadata"), Some(fixed(body.to_string()))).await;
        failures.check(format!("nova PUT metadata {body}"), nova_fault(&a, &[400]));
    }
    for body in
        [json!({"meta": {"k": 1}}), json!({"meta": {}}), json!({"meta": {"k": "v", "j": "w"}}), json!({"meta": []})]
    {
        let a = w.nova(&w.gw, "PUT", &format!("/v2.1/images/{id}/metadata/k"), Some(fixed(body.to_string()))).await;
        failures.check(format!("nova PUT metadata item {body}"), nova_fault(&a, &[400]));
    }
    let alliance_bodies = [
        json!(null),
        json!([]),
        json!("image"),
        json!({"image": null}),
        json!({"image": []}),
        json!({"image": "name"}),
        json!({"image": {"name": 5}}),
        json!({"image": {"name": ["a"]}}),
        json!({"image": {"name": "n".repeat(256)}}),
        json!({"image": {"min_ram": "64"}}),
        json!({"image": {"min_ram": 1.5}}),
        json!({"image": {"min_ram": 1e300}}),
        json!({"image": {"min_ram": -1}}),
        json!({"image": {"min_ram": null}}),
        json!({"image": {"protected": "true"}}),
        json!({"image": {"protected": 1}}),
        json!({"image": {"visibility": 1}}),
        json!({"image": {"visibility": "everyone"}}),
        json!({"image": {"tags": "a,b"}}),
        json!({"image": {"tags": [1]}}),
        json!({"image": {"tags": [null]}}),
        json!({"image": {"tags": [["a"]]}}),
        json!({"image": {"copy_from": 5}}),
        json!({"image": {"copy_from": "not a url"}}),
        json!({"image": {"disk_format": {"raw": true}}}),
        json!({"image": {"owner": "someone-else"}}),
        json!({"image": {"os_glance_import_task": "x"}}),
    ];
    for body in alliance_bodies {
        let a = w.alliance(&w.gw, &e, "POST", "/images", Some(fixed(body.to_string()))).await;
        failures.check(format!("alliance POST {body}"), alliance_error(&a, &[400]));
    }
    // A number past u64 (serde_json reads it as a float) and a huge exponent.
    for body in [r#"{"image": {"min_ram": 18446744073709551616}}"#, r#"{"image": {"min_disk": 1e19}}"#] {
        let a = w.alliance(&w.gw, &e, "POST", "/images", Some(fixed(body))).await;
        failures.check(format!("alliance POST {body}"), alliance_error(&a, &[400]));
    }
    failures.assert_none();
    assert!(w.h.owned_image_ids(&e).await.is_empty(), "nothing was created");
    w.still_serving(&w.gw).await;
}

#[tokio::test]
async fn bodies_over_the_limit_are_413s_with_or_without_content_length() {
    let w = world();
    let e = env();
    let id = uuid();
    // Valid JSON, so only the size can be wrong with it.
    let over =
        json!({"metadata": {"k": "v".repeat(200)}, "image": {"name": "x"}, "pad": " ".repeat(SMALL_LIMIT as usize)})
            .to_string();
    assert!(over.len() as u64 > SMALL_LIMIT);
    let mut failures = Failures::default();
    for (how, body) in [("Content-Length", fixed as fn(String) -> reqwest::Body), ("chunked", chunked)] {
        for (method, path) in [
            ("POST", format!("/v2.1/images/{id}/metadata")),
            ("PUT", format!("/v2.1/images/{id}/metadata")),
            ("PUT", format!("/v2.1/images/{id}/metadata/k")),
        ] {
            let a = w.nova(&w.small, method, &path, Some(body(over.clone()))).await;
            failures.check(format!("nova {method} {path} ({how})"), nova_fault(&a, &[413]));
        }
        for (method, path) in
            [("POST", "/images".to_owned()), ("PATCH", format!("/images/{id}")), ("PUT", format!("/images/{id}"))]
        {
            let a = w.alliance(&w.small, &e, method, &path, Some(body(over.clone()))).await;
            failures.check(format!("alliance {method} {path} ({how})"), alliance_error(&a, &[413]));
        }
    }
    // A body Nova would not even read is refused by its declared length, whatever the method.
    let a = w.nova(&w.small, "DELETE", &format!("/v2.1/images/{id}"), Some(fixed(over.clone()))).await;
    failures.check("nova DELETE with a body over the limit", nova_fault(&a, &[413]));
    // A declared length far past the limit is refused unread: no body follows at all.
    let mut declared = nova_headers(w.h);
    declared.insert("content-length", HeaderValue::from_static("99999999999"));
    let a = raw(&w.small, "POST", &format!("/v2.1/images/{id}/metadata"), &declared, b"").await;
    failures.check("nova POST declaring 99999999999 bytes", nova_fault(&a, &[413]));
    let mut declared = alliance_headers(&e);
    declared.insert("content-length", HeaderValue::from_static("99999999999"));
    let a = raw(&w.small, "POST", "/images", &declared, b"").await;
    failures.check("alliance POST declaring 99999999999 bytes", alliance_error(&a, &[413]));
    // Exactly at the limit is fine: the image is simply not there.
    let body = json!({"metadata": {"k": "v"}}).to_string();
    let at_limit = format!("{body}{}", " ".repeat(SMALL_LIMIT as usize - body.len()));
    let a = w.nova(&w.small, "POST", &format!("/v2.1/images/{id}/metadata"), Some(chunked(at_limit.clone()))).await;
    failures.check("nova at the limit", nova_fault(&a, &[404]));
    let body = json!({"image": {"min_ram": 1}}).to_string();
    let at_limit = format!("{body}{}", " ".repeat(SMALL_LIMIT as usize - body.len()));
    let a = w.alliance(&w.small, &e, "PATCH", &format!("/images/{id}"), Some(chunked(at_limit))).await;
    failures.check("alliance at the limit", alliance_error(&a, &[404]));
    failures.assert_none();
    assert!(w.h.owned_image_ids(&e).await.is_empty(), "nothing was created");
    w.still_serving(&w.small).await;
}

#[tokio::test]
async fn huge_headers_and_urls_are_4xx_never_5xx() {
    let w = world();
    let e = env();
    let big = "a".repeat(100 * 1024);
    let want: &[u16] = &[400, 414, 431];
    let mut failures = Failures::default();
    // One 100 KB header: an unknown one, and one the gateway forwards to Glance.
    for header in ["x-junk", "x-auth-token", "x-openstack-request-id", "openstack-api-version"] {
        let value = if header == "openstack-api-version" { format!("compute 2.{big}") } else { big.clone() };
        let mut headers = nova_headers(w.h);
        headers.insert(HeaderName::from_static(header), value.parse().unwrap());
        let a = raw(&w.gw, "GET", "/v2.1/images?limit=1", &headers, b"").await;
        failures.check(format!("nova, 100 KB {header}"), client_error(&a, want));
        let mut headers = alliance_headers(&e);
        headers.insert(HeaderName::from_static(header), value.parse().unwrap());
        let a = raw(&w.gw, "GET", "/images", &headers, b"").await;
        failures.check(format!("alliance, 100 KB {header}"), client_error(&a, want));
    }
    // 100 KB over many headers.
    let mut headers = nova_headers(w.h);
    for i in 0..200 {
        headers.insert(
            HeaderName::from_bytes(format!("x-junk-{i}").as_bytes()).unwrap(),
            "b".repeat(500).parse().unwrap(),
        );
    }
    let a = raw(&w.gw, "GET", "/v2.1/images?limit=1", &headers, b"").await;
    failures.check("nova, 200 headers of 500 bytes", client_error(&a, want));
    // 100 KB URLs: in the path and in the query, of each dialect.
    for target in [
        format!("/v2.1/images/{big}"),
        format!("/v2.1/images?name={big}"),
        format!("/v2.1/images/detail?property-{big}=x"),
        format!("/images/{big}"),
        format!("/images?name={big}"),
    ] {
        let headers = if target.starts_with("/v2.1") { nova_headers(w.h) } else { alliance_headers(&e) };
        let a = raw(&w.gw, "GET", &target, &headers, b"").await;
        failures.check(format!("GET {}... ({} bytes)", &target[..24], target.len()), client_error(&a, want));
    }
    failures.assert_none();
    w.still_serving(&w.gw).await;
}

#[tokio::test]
async fn encoded_query_values_reach_glance_as_one_value() {
    let w = world();
    let g = w.glance();
    let u = uuid::Uuid::new_v4().simple().to_string();
    // Names that would add or change Glance parameters if the gateway passed them unencoded.
    let names: Vec<String> = ["a&owner=b", "c=d", "e%26f", "g+h", "i;j", "k#l", "m&limit=1", "n&name=o"]
        .iter()
        .map(|n| format!("{u}-{n}"))
        .collect();
    let mut ids = Vec::new();
    for name in &names {
        ids.push(g.create(json!({"name": name})).await["id"].as_str().unwrap().to_owned());
    }
    // Decoys a smuggled parameter would find instead.
    for decoy in ["a", "e&f", "g h", "m", "n", "o"] {
        g.create(json!({"name": format!("{u}-{decoy}")})).await;
    }
    let key = format!("{u}-k&name={u}-a");
    let with_key = g.create(json!({"name": format!("{u}-by-key"), key.clone(): "v"})).await;
    let with_key = with_key["id"].as_str().unwrap().to_owned();
    let project = w.h.project.clone();
    let mut failures = Failures::default();
    for (name, id) in names.iter().zip(&ids) {
        let want = [id.clone()];
        for path in ["/v2.1/images", "/v2.1/images/detail"] {
            let a = w.nova(&w.gw, "GET", &format!("{path}?name={}", enc(name)), None).await;
            failures.check(format!("nova {path} name={name}"), lists(&a, &want));
        }
        let a = w.alliance(&w.gw, &project, "GET", &format!("/images?name={}", enc(name)), None).await;
        failures.check(format!("alliance list name={name}"), lists(&a, &want));
        // And by name in the path, where the name becomes a Glance `name=eq:` filter.
        let a = w.alliance(&w.gw, &project, "GET", &format!("/images/{}", enc(name)), None).await;
        if a.status != 200 || a.json()["id"] != json!(id) {
            failures.check(format!("alliance show by name {name}"), Err(format!("{}: {}", a.status, cut(&a.text))));
        }
    }
    // In a property filter's key.
    let want = [with_key.clone()];
    let a = w.nova(&w.gw, "GET", &format!("/v2.1/images?property-{}=v", enc(&key)), None).await;
    failures.check(format!("nova property-{key}"), lists(&a, &want));
    let a = w.alliance(&w.gw, &project, "GET", &format!("/images?property-{}=v", enc(&key)), None).await;
    failures.check(format!("alliance property-{key}"), lists(&a, &want));
    // In values Glance checks: a marker or a date with a parameter glued on is no marker or
    // date at all (smuggled, `sort_dir`/`owner` would apply and the call succeed).
    for query in [
        format!("marker={}", enc(&format!("{}&sort_dir=asc", ids[0]))),
        format!("changes-since={}", enc("2000-01-01T00:00:00Z&owner=x")),
    ] {
        let a = w.nova(&w.gw, "GET", &format!("/v2.1/images?{query}"), None).await;
        failures.check(format!("nova {query}"), nova_fault(&a, &[400]));
    }
    failures.assert_none();
    w.still_serving(&w.gw).await;
}

#[tokio::test]
async fn odd_path_segments_are_4xx() {
    let w = world();
    let g = w.glance();
    // An image of the caller's own project, which a path that climbs out could reach.
    let victim = g.create(json!({"name": "victim"})).await["id"].as_str().unwrap().to_owned();
    let project = w.h.project.clone();
    let mut failures = Failures::default();
    let nova_paths = [
        "/v2.1/images/..".to_owned(),
        "/v2.1/images/.".to_owned(),
        "/v2.1/images/%2e%2e".to_owned(),
        "/v2.1/images/%2E%2E/metadata".to_owned(),
        "/v2.1/%2e%2e/images".to_owned(),
        "/v2.1/images/a%00b".to_owned(),
        "/v2.1/images/%00".to_owned(),
        "/v2.1/images/%FF".to_owned(),
        "/v2.1/images/%C0%AE%C0%AE".to_owned(),
        "/v2.1/images/%2Fetc%2Fpasswd".to_owned(),
        "/v2.1/images/x/metadata/%00".to_owned(),
        "/v2.1/images/x/metadata/%FF".to_owned(),
        "/v2.1/images/%0D%0AX-Injected:%20yes".to_owned(),
        format!("/v2.1/images/..%2F{victim}"),
        format!("/v2.1/images/.%2F{victim}"),
        format!("/v2.1/images/x%2F..%2F{victim}"),
        format!("/v2.1/images/{victim}%00"),
        format!("/v2.1/images/{victim}/..%2Fmetadata"),
    ];
    for path in &nova_paths {
        for method in ["GET", "DELETE"] {
            let a = raw(&w.gw, method, path, &nova_headers(w.h), b"").await;
            failures.check(format!("nova {method} {path}"), nova_not_found(&a));
        }
    }
    let alliance_paths = [
        "/images/..".to_owned(),
        "/images/.".to_owned(),
        "/images/%2e%2e".to_owned(),
        "/images/%2Fetc".to_owned(),
        "/images/a%00b".to_owned(),
        "/images/%FF".to_owned(),
        "/images/%C0%AE%C0%AE".to_owned(),
        "/images/..%2F..%2Fv2%2Fimages".to_owned(),
        "/images//x".to_owned(),
        "/images/x/y".to_owned(),
        "/images/%0D%0AX-Injected:%20yes".to_owned(),
        format!("/images/..%2F{victim}"),
        format!("/images/.%2F{victim}"),
        format!("/images/{victim}%00"),
        format!("/images/{victim}/.."),
    ];
    for path in &alliance_paths {
        for method in ["GET", "DELETE"] {
            let a = raw(&w.gw, method, path, &alliance_headers(&project), b"").await;
            failures.check(format!("alliance {method} {path}"), alliance_error(&a, &[400, 404]));
        }
    }
    failures.assert_none();
    assert_eq!(g.get(&victim).await["id"], json!(victim), "the image is still there");
    w.still_serving(&w.gw).await;
}

#[tokio::test]
async fn metadata_with_100k_keys_is_refused_without_stalling_others() {
    let w = world();
    let id = w.glance().create(json!({"name": "many keys", "os_distro": "x"})).await["id"].as_str().unwrap().to_owned();
    let keys = |root: &str| {
        let items: Vec<String> = (0..100_000).map(|i| format!("\"k{i:06}\":\"\"")).collect();
        format!("{{\"{root}\":{{{}}}}}", items.join(","))
    };
    let (metadata, meta, image) = (keys("metadata"), keys("meta"), keys("image"));
    let largest = [&metadata, &meta, &image].iter().map(|b| b.len()).max().unwrap_or_default();
    // Just under the limit of this gateway.
    let big = w.h.gateway(|c| {
        with_alliance(c);
        c.limits.body_limit_bytes = largest as u64 + 16;
    });
    let e = env();
    let hostile = async {
        let mut failures = Failures::default();
        let merge = format!("/v2.1/images/{id}/metadata");
        let item = format!("/v2.1/images/{id}/metadata/k000000");
        let (a, b, c, d) = tokio::join!(
            w.nova(&big, "POST", &merge, Some(fixed(metadata.clone()))),
            w.nova(&big, "PUT", &merge, Some(chunked(metadata.clone()))),
            w.nova(&big, "PUT", &item, Some(fixed(meta.clone()))),
            w.alliance(&big, &e, "POST", "/images", Some(fixed(image.clone()))),
        );
        failures.check("nova POST metadata, 100k keys", nova_fault(&a, &[403, 413]));
        failures.check("nova PUT metadata, 100k keys", nova_fault(&b, &[403, 413]));
        failures.check("nova PUT metadata item, 100k keys", nova_fault(&c, &[400, 403, 413]));
        failures.check("alliance POST, 100k fields", alliance_error(&d, &[400, 413]));
        failures
    };
    let (failures, good, good_elsewhere) = tokio::join!(hostile, w.good_calls(&big), w.good_calls(&w.gw));
    failures.assert_none();
    good.unwrap();
    good_elsewhere.unwrap();
    // The image is untouched.
    let image = w.glance().get(&id).await;
    assert!(image.get("k000000").is_none() && image["os_distro"] == "x", "{image}");
    assert!(w.h.owned_image_ids(&e).await.is_empty(), "nothing was created");
    w.still_serving(&big).await;
}
