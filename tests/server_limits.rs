//! The server's limits (`[server]`), acting on raw TCP clients: the gateway's accept loop runs
//! in the test on a loopback listener, in front of the embedded store.
//!
//! Deadlines are tested on tokio's paused clock: when every task waits, tokio moves time on to
//! the next timer, so a 90 s timeout takes no time and is hit to the millisecond. Loopback
//! writes are ready at once, so no client byte is still on its way when time moves.

mod common;

use common::{serve_here, Served};

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, sleep_until, timeout, Instant};

const NOVA_METADATA: &str = "/v2.1/images/6f1c1bd8-4f0e-4b8a-9d7e-1d2b3c4d5e6f/metadata";

/// One answer read off a kept-alive connection: the head, and the body by its Content-Length.
async fn answer(stream: &mut TcpStream) -> (String, String) {
    let mut bytes = Vec::new();
    let mut buf = [0; 4096];
    let head_end = loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before a whole head: {:?}", String::from_utf8_lossy(&bytes));
        bytes.extend_from_slice(&buf[..n]);
        if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8(bytes[..head_end].to_vec()).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0);
    while bytes.len() < head_end + length {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before a whole body");
        bytes.extend_from_slice(&buf[..n]);
    }
    (head, String::from_utf8(bytes[head_end..head_end + length].to_vec()).unwrap())
}

/// Whether the server still holds the connection open, a millisecond from now.
async fn open(stream: &mut TcpStream) -> bool {
    let mut byte = [0; 1];
    timeout(Duration::from_millis(1), stream.read(&mut byte)).await.is_err()
}

