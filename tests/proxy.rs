//! The gateway as a reverse proxy: passthrough to Nova and Glance, forwarded headers, Location
//! rewriting, streaming of image bytes, timeouts of a stalled upstream, and links behind
//! trusted proxies.

mod common;

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Router;
use common::{client, send, GlanceFixtures, Harness};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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

/// Bytes of each piece of the `/trickle` answer, and how many pieces.
const PIECE: usize = 1000;
const PIECES: usize = 8;

/// The idle timeout of the gateways in front of [`slow_upstream`].
const IDLE: Duration = Duration::from_millis(500);

/// A gateway whose Glance is [`slow_upstream`], run in-process on the test's own runtime, so
/// that on a paused clock its timers, the upstream's and the test's all keep one time.
async fn behind_slow_upstream() -> Router {
    let upstream = slow_upstream().await;
    let mut config = image_gateway::config::Config::default();
    config.glance.url = Some(upstream.parse().unwrap());
    config.glance.timeout_secs = IDLE.as_secs_f64();
    let metrics = std::sync::Arc::new(image_gateway::layers::metrics::Metrics::new());
    let app = image_gateway::app::App::load(config, metrics, None).unwrap();
    image_gateway::server::router(std::sync::Arc::new(app), Default::default())
}

/// A raw upstream that misbehaves in time, by path: `/hang` never answers; `/stall` sends a
/// head and 10 of 100 bytes, then nothing; `/trickle` sends its body in pieces 150 ms apart;
/// `/upload` reads a chunked upload to its end, then answers 201.
async fn slow_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let path = String::from_utf8_lossy(&head).split(' ').nth(1).unwrap_or_default().to_owned();
                match path.as_str() {
                    "/stall" => {
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789").await;
                    }
                    "/upload" => {
                        while !head.ends_with(b"0\r\n\r\n") {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        let _ = stream.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n").await;
                    }
                    "/trickle" => {
                        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", PIECE * PIECES);
                        let _ = stream.write_all(head.as_bytes()).await;
                        for _ in 0..PIECES {
                            tokio::time::sleep(Duration::from_millis(150)).await;
                            let _ = stream.write_all(&[b'x'; PIECE]).await;
                        }
                    }
                    _ => {}
                }
                std::future::pending::<()>().await;
            });
        }
    });
    url
}

/// Sends `request` through `gateway`; the answer's status, and its body or why it broke off,
/// with the time each took.
async fn through(gateway: &Router, request: http::Request<axum::body::Body>) -> (u16, Result<Bytes, String>, Duration) {
    let started = tokio::time::Instant::now();
    let response = tower::ServiceExt::oneshot(gateway.clone(), request).await.unwrap();
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.map_err(|e| e.to_string());
    (status, body, started.elapsed())
}

fn get(path: &str) -> http::Request<axum::body::Body> {
    http::Request::get(format!("/image{path}")).body(axum::body::Body::empty()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_stalled_upstream_times_out_but_a_slow_one_streams() {
    let gw = behind_slow_upstream().await;

    // No head within the idle timeout: 504, as Glance's own errors are shaped, at the timeout.
    let (status, body, took) = through(&gw, get("/hang")).await;
    assert_eq!((status, took), (504, IDLE));
    assert_eq!(serde_json::from_slice::<Value>(&body.unwrap()).unwrap()["code"], "504 Gateway Timeout");

    // A head, then silence: the body ends in an error once idle for the timeout.
    let (status, body, took) = through(&gw, get("/stall")).await;
    assert_eq!(status, 200);
    assert!(body.is_err(), "a body cut short must not look complete");
    assert_eq!(took, IDLE);

    // 1.2 s in all, longer than the idle timeout, but never idle for it: all of it arrives.
    let (status, body, took) = through(&gw, get("/trickle")).await;
    assert_eq!((status, body.map(|b| b.len())), (200, Ok(PIECE * PIECES)));
    assert_eq!(took, Duration::from_millis(150) * PIECES as u32);
}

/// An upload's pieces, 150 ms apart, `then` more (1.2 s in all), or one piece and then silence.
fn pieces(then: bool) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold(0, move |sent| async move {
        match sent {
            0 => Some((Ok::<_, std::io::Error>(Bytes::from_static(&[b'x'; PIECE])), 1)),
            n if n < PIECES && then => {
                tokio::time::sleep(Duration::from_millis(150)).await;
                Some((Ok(Bytes::from_static(&[b'x'; PIECE])), n + 1))
            }
            n if n < PIECES => std::future::pending().await,
            _ => None,
        }
    })
}

#[tokio::test(start_paused = true)]
async fn an_upload_may_take_longer_than_the_idle_timeout_while_it_moves() {
    let gw = behind_slow_upstream().await;
    let upload = |then| http::Request::put("/image/upload").body(axum::body::Body::from_stream(pieces(then))).unwrap();
    let (status, _, took) = through(&gw, upload(true)).await;
    assert_eq!((status, took), (201, Duration::from_millis(150) * (PIECES as u32 - 1)));

    // A stalled upload is given up once it has not moved for the idle timeout: within twice it.
    let (status, _, took) = through(&gw, upload(false)).await;
    assert_eq!(status, 504);
    assert!(took > IDLE && took <= 2 * IDLE, "{took:?}");
}

/// The client's stall, seen first by the server's body idle deadline, is the client's: a 408,
/// at that deadline (the gateway's own server, on this test's paused clock).
#[tokio::test(start_paused = true)]
async fn an_upload_the_client_stops_sending_is_a_408() {
    let upstream = slow_upstream().await;
    let served = common::serve_here(|c| {
        c.glance.url = Some(upstream.parse().unwrap());
        c.glance.timeout_secs = 10.0;
        c.server.body_idle_timeout_secs = 0.5;
    })
    .await;
    let started = tokio::time::Instant::now();
    let url = format!("http://{}/image/upload", served.addr);
    let a = send(client().put(url).body(reqwest::Body::wrap_stream(pieces(false)))).await;
    assert_eq!(a.status, 408, "{}", a.text);
    assert_eq!(a.json()["code"], "408 Request Timeout", "{}", a.text);
    assert_eq!(started.elapsed(), Duration::from_millis(500));
}

#[tokio::test]
async fn an_upstream_that_refuses_connections_is_a_503() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let gw = Harness::get().gateway(|c| c.glance.url = Some(format!("http://{closed}").parse().unwrap()));
    let a = send(client().get(format!("{}/image/v2/images", gw.base))).await;
    assert_eq!(a.status, 503, "{}", a.text);
    assert!(a.json()["message"].as_str().unwrap().contains("onnection refused"), "{}", a.text);
}
