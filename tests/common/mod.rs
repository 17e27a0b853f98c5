//! Test harness: a Glance (real or embedded) and gateways in front of it, on loopback.
//!
//! With `IG_TEST_GLANCE_URL` set (the test script starts a real Glance 33 and sets it), the
//! tests run against that Glance; otherwise against the embedded store served on an ephemeral
//! port. The same tests run in both cases, so any difference between the two fails a test.
//!
//! Servers live on one background runtime shared by every test of a binary: each `#[tokio::test]`
//! has a runtime of its own, and a server spawned on one would die with it.
#![allow(dead_code)] // each test binary uses part of the harness

pub mod pki;
pub mod process;
pub mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use image_gateway::app::App;
use image_gateway::config::{Config, EmbeddedIdentity, IdentityMode, NamespaceConfig, TrustedCaller};
use image_gateway::layers::metrics::Metrics;
use image_gateway::server::{listener, Lifecycle};
use image_gateway::tls::server::ServerTls;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};

/// The configuration the tests start from: the defaults, except that the test itself is the
/// auth layer in front (its identity headers are believed from loopback, and the in-memory
/// store takes them). The tests of trust itself start from `Config::default()`.
pub fn test_config() -> Config {
    let mut config = Config { identity_proxies: vec!["127.0.0.0/8".into()], ..Default::default() };
    config.glance.embedded_identity = EmbeddedIdentity::Headers;
    config
}

/// Callers on loopback (the tests) trusted to act for any environment without a token.
pub fn loopback_callers() -> Vec<TrustedCaller> {
    vec![TrustedCaller { networks: vec!["127.0.0.0/8".into()], ..Default::default() }]
}

/// An Alliance namespace on `glance.url` (or the in-memory store) whose loopback callers act
/// through identity headers.
pub fn trusted_headers_namespace() -> NamespaceConfig {
    NamespaceConfig {
        identity: IdentityMode::TrustedHeaders,
        trusted_callers: loopback_callers(),
        ..Default::default()
    }
}

/// An in-memory store that takes identity from headers, as [`test_config`]'s.
pub fn test_store() -> image_gateway::glance::embedded::Store {
    image_gateway::glance::embedded::Store::with_identity(EmbeddedIdentity::Headers)
}

pub struct Gateway {
    pub base: String,
    pub metrics: Arc<Metrics>,
    /// Its server runs until this is dropped.
    _served: Served,
}

pub struct Harness {
    pub glance_url: String,
    pub real_glance: bool,
    pub project: String,
    runtime: tokio::runtime::Runtime,
}

static HARNESS: OnceLock<Harness> = OnceLock::new();

impl Harness {
    pub fn get() -> &'static Harness {
        HARNESS.get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            let (glance_url, real_glance) = match std::env::var("IG_TEST_GLANCE_URL") {
                Ok(url) if !url.is_empty() => (url, true),
                _ => {
                    let addr = block_on(&runtime, serve_router(image_gateway::glance::embedded::router(test_store())));
                    (format!("http://{addr}"), false)
                }
            };
            // A project of our own, so images of other tests or runs never show up.
            let project = uuid::Uuid::new_v4().simple().to_string();
            Harness { glance_url, real_glance, project, runtime }
        })
    }

    /// Starts a gateway in front of this harness's Glance; `tweak` adjusts its configuration.
    pub fn gateway(&self, tweak: impl FnOnce(&mut Config)) -> Gateway {
        let mut config = test_config();
        config.glance.url = Some(self.glance_url.parse().unwrap());
        tweak(&mut config);
        // The gateway's own server, with its limits, as the binary runs it.
        let served = self.block_on(serve_config(config));
        Gateway { base: format!("http://{}", served.addr), metrics: served.metrics.clone(), _served: served }
    }

    pub fn block_on<F: std::future::Future + Send>(&self, f: F) -> F::Output
    where
        F::Output: Send,
    {
        block_on(&self.runtime, f)
    }

    /// Identity headers of a plain member of the test project (Glance trusts them in the
    /// test setup, and the gateway forwards them).
    pub fn member(&self) -> HeaderMap {
        self.identity("member,reader")
    }

    /// Ids of the images project `env` owns in Glance itself (as its member). Owned, not
    /// seen: a shared Glance also lists other projects' public images to it.
    pub async fn owned_image_ids(&self, env: &str) -> Vec<String> {
        let mut headers = self.member();
        headers.insert("x-project-id", env.parse().unwrap());
        let url = format!("{}/v2/images?limit=1000&owner={env}", self.glance_url);
        let a = send(client().get(url).headers(headers)).await;
        a.json()["images"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect()
    }

    pub fn admin(&self) -> HeaderMap {
        self.identity("admin,member,reader")
    }

    fn identity(&self, roles: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-identity-status", HeaderValue::from_static("Confirmed"));
        h.insert("x-project-id", HeaderValue::from_str(&self.project).unwrap());
        h.insert("x-user-id", HeaderValue::from_static("tester"));
        h.insert("x-roles", HeaderValue::from_str(roles).unwrap());
        h.insert("x-auth-token", HeaderValue::from_static("not-a-real-token"));
        h
    }
}

