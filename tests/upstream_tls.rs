//! TLS to the upstreams with a private CA the tests make: Glance (and a namespace's Glance),
//! Keystone and the Nova passthrough.
//!
//! The ordinary tests put an in-process HTTPS server (tokio-rustls) in front of the embedded
//! store or a stand-in. The `#[ignore]`d ones put nginx terminating TLS in front of a real
//! Glance 33 and Keystone 30, as Kolla's haproxy does: `scripts/test.sh` starts those and runs
//! them with `IG_TEST_GLANCE_URL` and `IG_TEST_KEYSTONE_CREDENTIALS` set.

mod common;

use std::path::Path;

use axum::routing::get;
use common::pki::{Issued, Pki};
use common::process::Process;
use common::tls::{serve_tls, NginxFront};
use common::{client, send, serve_here, Answer, Harness};
use http::HeaderMap;
use serde_json::{json, Value};

/// A private CA with a server certificate for loopback and a client certificate for the
/// gateway, and another CA that vouches for neither.
struct Certificates {
    dir: tempfile::TempDir,
    ca: Pki,
    server: Issued,
    gateway: Issued,
    other_ca: Pki,
}

fn certificates() -> Certificates {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new(dir.path(), "cloud");
    let server = ca.server("upstream", &["127.0.0.1", "localhost"]);
    let gateway = ca.client("gateway", "image-gateway");
    let other_ca = Pki::new(dir.path(), "other");
    Certificates { dir, ca, server, gateway, other_ca }
}

/// The embedded store behind TLS, on the calling runtime.
async fn glance_behind_tls(certs: &Certificates, client_ca: Option<&Path>) -> url::Url {
    let addr = serve_tls(image_gateway::glance::embedded::router(common::test_store()), &certs.server, client_ca).await;
    format!("https://{addr}").parse().unwrap()
}

async fn call(base: &str, method: &str, path: &str, headers: HeaderMap, body: Option<Value>) -> Answer {
    let mut req = client().request(method.parse().unwrap(), format!("{base}{path}")).headers(headers);
    if let Some(body) = body {
        req = req.json(&body);
    }
    send(req).await
}

/// A Nova client's list, show and metadata write, and the Glance passthrough's create, read
/// and delete, all through `base`.
async fn nova_and_passthrough_work(base: &str, member: &HeaderMap) {
    let name = format!("over-tls-{}", uuid::Uuid::new_v4().simple());
    let created = call(base, "POST", "/image/v2/images", member.clone(), Some(json!({"name": name}))).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let list = call(base, "GET", "/v2.1/images", member.clone(), None).await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert!(list.text.contains(&id), "{}", list.text);
    let show = call(base, "GET", &format!("/v2.1/images/{id}"), member.clone(), None).await;
    assert_eq!((show.status, show.json()["image"]["name"].clone()), (200, json!(name)), "{}", show.text);
    let meta = json!({"metadata": {"tls_checked": "yes"}});
    let written = call(base, "POST", &format!("/v2.1/images/{id}/metadata"), member.clone(), Some(meta)).await;
    assert_eq!(written.status, 200, "{}", written.text);
    let read = call(base, "GET", &format!("/image/v2/images/{id}"), member.clone(), None).await;
    assert_eq!(read.json()["tls_checked"], "yes", "{}", read.text);
    let deleted = call(base, "DELETE", &format!("/image/v2/images/{id}"), member.clone(), None).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
}

/// What a failing TLS upstream looks like to clients: Nova's 502 fault, Glance's 502 on the
/// image mount, both saying what TLS said (`says`).
async fn nova_and_passthrough_fail(base: &str, member: &HeaderMap, says: &str) {
    let nova = call(base, "GET", "/v2.1/images", member.clone(), None).await;
    assert_eq!((nova.status, nova.json()["computeFault"]["code"].clone()), (502, json!(502)), "{}", nova.text);
    assert!(nova.text.contains(says), "{}", nova.text);
    let glance = call(base, "GET", "/image/v2/images", member.clone(), None).await;
    assert_eq!((glance.status, glance.json()["code"].clone()), (502, json!("502 Bad Gateway")), "{}", glance.text);
    assert!(glance.text.contains(says), "{}", glance.text);
}

