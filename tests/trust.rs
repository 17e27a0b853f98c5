//! Trust stops at the edge: a client's identity headers reach no upstream (Glance through
//! either dialect, the Glance passthrough, the Nova passthrough) unless its peer is one of
//! `identity_proxies`; and the in-memory store believes no client's claim to be an admin.

mod common;

use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::response::IntoResponse;
use axum::{Json, Router};
use common::{client, send, serve_config};
use http::HeaderMap;
use image_gateway::config::Config;
use serde_json::json;

/// Headers a hostile client adds to claim someone else's project, and admin.
const FORGED: [(&str, &str); 9] = [
    ("x-roles", "admin"),
    ("x-project-id", "victim0project"),
    ("x-tenant-id", "victim0project"),
    ("x-user-id", "victim-user"),
    ("x-identity-status", "Confirmed"),
    ("x-service-roles", "service"),
    ("x-is-admin-project", "True"),
    // As a WSGI server reads it, X-Roles; and keystonemiddleware's system scope.
    ("x_roles", "admin"),
    ("openstack-system-scope", "all"),
];

/// A fake Glance (and Nova) that answers like an empty Glance and keeps every request's headers.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<(String, HeaderMap)>>>);

async fn record(State(seen): State<Recorder>, request: Request) -> impl IntoResponse {
    let path = request.uri().path().to_owned();
    seen.0.lock().unwrap().push((path.clone(), request.headers().clone()));
    match path.as_str() {
        "/v2/schemas/image" => Json(json!({"properties": {"id": {}, "name": {}, "status": {}}})).into_response(),
        _ => Json(json!({"images": [], "servers": []})).into_response(),
    }
}

async fn recorder() -> (Recorder, String) {
    let seen = Recorder::default();
    let router = Router::new().fallback(record).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (seen, format!("http://{addr}"))
}

/// Every kind of call, each with the forged headers and a token; what the upstream saw.
async fn calls_through(identity_proxies: &[&str]) -> Vec<(String, HeaderMap)> {
    let (seen, upstream) = recorder().await;
    let mut config =
        Config { identity_proxies: identity_proxies.iter().map(|p| p.to_string()).collect(), ..Default::default() };
    config.glance.url = Some(upstream.parse().unwrap());
    config.nova.upstream_url = Some(upstream.parse().unwrap());
    config.alliance.namespaces.insert("ns".into(), common::trusted_headers_namespace());
    let gw = serve_config(config).await;
    let base = format!("http://{}", gw.addr);
    for (path, alliance) in
        [("/v2.1/images/detail", false), ("/images", true), ("/image/v2/images", false), ("/v2.1/servers", false)]
    {
        let mut req = client().get(format!("{base}{path}"));
        req = if alliance {
            // A trusted caller without a token of its own: the gateway speaks for it.
            req.header("x-target-ns", "ns").header("x-environment-id", "env1")
        } else {
            req.header("x-auth-token", "client-token")
        };
        for (name, value) in FORGED {
            req = req.header(name, value);
        }
        let answer = send(req).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.text);
    }
    let seen = seen.0.lock().unwrap().clone();
    for path in ["/v2/images", "/v2.1/servers"] {
        assert!(seen.iter().any(|(p, _)| p == path), "no call reached {path}: {seen:?}");
    }
    seen
}

#[tokio::test]
async fn identity_headers_reach_no_upstream_from_an_ordinary_client() {
    for (path, headers) in calls_through(&[]).await {
        // The Alliance namespace's own identity headers: the environment the caller proved.
        let gateway_made = headers.get("x-project-id").is_some_and(|v| v == "env1");
        for (name, value) in FORGED {
            if gateway_made && name == "x-identity-status" {
                continue;
            }
            let got = headers.get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
            assert!(!got.iter().any(|v| v == value), "{path} got {name}: {got:?}");
        }
        if gateway_made {
            assert_eq!(headers["x-project-id"], "env1", "{path}");
            assert_eq!(headers["x-roles"], "member,reader", "{path}");
        } else {
            assert_eq!(headers.get("x-auth-token").map(|v| v.to_str().unwrap()), Some("client-token"), "{path}");
        }
    }
}

#[tokio::test]
async fn identity_headers_pass_from_identity_proxies() {
    let seen = calls_through(&["127.0.0.0/8"]).await;
    let nova = seen.iter().find(|(p, _)| p == "/v2.1/servers").unwrap();
    assert_eq!(nova.1["x-roles"], "admin");
    let glance = seen.iter().find(|(p, h)| p == "/v2/images" && h.get("x-auth-token").is_some()).unwrap();
    assert_eq!(glance.1["x-project-id"], "victim0project");
}

#[tokio::test]
async fn the_in_memory_store_believes_no_claim_of_admin() {
    // Even from an identity proxy: the store itself takes no identity from headers by default.
    let gw = serve_config(Config { identity_proxies: vec!["127.0.0.0/8".into()], ..Default::default() }).await;
    let base = format!("http://{}", gw.addr);
    let mut create = client()
        .post(format!("{base}/image/v2/images"))
        .json(&json!({"name": "mine", "visibility": "public", "disk_format": "raw", "container_format": "bare"}));
    for (name, value) in FORGED {
        create = create.header(name, value);
    }
    let refused = send(create).await;
    assert_eq!(refused.status, 403, "only an admin publicizes an image: {}", refused.text);
    let private = send(client().post(format!("{base}/image/v2/images")).json(&json!({"name": "mine"}))).await;
    assert_eq!(private.status, 201, "{}", private.text);
    assert_eq!(private.json()["owner"], image_gateway::glance::embedded::SINGLE_PROJECT);
    let listed = send(client().get(format!("{base}/v2.1/images")).header("x-project-id", "someone-else")).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json()["images"].as_array().map(Vec::len), Some(1), "{}", listed.text);
}
