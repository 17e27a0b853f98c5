//! The gateway's Keystone tokens, against a fake Keystone and a fake Glance that accepts only
//! the token it is told to (and the fake users' own): caching, renewal before expiry, one retry
//! after a 401, an unreachable Keystone; and the proof an Alliance caller must bring.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use common::{client, send, Harness};
use image_gateway::config::{Config, Credentials, IdentityMode, NamespaceConfig, Secret, TrustedCaller};
use serde_json::json;

const PROJECT: &str = "0123456789abcdef0123456789abcdef";

#[derive(Clone, Default)]
struct Fakes {
    issued: Arc<AtomicUsize>,
    /// The one token the fake Glance accepts.
    valid: Arc<Mutex<String>>,
    lists: Arc<AtomicUsize>,
    /// Every request the fake Glance got, whatever it was.
    calls: Arc<AtomicUsize>,
}

async fn issue(State(f): State<Fakes>, Json(body): Json<serde_json::Value>) -> impl IntoResponse {
    assert_eq!(body["auth"]["identity"]["password"]["user"]["password"], "s3cret");
    let n = f.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let expires = time::OffsetDateTime::now_utc() + time::Duration::minutes(10);
    let expires = expires.format(&time::format_description::well_known::Rfc3339).unwrap();
    let token = format!("tok-{n}");
    (
        StatusCode::CREATED,
        [("x-subject-token", token)],
        Json(json!({"token": {"expires_at": expires, "project": {"id": PROJECT}}})),
    )
}

/// Token validation: the fake users' tokens are `user-of-<project>`; anything else is unknown.
async fn validate(headers: HeaderMap) -> impl IntoResponse {
    let subject = headers.get("x-subject-token").and_then(|v| v.to_str().ok()).unwrap_or_default();
    match subject.strip_prefix(USER_TOKEN) {
        Some(project) => Json(json!({"token": {"project": {"id": project}}})).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

const USER_TOKEN: &str = "user-of-";

async fn list(State(f): State<Fakes>, headers: HeaderMap) -> impl IntoResponse {
    f.lists.fetch_add(1, Ordering::SeqCst);
    let token = headers.get("x-auth-token").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if token != *f.valid.lock().unwrap() && !token.starts_with(USER_TOKEN) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "The request you have made requires authentication."})),
        )
            .into_response();
    }
    Json(json!({"images": []})).into_response()
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

fn configure(c: &mut Config, keystone: &str, glance: &str, renew_before: f64) {
    c.alliance.namespaces.insert(
        "ns".into(),
        NamespaceConfig {
            glance_url: Some(glance.parse().unwrap()),
            identity: IdentityMode::GatewayCredentials,
            trusted_callers: common::loopback_callers(),
            ..Default::default()
        },
    );
    c.keystone.url = Some(format!("{keystone}/v3").parse().unwrap());
    c.keystone.renew_before_secs = Some(renew_before);
    let creds =
        Credentials { username: Some("svc".into()), password: Some(Secret::new("s3cret")), ..Default::default() };
    c.keystone.environments.insert(PROJECT.into(), creds);
}

/// Starts the fakes (on the harness runtime, so they outlive this test's own runtime).
fn fakes() -> (Fakes, String, String) {
    let f = Fakes::default();
    *f.valid.lock().unwrap() = "tok-1".into();
    let keystone = Router::new().route("/v3/auth/tokens", post(issue).get(validate)).with_state(f.clone());
    let schema = json!({"properties": {"id": {}, "name": {}, "status": {}}});
    let counted = f.calls.clone();
    let glance = Router::new()
        .route("/v2/images", get(list))
        .route("/v2/schemas/image", get(move || async move { Json(schema.clone()) }))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(f.clone())
        .layer(tower::util::MapRequestLayer::new(move |request: axum::extract::Request| {
            counted.fetch_add(1, Ordering::SeqCst);
            request
        }));
    let h = Harness::get();
    let (k, g) = h.block_on(async { (serve(keystone).await, serve(glance).await) });
    (f, k, g)
}

async fn list_images(base: &str) -> u16 {
    let req = client().get(format!("{base}/images")).header("x-target-ns", "ns").header("x-environment-id", PROJECT);
    send(req).await.status
}

