//! The gateway as a reverse proxy: passthrough to Nova and Glance, forwarded headers, Location
//! rewriting, streaming of image bytes, and links behind trusted proxies.

mod common;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Router;
use common::{client, send, GlanceFixtures, Harness};
use serde_json::{json, Value};

/// A fake Nova that answers every request with what it received.
async fn echo(request: Request) -> impl IntoResponse {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let headers: serde_json::Map<String, Value> =
        parts.headers.iter().map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or("?")))).collect();
    let host = parts.headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("").to_owned();
    let seen = json!({"method": parts.method.as_str(), "path": parts.uri.to_string(), "headers": headers, "body_len": body.len()});
    let location = format!("http://{host}/v2.1/servers/new-server");
    (StatusCode::ACCEPTED, [("location", location), ("keep-alive", "timeout=5".into())], axum::Json(seen))
}

fn fake_nova() -> String {
    let router = Router::new().fallback(echo);
    Harness::get().block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{addr}")
    })
}

#[tokio::test]
async fn unclaimed_compute_calls_reach_nova_with_proxy_headers() {
    let nova = fake_nova();
    let gw = Harness::get().gateway(|c| c.nova.upstream_url = Some(nova.parse().unwrap()));
    let a = send(
        client()
            .post(format!("{}/v2.1/servers?x=1", gw.base))
            .header("connection", "keep-alive, x-drop-me")
            .header("x-drop-me", "1")
            .header("x-auth-token", "tok")
            .header("x-forwarded-for", "192.0.2.1")
            .body(vec![b'x'; 3000]),
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let seen = a.json();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/v2.1/servers?x=1");
    assert_eq!(seen["body_len"], 3000);
    let h = &seen["headers"];
    assert_eq!(h["x-auth-token"], "tok");
    assert_eq!(h["x-forwarded-for"], "192.0.2.1, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], gw.base.trim_start_matches("http://"));
    assert!(h.get("x-drop-me").is_none() && h.get("connection").is_none(), "hop-by-hop headers passed: {h}");
    assert_eq!(
        a.header("location"),
        Some(format!("{}/v2.1/servers/new-server", gw.base).as_str()),
        "Location rewritten"
    );
    assert!(a.header("keep-alive").is_none());

    // Version documents and the root come from Nova too; image calls stay the gateway's.
    for path in ["/v2.1", "/v2.1/", "/", "/v2/flavors"] {
        let a = send(client().get(format!("{}{path}", gw.base))).await;
        assert_eq!(a.json()["path"], path, "{path}");
    }
    let a = send(client().get(format!("{}/v2.1/images", gw.base)).headers(Harness::get().member())).await;
    assert_eq!(a.status, 200);
    assert!(a.json().get("images").is_some(), "image calls are not forwarded: {}", a.text);
}

#[tokio::test]
async fn glance_api_streams_through_the_image_mount() {
    let h = Harness::get();
    let gw = h.gateway(|_| {});
    let g = GlanceFixtures { h, http: client() };
    let image = g.create(json!({"name": "streamed", "disk_format": "raw", "container_format": "bare"})).await;
    let id = image["id"].as_str().unwrap();
    let bytes: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i * 7 % 256) as u8).collect();
    // A chunked upload (no Content-Length) through the gateway.
    let stream = futures_util::stream::iter(
        bytes.chunks(64 * 1024).map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c))).collect::<Vec<_>>(),
    );
    let put = client()
        .put(format!("{}/image/v2/images/{id}/file", gw.base))
        .headers(h.admin())
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(stream));
    let a = send(put).await;
    assert_eq!(a.status, 204, "{}", a.text);
    let back = client().get(format!("{}/image/v2/images/{id}/file", gw.base)).headers(h.admin()).send().await.unwrap();
    assert_eq!(back.status().as_u16(), 200);
    let got = back.bytes().await.unwrap();
    assert!(got[..] == bytes[..], "downloaded bytes differ ({} bytes back)", got.len());
    // Glance's own JSON and errors pass through as Glance wrote them.
    let a = send(client().get(format!("{}/image/v2/images/{id}", gw.base)).headers(h.admin())).await;
    assert_eq!(a.json()["size"], 8 * 1024 * 1024);
    let a =
        send(client().get(format!("{}/image/v2/images/{}", gw.base, uuid::Uuid::new_v4())).headers(h.admin())).await;
    assert_eq!(a.status, 404);
}

#[tokio::test]
async fn forwarded_headers_decide_links_only_from_trusted_proxies() {
    let h = Harness::get();
    let trusting = h.gateway(|c| c.trusted_proxies = vec!["127.0.0.0/8".into()]);
    let wary = h.gateway(|_| {});
    let g = GlanceFixtures { h, http: client() };
    let image = g.create(json!({"name": "linked"})).await;
    let id = image["id"].as_str().unwrap();
    let ask = |base: &str| {
        client()
            .get(format!("{base}/v2.1/images/{id}"))
            .headers(h.member())
            .header("x-forwarded-host", "cloud.example.com")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-prefix", "/compute")
    };
    let links = send(ask(&trusting.base)).await.json()["image"]["links"].clone();
    assert_eq!(links[0]["href"], format!("https://cloud.example.com/compute/v2.1/images/{id}"));
    assert_eq!(links[1]["href"], format!("https://cloud.example.com/compute/images/{id}"));
    let links = send(ask(&wary.base)).await.json()["image"]["links"].clone();
    assert_eq!(links[0]["href"], format!("{}/v2.1/images/{id}", wary.base), "forged headers were believed");
}