#[tokio::test]
async fn glance_over_https_with_the_private_ca() {
    let certs = certificates();
    let glance = glance_behind_tls(&certs, None).await;
    let gw = serve_here(|c| {
        c.glance.url = Some(glance);
        c.glance.tls.ca_file = Some(certs.ca.ca());
    })
    .await;
    nova_and_passthrough_work(&format!("http://{}", gw.addr), &Harness::get().member()).await;
}

#[tokio::test]
async fn a_certificate_of_an_unknown_ca_is_a_502_and_counts_against_the_upstream() {
    let certs = certificates();
    let glance = glance_behind_tls(&certs, None).await;
    // The system's trust store (no ca_file), which knows nothing of the private CA.
    let gw = serve_here(|c| {
        c.glance.url = Some(glance);
        c.glance.circuit_breaker_failures = 3;
    })
    .await;
    let base = format!("http://{}", gw.addr);
    let member = Harness::get().member();
    nova_and_passthrough_fail(&base, &member, "invalid peer certificate").await;
    // Two failed calls of the Nova dialect's client, one of the passthrough's: the dialects'
    // client has its own breaker, and after three failures it stops trying.
    assert_eq!(call(&base, "GET", "/v2.1/images", member.clone(), None).await.status, 502);
    assert_eq!(call(&base, "GET", "/v2.1/images", member.clone(), None).await.status, 502);
    let open = call(&base, "GET", "/v2.1/images", member, None).await;
    assert_eq!(open.status, 503, "{}", open.text);
    assert!(open.header("retry-after").is_some(), "{open:?}");
}

#[tokio::test]
async fn mutual_tls_with_the_gateway_certificate() {
    let certs = certificates();
    let glance = glance_behind_tls(&certs, Some(&certs.ca.ca())).await;
    let member = Harness::get().member();
    let with_certificate = serve_here(|c| {
        c.glance.url = Some(glance.clone());
        c.glance.tls.ca_file = Some(certs.ca.ca());
        c.glance.tls.cert_file = Some(certs.gateway.cert.clone());
        c.glance.tls.key_file = Some(certs.gateway.key.clone());
    })
    .await;
    nova_and_passthrough_work(&format!("http://{}", with_certificate.addr), &member).await;
    // A certificate of another CA is refused as surely as none.
    let stranger = certs.other_ca.client("stranger", "image-gateway");
    for (cert, key) in [(None, None), (Some(stranger.cert), Some(stranger.key))] {
        let gw = serve_here(|c| {
            c.glance.url = Some(glance.clone());
            c.glance.tls.ca_file = Some(certs.ca.ca());
            c.glance.tls.cert_file = cert;
            c.glance.tls.key_file = key;
        })
        .await;
        nova_and_passthrough_fail(&format!("http://{}", gw.addr), &member, "TLS with the upstream failed").await;
    }
}

#[tokio::test]
async fn the_nova_passthrough_over_https() {
    let certs = certificates();
    let nova =
        axum::Router::new().fallback(|uri: http::Uri| async move { axum::Json(json!({"nova_saw": uri.path()})) });
    let nova = serve_tls(nova, &certs.server, None).await;
    let member = Harness::get().member();
    for (ca, status) in [(certs.ca.ca(), 200), (certs.other_ca.ca(), 502)] {
        let gw = serve_here(|c| {
            c.nova.upstream_url = Some(format!("https://{nova}").parse().unwrap());
            c.nova.upstream_tls.ca_file = Some(ca);
        })
        .await;
        let a = call(&format!("http://{}", gw.addr), "GET", "/v2.1/servers", member.clone(), None).await;
        assert_eq!(a.status, status, "{}", a.text);
        if status == 200 {
            assert_eq!(a.json()["nova_saw"], "/v2.1/servers");
        } else {
            assert!(a.text.contains("UnknownIssuer"), "{}", a.text);
        }
    }
}

