//! The `image-gateway` command as a user runs it.

mod common;

use common::process::{as_member, Process};

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_image-gateway");

fn check(config: &Path, dir: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("check")
        .arg("--config")
        .arg(config)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout))
}

/// A copy of the shipped config and mappings in a scratch directory, to break on purpose.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::create_dir_all(dir.path().join("mappings")).unwrap();
    std::fs::copy(root.join("config/gateway.toml"), dir.path().join("config/gateway.toml")).unwrap();
    // The mapping files alone: the golden cases (mappings/tests/) have tests of their own.
    for mapping in std::fs::read_dir(root.join("mappings")).unwrap() {
        let mapping = mapping.unwrap();
        if !mapping.path().is_file() {
            continue;
        }
        let mapping = mapping.file_name();
        std::fs::copy(root.join("mappings").join(&mapping), dir.path().join("mappings").join(&mapping)).unwrap();
    }
    dir
}

#[test]
fn check_accepts_the_shipped_files() {
    let dir = scratch();
    let (ok, out) = check(&dir.path().join("config/gateway.toml"), dir.path());
    assert!(ok, "{out}");
}

#[test]
fn check_names_file_key_and_problem() {
    let cases = [
        ("mappings/nova.toml", "path = \"$.min_ram\"", "path = \"$.min_ram[\"", "view.image_detail.minRam.path"),
        ("mappings/nova.toml", "table = \"nova_status\"", "table = \"nova_state\"", "no table named `nova_state`"),
        (
            "mappings/nova.toml",
            "transform = \"utc_seconds\"",
            "transform = \"utc_second\"",
            "unknown built-in transform `utc_second`",
        ),
        (
            "mappings/nova.toml",
            "path = \"/images/detail\"",
            "path = \"/images/{other}\"",
            "overlaps route `nova.images.detail`",
        ),
        ("config/gateway.toml", "[glance]", "[glance]\nurl = \"not a url\"", "glance.url"),
        ("config/gateway.toml", "[nova]", "[nova]\nmystery = 1", "mystery"),
        (
            "config/gateway.toml",
            "[glance]",
            "[glance]\ntls.ca_file = \"absent-ca.pem\"",
            "glance.tls: ca_file: absent-ca.pem",
        ),
        ("config/gateway.toml", "max_connections = 1024", "max_connections = 0", "server.max_connections"),
        ("config/gateway.toml", "max_header_bytes = 65536", "max_header_bytes = 4096", "server.max_header_bytes"),
        (
            "mappings/alliance.toml",
            "type = \"integer\", min = 0 }",
            "type = \"int\", min = 0 }",
            "unknown variant `int`",
        ),
        ("mappings/alliance.toml", "request = \"image\"", "request = \"imagen\"", "no request schema named `imagen`"),
    ];
    for (file, from, to, needle) in cases {
        let dir = scratch();
        let path = dir.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} has no `{from}`");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        let (ok, out) = check(&dir.path().join("config/gateway.toml"), dir.path());
        assert!(!ok, "{file}: `{to}` was accepted");
        assert!(out.contains(needle), "{file}: `{needle}` not in: {out}");
        let shown = if file.starts_with("mappings") { file } else { "gateway.toml" };
        assert!(out.contains(shown), "{file}: file not named in: {out}");
    }
}

#[test]
fn environment_overrides_and_errors() {
    let dir = scratch();
    let config = dir.path().join("config/gateway.toml");
    let out = Command::new(BIN)
        .arg("check")
        .arg("--config")
        .arg(&config)
        .current_dir(dir.path())
        .env("IMAGE_GATEWAY_GLANCE__TIMEOUT_SECS", "-3")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("glance.timeout_secs"));
    let out = Command::new(BIN).arg("check").arg("--config").arg(dir.path().join("absent.toml")).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent.toml"));
}

async fn create_and_list(base: &str) -> (u16, serde_json::Value) {
    image_gateway::install_crypto_provider();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let created = as_member(client.post(format!("{base}/image/v2/images")))
        .header("x-auth-token", "secret-token-6f1c1bd8")
        .json(&serde_json::json!({"name": "demo", "min_ram": 64}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let r = as_member(client.get(format!("{base}/v2.1/images/detail")))
        .header("x-auth-token", "secret-token-6f1c1bd8")
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
}

/// `serve` with no configuration at all answers Nova calls from the embedded store, warns
/// about it, and keeps tokens out of its log even at debug level.
#[test]
fn serve_out_of_the_box() {
    let dir = tempfile::tempdir().unwrap();
    let served = Process::start(dir.path(), &[], &[("RUST_LOG", "debug")]);
    let (status, body) = served.block_on(create_and_list(&served.base));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["images"][0]["name"], "demo");
    assert_eq!(body["images"][0]["status"], "SAVING");
    // The access line is written as the response leaves; give the log reader a moment.
    let log = served.log_once(|log| log.contains("nova.images.detail"));
    assert!(log.contains("NO GLANCE CONFIGURED"), "{log}");
    assert!(log.contains("access_log") && log.contains("nova.images.detail"), "no access log line: {log}");
    assert!(!log.contains("secret-token-6f1c1bd8"), "a token reached the log: {log}");
    assert!(!log.contains("for development only"), "{log}");
}

/// An in-memory store that believes identity headers says so at start.
#[test]
fn an_in_memory_store_trusting_headers_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let served = Process::start(dir.path(), &[], &[("IMAGE_GATEWAY_GLANCE__EMBEDDED_IDENTITY", "headers")]);
    let log = served.log_once(|log| log.contains("for development only"));
    assert!(log.contains("X-Project-Id and X-Roles"), "{log}");
}