/// Waits (at most `within`) for the server to close the connection; true if it did.
async fn closes(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0; 1024];
    loop {
        match timeout(within, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

async fn healthz(stream: &mut TcpStream) {
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let (head, body) = answer(stream).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(body, "ok\n");
}

#[tokio::test(start_paused = true)]
async fn a_head_that_never_ends_is_cut_at_the_header_deadline() {
    let served = serve_here(|_| {}).await;
    let mut client = served.connect().await;
    let started = Instant::now();
    client.write_all(b"GET /v2.1/images HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // Trickling more of the head does not move the deadline.
    for _ in 0..9 {
        sleep(Duration::from_secs(1)).await;
        client.write_all(b"X-Slow: 1\r\n").await.unwrap();
    }
    sleep_until(started + Duration::from_millis(9_990)).await;
    assert!(open(&mut client).await, "closed before the header deadline");
    assert!(closes(&mut client, Duration::from_secs(60)).await, "still open after the header deadline");
    assert_eq!(started.elapsed().as_secs(), 10, "{:?}", started.elapsed());
    assert_eq!(served.closed("header_timeout"), 1.0);
    assert_eq!(served.closed("idle_timeout"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn an_idle_kept_alive_connection_is_closed_at_the_keepalive_timeout_not_the_header_deadline() {
    let served = serve_here(|_| {}).await;
    let mut client = served.connect().await;
    healthz(&mut client).await;
    let idle_since = Instant::now();
    sleep(Duration::from_secs(30)).await;
    assert!(open(&mut client).await, "an idle connection was closed at the header deadline");
    assert!(idle_since.elapsed() > Duration::from_secs(10));
    // And it still serves; its idleness counts again from this answer.
    healthz(&mut client).await;
    let idle_since = Instant::now();
    sleep_until(idle_since + Duration::from_millis(89_990)).await;
    assert!(open(&mut client).await, "closed before the keep-alive timeout");
    assert!(closes(&mut client, Duration::from_secs(60)).await, "still open after the keep-alive timeout");
    assert_eq!(idle_since.elapsed().as_secs(), 90, "{:?}", idle_since.elapsed());
    assert_eq!(served.closed("idle_timeout"), 1.0);
    assert_eq!(served.closed("header_timeout"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_request_after_an_idle_wait_has_the_header_deadline_from_its_first_byte() {
    let served = serve_here(|c| c.server.header_read_timeout_secs = 5.0).await;
    let mut client = served.connect().await;
    healthz(&mut client).await;
    sleep(Duration::from_secs(60)).await;
    let started = Instant::now();
    client.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    sleep_until(started + Duration::from_millis(4_990)).await;
    assert!(open(&mut client).await, "closed before the header deadline");
    assert!(closes(&mut client, Duration::from_secs(60)).await);
    assert_eq!(started.elapsed().as_secs(), 5, "{:?}", started.elapsed());
    assert_eq!(served.closed("header_timeout"), 1.0);
    assert_eq!(served.closed("idle_timeout"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_body_is_a_408_at_the_body_idle_deadline() {
    let served = serve_here(|c| {
        c.alliance.namespaces.insert("ns".into(), common::trusted_headers_namespace());
    })
    .await;
    let requests = [
        (format!("POST {NOVA_METADATA} HTTP/1.1\r\nHost: x\r\n"), "computeFault"),
        ("POST /images HTTP/1.1\r\nHost: x\r\nX-Target-Ns: ns\r\nX-Environment-Id: e1\r\n".to_owned(), "error"),
    ];
    for (i, (request, fault)) in requests.into_iter().enumerate() {
        let mut client = served.connect().await;
        let head = format!("{request}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n");
        client.write_all(head.as_bytes()).await.unwrap();
        sleep(Duration::from_secs(20)).await;
        // A byte moves the deadline: it counts from the last one.
        client.write_all(b"{\"metadata\":").await.unwrap();
        let last_byte = Instant::now();
        let (head, body) = answer(&mut client).await;
        assert!(head.starts_with("HTTP/1.1 408 "), "{head}{body}");
        assert_eq!(last_byte.elapsed().as_secs(), 30, "{:?}", last_byte.elapsed());
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body[fault]["code"], 408, "{body}");
        assert!(closes(&mut client, Duration::from_secs(60)).await, "a connection with an unread body stays open");
        // The gateway lingers until the client closes too; then it counts the connection.
        drop(client);
        sleep(Duration::from_millis(1)).await;
        assert_eq!(served.closed("body_idle_timeout"), (i + 1) as f64);
    }
}

#[tokio::test(start_paused = true)]
async fn at_the_connection_limit_the_next_connection_waits_for_one_to_close() {
    let served = serve_here(|c| c.server.max_connections = 2).await;
    let mut first = served.connect().await;
    healthz(&mut first).await;
    assert!(!served.lifecycle.at_connection_limit());
    assert_eq!(served.metric("image_gateway_connection_limit_reached_total"), 0.0);
    let mut second = served.connect().await;
    healthz(&mut second).await;
    assert_eq!(served.metric("image_gateway_connections_open"), 2.0);
    assert!(served.lifecycle.at_connection_limit());
    assert_eq!(served.metric("image_gateway_connection_limit_reached_total"), 1.0);
    // Readiness says so: no client could connect after the probe.
    second.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let (head, body) = answer(&mut second).await;
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
    assert_eq!(body, "not ready: at server.max_connections\n");

    // The kernel completes the third connection, but the gateway does not take it.
    let mut third = served.connect().await;
    third.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut byte = [0; 1];
    assert!(timeout(Duration::from_secs(5), third.read(&mut byte)).await.is_err(), "served over the limit");
    assert!(served.lifecycle.at_connection_limit());
    assert_eq!(served.metric("image_gateway_connections_open"), 2.0);
    assert_eq!(served.metric("image_gateway_connection_limit_reached_total"), 1.0);

    drop(first);
    let (head, _) = answer(&mut third).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(served.metric("image_gateway_connections_open"), 2.0);
    // Still full: the same episode, counted once.
    sleep(Duration::from_millis(1)).await;
    assert!(served.lifecycle.at_connection_limit());
    assert_eq!(served.metric("image_gateway_connection_limit_reached_total"), 1.0);

    drop(second);
    drop(third);
    let mut fourth = served.connect().await;
    healthz(&mut fourth).await;
    assert!(!served.lifecycle.at_connection_limit());
    fourth.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert!(answer(&mut fourth).await.0.starts_with("HTTP/1.1 200 "));
    assert_eq!(served.metric("image_gateway_connections_open"), 1.0);
}

#[tokio::test(start_paused = true)]
async fn heads_over_the_limits_get_hyper_s_431() {
    let served = serve_here(|c| {
        c.server.max_header_bytes = 16 * 1024;
        c.server.max_headers = 20;
    })
    .await;
    let big = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(16 * 1024));
    let many = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n", "X-Many: 1\r\n".repeat(20));
    for (i, request) in [big, many].into_iter().enumerate() {
        let mut client = served.connect().await;
        client.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8(answer).unwrap();
        // hyper's own answer: no body, and the connection closed.
        let bare = "HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: ";
        assert!(answer.starts_with(bare) && answer.ends_with(" GMT\r\n\r\n"), "{answer:?}");
        assert_eq!(served.closed("headers_too_large"), (i + 1) as f64);
    }
    // Just under both limits is served.
    let mut client = served.connect().await;
    let fits = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n", "X-Many: 1\r\n".repeat(18));
    client.write_all(fits.as_bytes()).await.unwrap();
    let (head, _) = answer(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_idle_connections_and_lets_busy_ones_finish() {
    let mut served = serve_here(|_| {}).await;
    let mut idle = served.connect().await;
    healthz(&mut idle).await;
    let mut busy = served.connect().await;
    let head = format!("POST {NOVA_METADATA} HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\n{{\"metadata\":");
    busy.write_all(head.as_bytes()).await.unwrap();
    sleep(Duration::from_secs(1)).await;

    served.stop.take().unwrap().send(()).unwrap();
    assert!(closes(&mut idle, Duration::from_millis(1)).await, "an idle connection stays open at shutdown");
    // The listener is closed: nothing new is accepted.
    sleep(Duration::from_millis(1)).await;
    assert!(TcpStream::connect(served.addr).await.is_err(), "still accepting after shutdown");
    assert!(!served.stopped.is_finished(), "stopped with a request in flight");

    busy.write_all(b"{}}").await.unwrap();
    let (head, _) = answer(&mut busy).await;
    assert!(head.starts_with("HTTP/1.1 404 ") && head.contains("connection: close"), "{head}");
    timeout(Duration::from_secs(1), &mut served.stopped).await.unwrap().unwrap();
}

/// The client's view of [`common::upload_while_reading`] against a small body limit.
async fn over_the_limit(served: &Served, chunked: bool) -> common::Upload {
    let addr = served.addr.to_string();
    tokio::task::spawn_blocking(move || common::upload_while_reading(&addr, NOVA_METADATA, chunked, 50_000_000))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_the_body_limit_reads_its_413() {
    let served = serve_here(|c| c.limits.body_limit_bytes = 1024).await;
    for (i, chunked) in [false, true].into_iter().enumerate() {
        let upload = over_the_limit(&served, chunked).await;
        upload.assert_answered(413, "overLimit");
        // Counted once the client has closed its side too.
        let counted = async {
            while served.closed("lingering_close") < (i + 1) as f64 {
                sleep(Duration::from_millis(10)).await;
            }
        };
        timeout(Duration::from_secs(5), counted).await.expect("the lingering close is not counted");
    }
}

/// A client that asks for a large list and reads nothing of it is cut off at
/// `server.send_timeout_secs`, and its admission place comes back: readers that stall cannot
/// hold the lists, or the memory behind them, of everyone else.
#[tokio::test(start_paused = true)]
async fn a_client_that_reads_nothing_of_its_answer_is_cut_off_at_the_send_deadline() {
    let project = "0123456789abcdef0123456789abcdef";
    let store = common::store_with_a_large_list(project).await;
    let mut config = common::test_config();
    config.limits.max_heavy_in_flight = 1;
    config.server.send_timeout_secs = 7.0;
    let served = common::serve_store(config, Some(store)).await;
    let mut reader = served.connect().await;
    let request = format!(
        "GET /v2.1/images/detail HTTP/1.1\r\nHost: x\r\nX-Identity-Status: Confirmed\r\nX-Project-Id: {project}\r\nX-Roles: member,reader\r\n\r\n"
    );
    reader.write_all(request.as_bytes()).await.unwrap();
    let until_full = async {
        while served.metric("image_gateway_heavy_requests_in_flight") < 1.0 {
            sleep(Duration::from_millis(1)).await;
        }
    };
    timeout(Duration::from_secs(60), until_full).await.expect("the list never started");
    // While it is stuck, the next list is refused: its place is taken.
    let mut other = served.connect().await;
    other.write_all(request.as_bytes()).await.unwrap();
    let (head, _) = answer(&mut other).await;
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
    let started = Instant::now();
    let cut = async {
        while served.closed("send_timeout") < 1.0 {
            sleep(Duration::from_millis(100)).await;
        }
    };
    timeout(Duration::from_secs(600), cut).await.expect("a reader that reads nothing is never cut off");
    assert!(started.elapsed() <= Duration::from_secs(8), "{:?}", started.elapsed());
    assert_eq!(served.metric("image_gateway_heavy_requests_in_flight"), 0.0, "its place came back");
}