#[tokio::test]
async fn keystone_over_https_validates_nova_tokens() {
    let certs = certificates();
    let project = Harness::get().project.clone();
    let answer = json!({"token": {"project": {"id": project}}});
    let keystone = axum::Router::new().route(
        "/v3/auth/tokens",
        get(move |headers: HeaderMap| async move {
            match headers.get("x-subject-token").and_then(|v| v.to_str().ok()) {
                Some("valid-token") => (http::StatusCode::OK, axum::Json(answer)),
                _ => (http::StatusCode::NOT_FOUND, axum::Json(json!({}))),
            }
        }),
    );
    let keystone = serve_tls(keystone, &certs.server, None).await;
    let with_token = |token: &'static str| {
        let mut member = Harness::get().member();
        member.insert("x-auth-token", http::HeaderValue::from_static(token));
        member
    };
    for (ca, valid, forged) in [(Some(certs.ca.ca()), 200, 401), (None, 503, 503)] {
        let gw = serve_here(|c| {
            c.keystone.url = Some(format!("https://{keystone}/v3").parse().unwrap());
            c.keystone.tls.ca_file = ca;
            c.keystone.validate_nova_tokens = true;
        })
        .await;
        let base = format!("http://{}", gw.addr);
        let a = call(&base, "GET", "/v2.1/images", with_token("valid-token"), None).await;
        assert_eq!(a.status, valid, "{}", a.text);
        assert_eq!(call(&base, "GET", "/v2.1/images", with_token("forged"), None).await.status, forged);
    }
}

#[tokio::test]
async fn the_http_clients_offer_h2_and_http1_by_alpn() {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    // Reads the client's hello, then hangs up.
    let offered = tokio::spawn(async move {
        let (stream, _) = tcp.accept().await.unwrap();
        let hello = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await.unwrap();
        hello.client_hello().alpn().map(|protocols| protocols.map(<[u8]>::to_vec).collect::<Vec<_>>())
    });
    let tls = image_gateway::tls::client::ClientTls::new("glance", &Default::default()).unwrap();
    let _ = tls.reqwest().build().unwrap().get(format!("https://{addr}/")).send().await;
    assert_eq!(offered.await.unwrap(), Some(vec![b"h2".to_vec(), b"http/1.1".to_vec()]));
}

/// The gateway binary in `dir` with `config` (TOML), in front of upstreams on the harness's
/// runtime.
fn gateway_process(dir: &Path, config: &str) -> Process {
    std::fs::write(dir.join("gateway.toml"), format!("identity_proxies = [\"127.0.0.0/8\"]\n{config}")).unwrap();
    Process::start(dir, &["--config", "gateway.toml"], &[])
}

/// The log line of a TLS failure with `upstream`, if there is one.
fn tls_failure_line<'a>(log: &'a str, upstream: &str, says: &str) -> Option<&'a str> {
    let upstream = format!("\"upstream\":\"{upstream}\"");
    log.lines().find(|l| l.contains("TLS with the upstream failed") && l.contains(&upstream) && l.contains(says))
}

/// The wrong CA for Glance and for a namespace's Glance: dialect-shaped 502s, and the log names
/// the upstream and what TLS said.
fn a_wrong_ca_is_logged_with_its_upstream(certs: &Certificates, glance: &str) {
    let other = certs.other_ca.ca();
    let gw = gateway_process(
        certs.dir.path(),
        &format!(
            "[glance]\nurl = \"{glance}\"\ntls.ca_file = \"{ca}\"\n\
             [alliance.namespaces.east]\nglance_url = \"{glance}\"\ntls.ca_file = \"{ca}\"\n\
             identity = \"trusted_headers\"\ntrusted_callers = [{{networks = [\"127.0.0.0/8\"]}}]\n",
            ca = other.display()
        ),
    );
    let member = Harness::get().member();
    gw.block_on(nova_and_passthrough_fail(&gw.base, &member, "UnknownIssuer"));
    // A trusted caller without a token of its own.
    let mut alliance = HeaderMap::new();
    alliance.insert("x-target-ns", http::HeaderValue::from_static("east"));
    alliance.insert("x-environment-id", Harness::get().project.parse().unwrap());
    let a = gw.block_on(call(&gw.base, "GET", "/images", alliance, None));
    assert_eq!(a.status, 502, "{}", a.text);
    let log = gw.log_once(|log| tls_failure_line(log, "glance/east", "UnknownIssuer").is_some());
    assert!(tls_failure_line(&log, "glance", "invalid peer certificate: UnknownIssuer").is_some(), "{log}");
    assert!(tls_failure_line(&log, "glance/east", "invalid peer certificate: UnknownIssuer").is_some(), "{log}");
    assert!(!log.contains("not-a-real-token"), "tokens are never logged: {log}");
}

