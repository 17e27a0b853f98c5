//! Test harness: a Glance (real or embedded) and gateways in front of it, on loopback.
//!
//! With `IG_TEST_GLANCE_URL` set (the test script starts a real Glance 33 and sets it), the
//! tests run against that Glance; otherwise against the embedded store served on an ephemeral
//! port. The same tests run in both cases, so any difference between the two fails a test.
//!
//! Servers live on one background runtime shared by every test of a binary: each `#[tokio::test]`
//! has a runtime of its own, and a server spawned on one would die with it.
#![allow(dead_code)] // each test binary uses part of the harness

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use image_gateway::app::App;
use image_gateway::config::Config;
use image_gateway::layers::metrics::Metrics;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};

pub struct Gateway {
    pub base: String,
    pub metrics: Arc<Metrics>,
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
                    let addr = block_on(
                        &runtime,
                        serve_router(image_gateway::glance::embedded::router(
                            image_gateway::glance::embedded::Store::new(),
                        )),
                    );
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
        let mut config = Config::default();
        config.glance.url = Some(self.glance_url.parse().unwrap());
        tweak(&mut config);
        config.validate("test").unwrap();
        let metrics = Arc::new(Metrics::new());
        let app = Arc::new(App::load(config, metrics.clone(), None).unwrap());
        let router = image_gateway::server::router(app, Default::default());
        let addr = self.block_on(serve_router(router));
        Gateway { base: format!("http://{addr}"), metrics }
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

/// Runs `f` on the shared runtime from any context, a test's own runtime included (where a
/// direct `block_on` would panic).
fn block_on<F: std::future::Future + Send>(runtime: &tokio::runtime::Runtime, f: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|s| s.spawn(|| runtime.block_on(f)).join().expect("harness task panicked"))
}

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