/// An in-memory store (its router) whose `project` lists some 8 MiB of images at
/// `/v2.1/images/detail`: more than the sockets (and HTTP/2 windows) on the way hold.
pub async fn store_with_a_large_list(project: &str) -> axum::Router {
    use tower::ServiceExt as _;
    let store = image_gateway::glance::embedded::router(test_store());
    let filler = "z".repeat(200);
    for i in 0..2000 {
        let mut image = json!({"name": format!("big-{i}")});
        for p in 0..20 {
            image[format!("p{p}")] = json!(filler);
        }
        let request = http::Request::post("/v2/images")
            .header("content-type", "application/json")
            .header("x-identity-status", "Confirmed")
            .header("x-project-id", project)
            .header("x-roles", "member,reader")
            .body(axum::body::Body::from(image.to_string()))
            .unwrap();
        assert_eq!(store.clone().oneshot(request).await.unwrap().status(), 201);
    }
    store
}

/// A gateway served by its own accept loop (`server::listener`, with its limits) on the
/// calling test's runtime, in front of the embedded store unless `tweak` sets `glance.url`: on
/// a paused clock its deadlines and the test's keep one time.
pub struct Served {
    pub addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub lifecycle: Arc<Lifecycle>,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub stopped: tokio::task::JoinHandle<()>,
}

pub async fn serve_here(tweak: impl FnOnce(&mut Config)) -> Served {
    let mut config = test_config();
    tweak(&mut config);
    serve_config(config).await
}

/// As [`serve_here`], with a whole configuration.
pub async fn serve_config(config: Config) -> Served {
    serve_store(config, None).await
}

/// As [`serve_config`], in front of `store` (an embedded store's router) when `glance.url` is
/// unset.
pub async fn serve_store(config: Config, store: Option<axum::Router>) -> Served {
    config.validate("test").unwrap();
    let limits = config.server.clone();
    let metrics = Arc::new(Metrics::new());
    let tls = limits.tls.as_ref().map(|tls| ServerTls::load(tls, metrics.clone()).unwrap());
    let app = Arc::new(App::load(config, metrics.clone(), store).unwrap());
    let lifecycle = Arc::new(Lifecycle::default());
    let router = image_gateway::server::router(app, lifecycle.clone());
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (m, l) = (metrics.clone(), lifecycle.clone());
    let stopped = tokio::spawn(async move {
        let shutdown = async {
            let _ = stop_rx.await;
        };
        listener::serve(tcp, tls, router, &limits, m, l, shutdown).await;
    });
    Served { addr, metrics, lifecycle, stop: Some(stop), stopped }
}

impl Served {
    pub async fn connect(&self) -> tokio::net::TcpStream {
        tokio::net::TcpStream::connect(self.addr).await.unwrap()
    }