#[tokio::test]
async fn callers_without_proof_are_refused_before_glance() {
    let (f, keystone, glance) = fakes();
    let namespace = |identity, networks: &[&str], environments: &[&str]| NamespaceConfig {
        glance_url: Some(glance.parse().unwrap()),
        identity,
        trusted_callers: if networks.is_empty() {
            Vec::new()
        } else {
            vec![TrustedCaller {
                networks: networks.iter().map(|n| n.to_string()).collect(),
                environments: environments.iter().map(|e| e.to_string()).collect(),
                ..Default::default()
            }]
        },
        ..Default::default()
    };
    let gw = Harness::get().gateway(|c| {
        configure(c, &keystone, &glance, 60.0);
        c.alliance.namespaces.insert("strict".into(), namespace(IdentityMode::Token, &[], &[]));
        let elsewhere = namespace(IdentityMode::GatewayCredentials, &["192.0.2.0/24"], &[]);
        c.alliance.namespaces.insert("elsewhere".into(), elsewhere);
        let listed = namespace(IdentityMode::GatewayCredentials, &["127.0.0.0/8"], &["another0project"]);
        c.alliance.namespaces.insert("listed".into(), listed);
        c.alliance.namespaces.insert("headers".into(), namespace(IdentityMode::TrustedHeaders, &["192.0.2.0/24"], &[]));
    });
    let call = |method: &str, path: &str, ns: &str, token: Option<String>| {
        let mut req = client()
            .request(method.parse().unwrap(), format!("{}{path}", gw.base))
            .header("x-target-ns", ns)
            .header("x-environment-id", PROJECT)
            .json(&json!({"image": {"name": "x"}}));
        if let Some(token) = token {
            req = req.header("x-auth-token", token);
        }
        send(req)
    };
    let other = format!("{USER_TOKEN}0123456789abcdef0123456789abcdee");
    let routes = [
        ("GET", "/images"),
        ("POST", "/images"),
        ("GET", "/images/cirros"),
        ("PATCH", "/images/cirros"),
        ("PUT", "/images/cirros"),
        ("DELETE", "/images/cirros"),
    ];
    for (method, path) in routes {
        for (ns, token, want) in [
            // Naming an environment proves nothing.
            ("strict", None, 401),
            ("elsewhere", None, 401),
            ("headers", None, 401),
            // A caller trusted for other environments only.
            ("listed", None, 403),
            // A token Keystone does not know, and one of another project.
            ("strict", Some("forged".to_owned()), 401),
            ("strict", Some(other.clone()), 403),
            ("listed", Some(other.clone()), 403),
        ] {
            let a = call(method, path, ns, token.clone()).await;
            assert_eq!(a.status, want, "{method} {path} in {ns} with {token:?}: {}", a.text);
            assert_eq!(a.json()["error"]["code"], json!(want), "{}", a.text);
        }
    }
    assert_eq!(f.calls.load(Ordering::SeqCst), 0, "a refused call reached Glance");
    assert_eq!(f.issued.load(Ordering::SeqCst), 0, "a refused call used the gateway's credentials");
    // The proofs that do work: the environment's own token, and a trusted caller.
    let own = call("GET", "/images", "strict", Some(format!("{USER_TOKEN}{PROJECT}"))).await;
    assert_eq!(own.status, 200, "{}", own.text);
    assert!(f.calls.load(Ordering::SeqCst) > 0, "the count counts");
    assert_eq!(f.issued.load(Ordering::SeqCst), 0, "a client's token is used as is");
    assert_eq!(list_images(&gw.base).await, 200);
    assert_eq!(f.issued.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn tokens_are_cached_and_refreshed_once_after_a_401() {
    let (f, keystone, glance) = fakes();
    let gw = Harness::get().gateway(|c| configure(c, &keystone, &glance, 60.0));
    for _ in 0..5 {
        assert_eq!(list_images(&gw.base).await, 200);
    }
    assert_eq!(f.issued.load(Ordering::SeqCst), 1, "one token for five calls");

    // Glance stops accepting the cached token: one refresh, one retry, and the call succeeds.
    *f.valid.lock().unwrap() = "tok-2".into();
    let lists_before = f.lists.load(Ordering::SeqCst);
    assert_eq!(list_images(&gw.base).await, 200);
    assert_eq!(f.issued.load(Ordering::SeqCst), 2);
    assert_eq!(f.lists.load(Ordering::SeqCst) - lists_before, 2, "the call was tried twice");

    // A token Glance never accepts: the client gets the 401, after exactly one retry.
    *f.valid.lock().unwrap() = "never".into();
    let lists_before = f.lists.load(Ordering::SeqCst);
    assert_eq!(list_images(&gw.base).await, 401);
    assert_eq!(f.lists.load(Ordering::SeqCst) - lists_before, 2);
}

#[tokio::test]
async fn tokens_are_renewed_before_they_expire() {
    let (f, keystone, glance) = fakes();
    // The fake's tokens live ten minutes; renewing an hour ahead means renewing every time.
    let gw = Harness::get().gateway(|c| configure(c, &keystone, &glance, 3600.0));
    *f.valid.lock().unwrap() = "tok-1".into();
    assert_eq!(list_images(&gw.base).await, 200);
    *f.valid.lock().unwrap() = "tok-2".into();
    let lists_before = f.lists.load(Ordering::SeqCst);
    assert_eq!(list_images(&gw.base).await, 200);
    assert_eq!(f.issued.load(Ordering::SeqCst), 2);
    assert_eq!(f.lists.load(Ordering::SeqCst) - lists_before, 1, "renewed before use, no 401 needed");
}

#[tokio::test]
async fn an_unreachable_keystone_is_a_503_and_secrets_stay_out_of_debug_output() {
    let (_, _, glance) = fakes();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mut shown = String::new();
    let gw = Harness::get().gateway(|c| {
        configure(c, &dead, &glance, 60.0);
        shown = format!("{c:?}");
    });
    assert_eq!(list_images(&gw.base).await, 503);
    assert!(!shown.contains("s3cret"), "a password reached Debug output");
}