/// Renaming a field in a mapping file changes the answer, no rebuild involved.
#[test]
fn mapping_files_change_answers_without_recompiling() {
    let dir = scratch();
    let mapping = dir.path().join("mappings/nova.toml");
    let text = std::fs::read_to_string(&mapping).unwrap();
    let edited =
        text.replacen("\nminRam = {", "\nminimumRam = {", 1).replacen("queued = \"SAVING\"", "queued = \"QUEUED\"", 1);
    assert_ne!(edited, text);
    std::fs::write(&mapping, edited).unwrap();
    let served = Process::start(dir.path(), &["--config", "config/gateway.toml"], &[]);
    let (status, body) = served.block_on(create_and_list(&served.base));
    assert_eq!(status, 200, "{body}");
    let image = &body["images"][0];
    assert_eq!(image["minimumRam"], 64, "{image}");
    assert!(image.get("minRam").is_none(), "{image}");
    assert_eq!(image["status"], "QUEUED", "{image}");
}

/// SIGTERM: readiness fails at once while requests are still served for the drain delay, then
/// the process exits by itself.
#[test]
fn sigterm_drains_then_exits() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = Process::start(
        dir.path(),
        &[],
        &[("IMAGE_GATEWAY_SHUTDOWN__DRAIN_DELAY_SECS", "1.5"), ("IMAGE_GATEWAY_SHUTDOWN__GRACE_PERIOD_SECS", "2")],
    );
    let status = |path: &str| {
        let url = format!("{}{path}", served.base);
        served.block_on(async move {
            image_gateway::install_crypto_provider();
            let client = reqwest::Client::builder().no_proxy().build().unwrap();
            client.get(url).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
        })
    };
    assert_eq!(status("/readyz"), 200);
    let term = Command::new("kill").arg("-TERM").arg(served.child.id().to_string()).status().unwrap();
    assert!(term.success());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(status("/readyz"), 503, "readiness must fail as soon as draining starts");
    assert_eq!(status("/healthz"), 200, "still alive while draining");
    assert_eq!(status("/v2.1/images"), 200, "still serving while draining");
    let started = std::time::Instant::now();
    let exit = loop {
        if let Some(exit) = served.child.try_wait().unwrap() {
            break exit;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    assert!(served.log().contains("draining"), "{}", served.log());
}

/// SIGHUP reloads config and mappings; a broken set is rejected, counted, and the old one
/// keeps serving.
#[test]
fn sighup_reloads_and_rejects_a_broken_mapping() {
    let dir = scratch();
    let mapping = dir.path().join("mappings/nova.toml");
    let original = std::fs::read_to_string(&mapping).unwrap();
    // SIGHUP alone: the watch of the files would reload them too (tests/reload.rs).
    let served =
        Process::start(dir.path(), &["--config", "config/gateway.toml"], &[("IMAGE_GATEWAY_RELOAD__WATCH", "false")]);
    let hup =
        || assert!(Command::new("kill").arg("-HUP").arg(served.child.id().to_string()).status().unwrap().success());
    let get = |path: &str| {
        let url = format!("{}{path}", served.base);
        served.block_on(async move {
            image_gateway::install_crypto_provider();
            let client = reqwest::Client::builder().no_proxy().build().unwrap();
            let created = as_member(client.post(url.replace("/v2.1/images/detail", "/image/v2/images")))
                .json(&serde_json::json!({"name": "r"}))
                .send()
                .await
                .unwrap();
            assert_eq!(created.status(), 201);
            let r = as_member(client.get(&url)).send().await.unwrap();
            r.text().await.unwrap()
        })
    };
    assert!(get("/v2.1/images/detail").contains("\"minRam\""));

    // A broken mapping: rejected, and the old mapping keeps answering.
    std::fs::write(&mapping, original.replacen("table = \"nova_status\"", "table = \"missing\"", 1)).unwrap();
    hup();
    let log = served.log_once(|log| log.contains("reload rejected"));
    assert!(log.contains("reload rejected") && log.contains("no table named `missing`"), "{log}");
    assert!(get("/v2.1/images/detail").contains("\"minRam\""));

    // A good change: swapped in.
    std::fs::write(&mapping, original.replacen("\nminRam = {", "\nramMinimum = {", 1)).unwrap();
    hup();
    served.log_once(|log| log.contains("configuration reloaded"));
    let body = get("/v2.1/images/detail");
    assert!(body.contains("\"ramMinimum\"") && !body.contains("\"minRam\""), "{body}");
    // The in-memory store survived both reloads: three images, one per call of `get`.
    assert_eq!(body.matches("\"ramMinimum\"").count(), 3, "{body}");
    let text = served.block_on(async {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("{}/metrics", served.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(text.contains(r#"image_gateway_config_reloads_total{result="failure"} 1"#), "{text}");
    assert!(text.contains(r#"image_gateway_config_reloads_total{result="success"} 1"#), "{text}");
}

/// The server limits are wired from the configuration: a head cut at a 1 s header deadline
/// (well before the 10 s default), and a client over the body limit reading its 413 whole.
#[test]
fn server_limits_act_in_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let served = Process::start(
        dir.path(),
        &[],
        &[("IMAGE_GATEWAY_SERVER__HEADER_READ_TIMEOUT_SECS", "1"), ("IMAGE_GATEWAY_LIMITS__BODY_LIMIT_BYTES", "1024")],
    );
    let addr = served.base.trim_start_matches("http://").to_owned();

    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    slow.write_all(b"GET /v2.1/images HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = slow.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(matches!(closed, Ok(0)), "{closed:?} {rest:?}");
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(5), "closed after {waited:?}");

    let upload = common::upload_while_reading(
        &addr,
        "/v2.1/images/6f1c1bd8-4f0e-4b8a-9d7e-1d2b3c4d5e6f/metadata",
        false,
        50_000_000,
    );
    upload.assert_answered(413, "overLimit");

    let metrics = served.block_on(async {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        client.get(format!("{}/metrics", served.base)).send().await.unwrap().text().await.unwrap()
    });
    assert!(metrics.contains(r#"image_gateway_connections_closed_total{reason="header_timeout"} 1"#), "{metrics}");
}

/// With `tracing.otlp_endpoint`, the request's span and its Glance call's span reach the
/// collector (OTLP/HTTP, protobuf, at `/v1/traces`) in the client's trace, below the client's
/// span; what is still buffered is sent at SIGTERM.
#[test]
fn spans_are_exported_to_an_otlp_collector() {
    use std::sync::{Arc, Mutex};
    type Received = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;
    let received = Received::default();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let collector = runtime.block_on(async {
        let sink = received.clone();
        let router = axum::Router::new().fallback(move |request: axum::extract::Request| async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let kind = parts.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            sink.lock().unwrap().push((format!("{} {}", parts.method, parts.uri.path()), kind, body.to_vec()));
            "{}"
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{addr}")
    });
    let dir = tempfile::tempdir().unwrap();
    let mut served = Process::start(
        dir.path(),
        &[],
        &[
            ("IMAGE_GATEWAY_TRACING__OTLP_ENDPOINT", &collector),
            ("IMAGE_GATEWAY_SHUTDOWN__DRAIN_DELAY_SECS", "0.1"),
            ("IMAGE_GATEWAY_SHUTDOWN__GRACE_PERIOD_SECS", "1"),
        ],
    );
    let trace = uuid::Uuid::new_v4();
    let client_span = "00f067aa0ba902b7";
    let status = served.block_on(async {
        image_gateway::install_crypto_provider();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let r = as_member(client.get(format!("{}/v2.1/images/detail", served.base)))
            .header("traceparent", format!("00-{}-{client_span}-01", trace.simple()))
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    });
    assert_eq!(status, 200);
    assert!(Command::new("kill").arg("-TERM").arg(served.child.id().to_string()).status().unwrap().success());
    let started = std::time::Instant::now();
    while served.child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(10), "did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    let received = received.lock().unwrap().clone();
    assert!(!received.is_empty(), "nothing reached the collector: {}", served.log());
    let mut bytes = Vec::new();
    for (call, kind, body) in &received {
        assert_eq!(call, "POST /v1/traces");
        assert_eq!(kind, "application/x-protobuf");
        bytes.extend_from_slice(body);
    }
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    // Ids are raw bytes in OTLP's protobuf.
    assert!(has(trace.as_bytes()), "the client's trace id was not exported");
    let parent: Vec<u8> = (0..8).map(|i| u8::from_str_radix(&client_span[2 * i..2 * i + 2], 16).unwrap()).collect();
    assert!(has(&parent), "the request span's parent is not the client's span");
    assert!(has(b"glance GET /v2/images"), "no span for the call to Glance");
    assert!(has(b"image-gateway"), "no service name");
}