    /// The value of one series of the gateway's metrics.
    pub fn metric(&self, series: &str) -> f64 {
        metric(&self.metrics.render(), series).parse().unwrap()
    }

    pub fn closed(&self, reason: &str) -> f64 {
        self.metric(&format!("image_gateway_connections_closed_total{{reason=\"{reason}\"}}"))
    }

    /// Polls one series until `done` holds for it (at most 10 s): for what the gateway does on
    /// its own time, such as reloading a renewed certificate.
    pub async fn wait_for(&self, series: &str, done: impl Fn(f64) -> bool) -> f64 {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let value = self.metric(series);
            if done(value) {
                return value;
            }
            assert!(tokio::time::Instant::now() < deadline, "{series} stayed at {value}");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

/// The value of one series (`name{labels}`) in a Prometheus text page.
pub fn metric(text: &str, series: &str) -> String {
    let line = text.lines().find(|l| l.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')));
    line.and_then(|l| l.rsplit(' ').next()).unwrap_or_else(|| panic!("no {series} in:\n{text}")).to_owned()
}

/// Runs `f` on the shared runtime from any context, a test's own runtime included (where a
/// direct `block_on` would panic).
fn block_on<F: std::future::Future + Send>(runtime: &tokio::runtime::Runtime, f: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|s| s.spawn(|| runtime.block_on(f)).join().expect("harness task panicked"))
}

/// Serves a stand-in for another service (the embedded Glance) as axum serves it.
async fn serve_router(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await.unwrap() });
    addr
}

/// Sends `GET <path>` byte for byte (no URL normalisation) and returns the status code.
pub fn raw_get(base: &str, path: &str, headers: &HeaderMap) -> u16 {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap()));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {answer:?}"))
}

pub fn client() -> reqwest::Client {
    image_gateway::install_crypto_provider();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    /// Why the body could not be read whole (a streamed answer cut short); `text` is then empty.
    pub cut: Option<String>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn send(req: reqwest::RequestBuilder) -> Answer {
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let (text, cut) = match res.text().await {
        Ok(text) => (text, None),
        Err(e) => (String::new(), Some(format!("{e:?}"))),
    };
    Answer { status, headers, text, cut }
}

/// Direct Glance calls for fixtures.
pub struct GlanceFixtures<'a> {
    pub h: &'a Harness,
    pub http: reqwest::Client,
}

impl GlanceFixtures<'_> {
    pub async fn create(&self, body: Value) -> Value {
        let a =
            send(self.http.post(format!("{}/v2/images", self.h.glance_url)).headers(self.h.admin()).json(&body)).await;
        assert_eq!(a.status, 201, "create {body}: {}", a.text);
        a.json()
    }

    pub async fn upload(&self, id: &str, bytes: Vec<u8>) {
        let a = send(
            self.http
                .put(format!("{}/v2/images/{id}/file", self.h.glance_url))
                .headers(self.h.admin())
                .header("content-type", "application/octet-stream")
                .body(bytes),
        )
        .await;
        assert_eq!(a.status, 204, "upload: {}", a.text);
    }

    pub async fn deactivate(&self, id: &str) {
        let a = send(
            self.http.post(format!("{}/v2/images/{id}/actions/deactivate", self.h.glance_url)).headers(self.h.admin()),
        )
        .await;
        assert_eq!(a.status, 204, "deactivate: {}", a.text);
    }

    pub async fn get(&self, id: &str) -> Value {
        let a = send(self.http.get(format!("{}/v2/images/{id}", self.h.glance_url)).headers(self.h.admin())).await;
        assert_eq!(a.status, 200, "get: {}", a.text);
        a.json()
    }

    /// An active raw image holding `size` bytes.
    pub async fn active(&self, mut body: Value, size: usize) -> Value {
        body["disk_format"] = json!("raw");
        body["container_format"] = json!("bare");
        let image = self.create(body).await;
        let id = image["id"].as_str().unwrap().to_owned();
        self.upload(&id, vec![7u8; size]).await;
        self.get(&id).await
    }
}