/// `insecure = true`: any certificate is taken, and every start says so.
fn insecure_works_and_warns(certs: &Certificates, glance: &str) {
    let gw = gateway_process(certs.dir.path(), &format!("[glance]\nurl = \"{glance}\"\ntls.insecure = true\n"));
    let warned = |log: &str| {
        log.lines()
            .any(|l| l.contains("\"WARN\"") && l.contains("\"upstream\":\"glance\"") && l.contains("not verified"))
    };
    assert!(warned(&gw.log_once(warned)), "{}", gw.log());
    let a = gw.block_on(call(&gw.base, "GET", "/v2.1/images", Harness::get().member(), None));
    assert_eq!(a.status, 200, "{}", a.text);
}

#[test]
fn a_wrong_ca_is_logged_naming_the_upstream() {
    let certs = certificates();
    let h = Harness::get();
    let glance = h.block_on(glance_behind_tls(&certs, None));
    a_wrong_ca_is_logged_with_its_upstream(&certs, glance.as_str().trim_end_matches('/'));
}

#[test]
fn insecure_takes_any_certificate_and_warns_at_start() {
    let certs = certificates();
    let glance = Harness::get().block_on(glance_behind_tls(&certs, None));
    insecure_works_and_warns(&certs, glance.as_str().trim_end_matches('/'));
}

#[test]
fn a_wrong_ca_for_keystone_is_a_503_logged_as_keystone() {
    let certs = certificates();
    // Any server with the private CA's certificate: the handshake is all that happens.
    let keystone = Harness::get().block_on(glance_behind_tls(&certs, None));
    let gw = gateway_process(
        certs.dir.path(),
        &format!(
            "[keystone]\nurl = \"{keystone}v3\"\nvalidate_nova_tokens = true\ntls.ca_file = \"{}\"\n",
            certs.other_ca.ca().display()
        ),
    );
    let a = gw.block_on(call(&gw.base, "GET", "/v2.1/images", Harness::get().member(), None));
    assert_eq!((a.status, a.json()["serviceUnavailable"]["code"].clone()), (503, json!(503)), "{}", a.text);
    let log = gw.log_once(|log| tls_failure_line(log, "keystone", "UnknownIssuer").is_some());
    assert!(tls_failure_line(&log, "keystone", "invalid peer certificate: UnknownIssuer").is_some(), "{log}");
    assert!(!log.contains("not-a-real-token"), "tokens are never logged: {log}");
}

/// The real Glance of `IG_TEST_GLANCE_URL` behind nginx with the private CA's certificate.
fn real_glance_behind_nginx(certs: &Certificates, client_ca: Option<&Path>) -> NginxFront {
    let h = Harness::get();
    assert!(h.real_glance, "IG_TEST_GLANCE_URL: run through scripts/test.sh");
    NginxFront::start(certs.dir.path(), &h.glance_url, &certs.server, client_ca)
}