/// Collects every failing case of a table, so one run reports them all.
#[derive(Default)]
pub struct Failures(Vec<String>);

impl Failures {
    pub fn check(&mut self, case: impl std::fmt::Display, result: Result<(), String>) {
        if let Err(e) = result {
            self.0.push(format!("{case}: {e}"));
        }
    }

    pub fn assert_none(self) {
        assert!(self.0.is_empty(), "{} failing case(s):\n{}", self.0.len(), self.0.join("\n"));
    }
}

/// Glance's base (core) image properties (reference §3.1); every other key is a custom one.
pub const GLANCE_BASE_PROPERTIES: &[&str] = &[
    "id",
    "name",
    "status",
    "visibility",
    "protected",
    "os_hidden",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "owner",
    "size",
    "virtual_size",
    "container_format",
    "disk_format",
    "created_at",
    "updated_at",
    "tags",
    "direct_url",
    "min_ram",
    "min_disk",
    "self",
    "file",
    "stores",
    "schema",
    "locations",
];

/// What a client uploading a large body saw: the answer it read, and how reading and writing
/// ended.
#[derive(Debug)]
pub struct Upload {
    pub answer: Vec<u8>,
    pub read_error: Option<std::io::Error>,
    pub write_error: Option<std::io::Error>,
    pub sent: usize,
}

impl Upload {
    /// The client sent its whole body and read a whole answer of `status`, in the fault shape
    /// `fault`, then the end of the connection: never a reset. (A client that sends its whole
    /// body before it reads, as most do, gives up at the first failed write.)
    pub fn assert_answered(&self, status: u16, fault: &str) {
        let text = String::from_utf8_lossy(&self.answer);
        let summary = format!(
            "sent {} bytes, write: {:?}, read: {:?}, answer: {text}",
            self.sent, self.write_error, self.read_error
        );
        assert!(self.write_error.is_none(), "the body could not be sent whole: {summary}");
        assert!(self.read_error.is_none(), "the answer could not be read whole: {summary}");
        assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{summary}");
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no whole head: {summary}"));
        let length: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
            .unwrap_or_else(|| panic!("no length: {summary}"));
        assert_eq!(body.len(), length, "{summary}");
        let fault_body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(fault_body[fault]["code"], status, "{summary}");
    }
}

/// POSTs a `total`-byte JSON body to `path` (declared, or chunked) in 64 KiB pieces while
/// another thread reads the answer: a client uploading an image. Blocking, so that it runs the
/// same against the binary and in a test's `spawn_blocking`.
pub fn upload_while_reading(addr: &str, path: &str, chunked: bool, total: usize) -> Upload {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    stream.set_write_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let framing = if chunked { "Transfer-Encoding: chunked".to_owned() } else { format!("Content-Length: {total}") };
    let head = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut reader = stream.try_clone().unwrap();
    let read = std::thread::spawn(move || {
        let mut answer = Vec::new();
        let error = reader.read_to_end(&mut answer).err();
        (answer, error)
    });
    let piece = vec![b' '; 64 << 10];
    let (mut sent, mut write_error) = (0, None);
    while sent < total && write_error.is_none() {
        let n = piece.len().min(total - sent);
        let written = if chunked {
            stream
                .write_all(format!("{n:x}\r\n").as_bytes())
                .and_then(|()| stream.write_all(&piece[..n]))
                .and_then(|()| stream.write_all(b"\r\n"))
        } else {
            stream.write_all(&piece[..n])
        };
        match written {
            Ok(()) => sent += n,
            Err(e) => write_error = Some(e),
        }
    }
    if chunked && write_error.is_none() {
        write_error = stream.write_all(b"0\r\n\r\n").err();
    }
    let (answer, read_error) = read.join().unwrap();
    Upload { answer, read_error, write_error, sent }
}