#[test]
#[ignore = "needs a real Glance and nginx: scripts/test.sh runs it"]
fn real_glance_behind_tls() {
    let certs = certificates();
    let front = real_glance_behind_nginx(&certs, None);
    let h = Harness::get();
    let gw = h.gateway(|c| {
        c.glance.url = Some(front.url.parse().unwrap());
        c.glance.tls.ca_file = Some(certs.ca.ca());
    });
    h.block_on(nova_and_passthrough_work(&gw.base, &h.member()));
    a_wrong_ca_is_logged_with_its_upstream(&certs, &front.url);
    insecure_works_and_warns(&certs, &front.url);
}

#[test]
#[ignore = "needs a real Glance and nginx: scripts/test.sh runs it"]
fn real_glance_behind_tls_asking_for_a_client_certificate() {
    let certs = certificates();
    let front = real_glance_behind_nginx(&certs, Some(&certs.ca.ca()));
    let h = Harness::get();
    let gw = h.gateway(|c| {
        c.glance.url = Some(front.url.parse().unwrap());
        c.glance.tls.ca_file = Some(certs.ca.ca());
        c.glance.tls.cert_file = Some(certs.gateway.cert.clone());
        c.glance.tls.key_file = Some(certs.gateway.key.clone());
    });
    h.block_on(nova_and_passthrough_work(&gw.base, &h.member()));
    // nginx lets the handshake through and answers 400 itself: Nova's fault for a Glance 4xx
    // it did not expect (500), carrying nginx's reason; Glance's mount passes nginx's 400 on.
    let gw = h.gateway(|c| {
        c.glance.url = Some(front.url.parse().unwrap());
        c.glance.tls.ca_file = Some(certs.ca.ca());
    });
    let nova = h.block_on(call(&gw.base, "GET", "/v2.1/images", h.member(), None));
    assert_eq!((nova.status, nova.json()["computeFault"]["code"].clone()), (500, json!(500)), "{}", nova.text);
    assert!(nova.text.contains("No required SSL certificate was sent"), "{}", nova.text);
    let glance = h.block_on(call(&gw.base, "GET", "/image/v2/images", h.member(), None));
    assert_eq!(glance.status, 400, "{}", glance.text);
    assert!(glance.text.contains("No required SSL certificate was sent"), "{}", glance.text);
}

#[test]
#[ignore = "needs a real Keystone and nginx: scripts/test.sh runs it"]
fn real_keystone_behind_tls() {
    let path = std::env::var("IG_TEST_KEYSTONE_CREDENTIALS").expect("IG_TEST_KEYSTONE_CREDENTIALS");
    let glance = std::env::var("IG_TEST_KEYSTONE_GLANCE_URL").expect("IG_TEST_KEYSTONE_GLANCE_URL");
    let creds: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let keystone: url::Url = creds["keystone_url"].as_str().unwrap().parse().unwrap();
    let certs = certificates();
    let front = NginxFront::start(certs.dir.path(), &keystone[..url::Position::BeforePath], &certs.server, None);
    let h = Harness::get();
    let gw = h.gateway(|c| {
        c.glance.url = Some(glance.parse().unwrap());
        c.keystone.url = Some(format!("{}{}", front.url, keystone.path()).parse().unwrap());
        c.keystone.tls.ca_file = Some(certs.ca.ca());
        c.keystone.validate_nova_tokens = true;
    });
    let project = creds["user_a"]["project_id"].as_str().unwrap().to_owned();
    let auth = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": creds["user_a"]["username"], "domain": {"name": "Default"}, "password": creds["user_a"]["password"]}}},
        "scope": {"project": {"id": project}}}});
    let tokens = format!("{}/auth/tokens", keystone.as_str().trim_end_matches('/'));
    let issued = h.block_on(async { client().post(tokens).json(&auth).send().await.unwrap() });
    let token = issued.headers()["x-subject-token"].to_str().unwrap().to_owned();
    let with = |token: &str| {
        let mut headers = HeaderMap::new();
        headers.insert("x-auth-token", token.parse().unwrap());
        headers
    };
    let a = h.block_on(call(&gw.base, "GET", &format!("/v2.1/{project}/images"), with(&token), None));
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(h.block_on(call(&gw.base, "GET", "/v2.1/images", with("forged"), None)).status, 401);
}
