//! HTTPS on the gateway's listener (`server.tls`): HTTP/1.1 and HTTP/2 by ALPN, mutual TLS (and
//! the Alliance trust it carries), certificates renewed on disk the way the kubelet updates a
//! mounted Secret, the handshake deadline, the server limits over TLS and HTTP/2, the drain,
//! and `check` on bad files. Certificates come from a private CA made by each test
//! (tests/common/pki.rs); the clients are reqwest with rustls, or hyper's and tokio-rustls's
//! own where the test needs the connection in hand.

mod common;

use common::pki::{Issued, Pki};
use common::{serve_here, Served};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::get;
use http_body_util::BodyExt as _;
use image_gateway::config::{Config, IdentityMode, ListenerTls, NamespaceConfig, TrustedCaller};
use image_gateway::layers::metrics::Metrics;
use image_gateway::public_url::OverTls;
use image_gateway::server::{listener, Lifecycle};
use image_gateway::tls::server::ServerTls;
use image_gateway::trust::ClientCertificate;
use reqwest::{Certificate, Identity, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant};

fn tls(server: &Issued) -> ListenerTls {
    ListenerTls {
        cert_file: server.cert.clone(),
        key_file: server.key.clone(),
        client_ca_file: None,
        require_client_certificate: false,
    }
}

/// A client trusting only `ca`, presenting `identity` if given.
fn client(ca: &Path, identity: Option<&Issued>) -> reqwest::ClientBuilder {
    image_gateway::install_crypto_provider();
    let ca = Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let builder = reqwest::Client::builder().tls_certs_only([ca]).tls_info(true).timeout(Duration::from_secs(10));
    match identity {
        Some(issued) => {
            let mut pem = std::fs::read(&issued.cert).unwrap();
            pem.extend(std::fs::read(&issued.key).unwrap());
            builder.identity(Identity::from_pem(&pem).unwrap())
        }
        None => builder,
    }
}

/// The DER of the certificate the server presented for `response`.
fn served_certificate(response: &reqwest::Response) -> Vec<u8> {
    let info = response.extensions().get::<reqwest::tls::TlsInfo>().expect("tls_info(true)");
    info.peer_certificate().expect("a server certificate").to_vec()
}

fn der(cert: &Path) -> Vec<u8> {
    image_gateway::tls::load_certs(cert).unwrap()[0].to_vec()
}

fn base(served: &Served) -> String {
    format!("https://{}", served.addr)
}

#[tokio::test]
async fn clients_reach_the_gateway_over_tls_with_http1_and_http2() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "gw");
    let server = pki.server("server", &["127.0.0.1"]);
    let served = serve_here(|c| c.server.tls = Some(tls(&server))).await;
    let base = base(&served);
    let identity = [("x-project-id", "p1"), ("x-roles", "member"), ("x-identity-status", "Confirmed")];

    for (client, version) in [
        (client(&pki.ca(), None).http1_only().build().unwrap(), Version::HTTP_11),
        (client(&pki.ca(), None).build().unwrap(), Version::HTTP_2),
    ] {
        let health = client.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!((health.status().as_u16(), health.version()), (200, version));
        assert_eq!(health.text().await.unwrap(), "ok\n");

        // An image in the embedded store, then Nova's list of it: its links are https.
        let mut create = client.post(format!("{base}/image/v2/images")).json(&serde_json::json!({"name": "tls"}));
        for (k, v) in identity {
            create = create.header(k, v);
        }
        let created = create.send().await.unwrap();
        assert_eq!((created.status().as_u16(), created.version()), (201, version));
        let mut list = client.get(format!("{base}/v2.1/images"));
        for (k, v) in identity {
            list = list.header(k, v);
        }
        let listed = list.send().await.unwrap();
        assert_eq!((listed.status().as_u16(), listed.version()), (200, version));
        let body: serde_json::Value = listed.json().await.unwrap();
        let href = body["images"][0]["links"][0]["href"].as_str().unwrap().to_owned();
        assert!(href.starts_with(&format!("{base}/v2.1/")), "{href} over {version:?}");
    }
    // A TCP health check (connect, close) is no failed handshake; plain HTTP on the TLS port is.
    drop(served.connect().await);
    let plain = reqwest::Client::new().get(format!("http://{}/healthz", served.addr)).send().await;
    assert!(plain.is_err(), "{plain:?}");
    served.wait_for("image_gateway_tls_handshake_failures_total", |n| n == 1.0).await;
    served.wait_for("image_gateway_connections_open", |n| n == 0.0).await;
    assert_eq!(served.metric("image_gateway_tls_handshake_failures_total"), 1.0);
}

/// What a request says about its connection: over TLS or not, and its client certificate.
async fn whoami(request: axum::extract::Request) -> String {
    let names = request.extensions().get::<ClientCertificate>().map(|c| c.names.join(","));
    format!("tls={} certificate={}", request.extensions().get::<OverTls>().is_some(), names.unwrap_or("none".into()))
}

/// The gateway's listener with `tls`, serving [`whoami`] alone.
async fn serve_whoami(tls: ListenerTls) -> (String, Arc<Metrics>, tokio::sync::oneshot::Sender<()>) {
    let mut config = Config::default();
    config.server.tls = Some(tls);
    config.validate("test").unwrap();
    let metrics = Arc::new(Metrics::new());
    let server_tls = ServerTls::load(config.server.tls.as_ref().unwrap(), metrics.clone()).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", tcp.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let m = metrics.clone();
    tokio::spawn(async move {
        let router = axum::Router::new().route("/whoami", get(whoami));
        let shutdown = async {
            let _ = stopped.await;
        };
        listener::serve(tcp, Some(server_tls), router, &config.server, m, Arc::new(Lifecycle::default()), shutdown)
            .await;
    });
    (base, metrics, stop)
}

#[tokio::test]
async fn mutual_tls_hands_the_verified_certificate_to_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "gw");
    let clients = Pki::new(dir.path(), "clients");
    let strangers = Pki::new(dir.path(), "strangers");
    let server = pki.server("server", &["127.0.0.1"]);
    let alice = clients.client("alice", "alice.example");
    let mallory = strangers.client("mallory", "alice.example");
    let optional = ListenerTls { client_ca_file: Some(clients.ca()), ..tls(&server) };
    let (base, metrics, _stop) = serve_whoami(optional.clone()).await;
    let url = format!("{base}/whoami");

    for http1 in [true, false] {
        let builder = client(&pki.ca(), Some(&alice));
        let with_cert = if http1 { builder.http1_only() } else { builder }.build().unwrap();
        for _ in 0..2 {
            let answer = with_cert.get(&url).send().await.unwrap().text().await.unwrap();
            assert_eq!(answer, "tls=true certificate=alice.example", "http1: {http1}");
        }
    }
    let without = client(&pki.ca(), None).build().unwrap();
    assert_eq!(without.get(&url).send().await.unwrap().text().await.unwrap(), "tls=true certificate=none");
    let failures = |m: &Metrics| common::metric(&m.render(), "image_gateway_tls_handshake_failures_total");
    assert_eq!(failures(&metrics), "0");
    let stranger = client(&pki.ca(), Some(&mallory)).build().unwrap();
    let refused = stranger.get(&url).send().await;
    assert!(refused.is_err(), "a certificate of another CA was accepted: {refused:?}");
    assert_eq!(failures(&metrics), "1");

    let required = ListenerTls { require_client_certificate: true, ..optional };
    let (base, metrics, _stop) = serve_whoami(required).await;
    let url = format!("{base}/whoami");
    let with_cert = client(&pki.ca(), Some(&alice)).build().unwrap();
    assert_eq!(with_cert.get(&url).send().await.unwrap().text().await.unwrap(), "tls=true certificate=alice.example");
    let refused = without.get(&url).send().await;
    assert!(refused.is_err(), "served without the required certificate: {refused:?}");
    assert_eq!(failures(&metrics), "1");
}

/// A Kubernetes Secret as the kubelet mounts it: `tls.crt` and `tls.key` are symlinks through
/// `..data`, itself a symlink to the directory of the current version, swapped atomically.
struct SecretMount {
    dir: PathBuf,
    versions: usize,
}

impl SecretMount {
    fn new(root: &Path, first: &Issued) -> SecretMount {
        let dir = root.join("mount");
        std::fs::create_dir(&dir).unwrap();
        let mut mount = SecretMount { dir, versions: 0 };
        mount.publish(&std::fs::read(&first.cert).unwrap(), &std::fs::read(&first.key).unwrap());
        for file in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{file}"), mount.dir.join(file)).unwrap();
        }
        mount
    }

    fn tls(&self) -> ListenerTls {
        ListenerTls {
            cert_file: self.dir.join("tls.crt"),
            key_file: self.dir.join("tls.key"),
            client_ca_file: None,
            require_client_certificate: false,
        }
    }

    /// Writes a new version beside the current one, then swaps `..data` to it in one rename.
    fn publish(&mut self, cert: &[u8], key: &[u8]) {
        self.versions += 1;
        let version = format!("..2026_12_02_10_00_{:02}.{}", self.versions, std::process::id());
        std::fs::create_dir(self.dir.join(&version)).unwrap();
        std::fs::write(self.dir.join(&version).join("tls.crt"), cert).unwrap();
        std::fs::write(self.dir.join(&version).join("tls.key"), key).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }

    fn renew(&mut self, issued: &Issued) {
        self.publish(&std::fs::read(&issued.cert).unwrap(), &std::fs::read(&issued.key).unwrap());
    }
}

const RELOADED: &str = "image_gateway_tls_certificate_reloads_total{result=\"success\"}";
const NOT_RELOADED: &str = "image_gateway_tls_certificate_reloads_total{result=\"failure\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_renewed_on_disk_under_load_is_served_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "gw");
    let first = pki.server("first", &["127.0.0.1"]);
    let renewed_until = time::macros::datetime!(2030-01-01 0:00 UTC);
    let second = pki.server_until("second", &["127.0.0.1"], renewed_until);
    let mut mount = SecretMount::new(dir.path(), &first);
    let served = serve_here(|c| c.server.tls = Some(mount.tls())).await;
    let url = format!("{}/v2.1/images", base(&served));
    let ca = pki.ca();
    let expiry =
        format!("image_gateway_tls_certificate_expiry_timestamp_seconds{{cert_file={:?}}}", mount.tls().cert_file);
    let default_until = rcgen::CertificateParams::default().not_after.unix_timestamp();
    assert_eq!(served.metric(&expiry), default_until as f64);

    // Clients on kept-alive connections (HTTP/1.1 and HTTP/2) and clients on a new
    // connection for every request, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for worker in 0..6 {
        let (stop, done, failed, url, ca) = (stop.clone(), done.clone(), failed.clone(), url.clone(), ca.clone());
        workers.push(tokio::spawn(async move {
            let kept = match worker % 3 {
                0 => Some(client(&ca, None).http1_only().build().unwrap()),
                1 => Some(client(&ca, None).build().unwrap()),
                _ => None,
            };
            while !stop.load(Ordering::Relaxed) {
                let fresh;
                let http = match &kept {
                    Some(kept) => kept,
                    None => {
                        fresh = client(&ca, None).pool_max_idle_per_host(0).build().unwrap();
                        &fresh
                    }
                };
                match http.get(&url).header("x-project-id", "p1").send().await {
                    Ok(r) if r.status() == 200 => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failed.lock().unwrap().push(format!("worker {worker}: {}", r.status())),
                    Err(e) => failed.lock().unwrap().push(format!("worker {worker}: {e:?}")),
                }
            }
        }));
    }
    let served_requests = |at_least: usize| {
        let done = done.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while done.load(Ordering::Relaxed) < at_least {
                assert!(Instant::now() < deadline, "only {} requests served", done.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    // A connection opened before the renewal keeps its certificate.
    let kept = client(&ca, None).http1_only().build().unwrap();
    let before = kept.get(&url).send().await.unwrap();
    assert_eq!(served_certificate(&before), der(&first.cert));
    served_requests(100).await;

    mount.renew(&second);
    served.wait_for(RELOADED, |n| n == 1.0).await;
    served_requests(done.load(Ordering::Relaxed) + 200).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(failed.lock().unwrap().as_slice(), &[] as &[String]);
    assert_eq!(served.metric(NOT_RELOADED), 0.0);

    let fresh = client(&ca, None).build().unwrap().get(&url).send().await.unwrap();
    assert_eq!(served_certificate(&fresh), der(&second.cert), "a new connection got the old certificate");
    let expiry =
        format!("image_gateway_tls_certificate_expiry_timestamp_seconds{{cert_file={:?}}}", mount.tls().cert_file);
    assert_eq!(served.metric(&expiry), renewed_until.unix_timestamp() as f64);
    let again = kept.get(&url).send().await.unwrap();
    assert_eq!(served_certificate(&again), der(&first.cert), "the kept-alive connection was not kept");
    assert_eq!(served.metric(RELOADED), 1.0);
}

#[tokio::test]
async fn a_broken_renewal_keeps_the_previous_certificate_and_counts_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "gw");
    let first = pki.server("first", &["127.0.0.1"]);
    let other = pki.server("other", &["127.0.0.1"]);
    let mut mount = SecretMount::new(dir.path(), &first);
    let served = serve_here(|c| c.server.tls = Some(mount.tls())).await;
    let url = format!("{}/healthz", base(&served));
    let serves = |cert: PathBuf| {
        let (ca, url) = (pki.ca(), url.clone());
        async move {
            let answer = client(&ca, None).build().unwrap().get(&url).send().await.unwrap();
            assert_eq!(answer.status(), 200);
            assert_eq!(served_certificate(&answer), der(&cert));
        }
    };
    serves(first.cert.clone()).await;

    mount.publish(b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n", b"not a key");
    // One failure for the swap's several events.
    served.wait_for(NOT_RELOADED, |n| n == 1.0).await;
    serves(first.cert.clone()).await;
    // A certificate with another certificate's key is no better.
    mount.publish(&std::fs::read(&other.cert).unwrap(), &std::fs::read(&first.key).unwrap());
    served.wait_for(NOT_RELOADED, |n| n == 2.0).await;
    serves(first.cert.clone()).await;
    assert_eq!(served.metric(RELOADED), 0.0);

    // The next good pair is taken.
    mount.renew(&other);
    served.wait_for(RELOADED, |n| n == 1.0).await;
    serves(other.cert.clone()).await;
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_finishes_its_handshake_is_cut_at_the_header_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "gw");
    let server = pki.server("server", &["127.0.0.1"]);
    let served = serve_here(|c| c.server.tls = Some(tls(&server))).await;
    let mut client = served.connect().await;
    let started = Instant::now();
    sleep_until(started + Duration::from_millis(9_990)).await;
    let mut byte = [0; 1];
    assert!(timeout(Duration::from_millis(1), client.read(&mut byte)).await.is_err(), "closed early");
    let read = timeout(Duration::from_secs(60), client.read(&mut byte)).await.expect("still open");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert_eq!(started.elapsed().as_secs(), 10, "{:?}", started.elapsed());
    assert_eq!(served.closed("handshake_timeout"), 1.0);
    assert_eq!(served.closed("header_timeout"), 0.0);
    assert_eq!(served.metric("image_gateway_tls_handshake_failures_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_requests_in_flight_over_http1_and_http2_finish() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "gw");
    let server = pki.server("server", &["127.0.0.1"]);
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let mut served = serve_here(|c| c.server.tls = Some(tls(&server))).await;
        let url = format!("{}/v2.1/images/6f1c1bd8-4f0e-4b8a-9d7e-1d2b3c4d5e6f/metadata", base(&served));
        let builder = client(&pki.ca(), None);
        let http = if version == Version::HTTP_11 { builder.http1_only() } else { builder }.build().unwrap();
        // A request whose body stops halfway until the test sends the rest.
        let (rest, body) = tokio::sync::mpsc::channel::<&'static [u8]>(1);
        rest.send(b"{\"metadata\":").await.unwrap();
        let body = futures_util::stream::unfold(body, |mut body| async move {
            body.recv().await.map(|chunk| (Ok::<_, std::io::Error>(bytes::Bytes::from_static(chunk)), body))
        });
        let request = http.post(&url).header("content-type", "application/json").body(reqwest::Body::wrap_stream(body));
        let answer = tokio::spawn(async move {
            let answer = request.send().await.unwrap();
            (answer.version(), answer.status().as_u16())
        });
        served.wait_for("image_gateway_requests_in_flight", |n| n == 1.0).await;

        served.stop.take().unwrap().send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(served.addr).await.is_ok() {
            assert!(Instant::now() < deadline, "still accepting after shutdown");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // (A bound for what must not happen, not a timing.)
        let early = timeout(Duration::from_millis(200), &mut served.stopped).await;
        assert!(early.is_err(), "stopped with a request in flight over {version:?}");
        rest.send(b"{}}").await.unwrap();
        drop(rest);
        assert_eq!(answer.await.unwrap(), (version, 404));
        timeout(Duration::from_secs(5), &mut served.stopped).await.expect("connection left open").unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_handshake_leaves_the_first_head_what_remains_of_the_header_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "gw");
    let server = pki.server("server", &["127.0.0.1"]);
    let served = serve_here(|c| c.server.tls = Some(tls(&server))).await;
    let tcp = served.connect().await;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut client = tls_connect(tcp, &pki, &[]).await;
    client.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    client.flush().await.unwrap();
    let mut byte = [0; 1];
    let read = timeout(Duration::from_secs(60), client.read(&mut byte)).await.expect("still open");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert_eq!(started.elapsed().as_secs(), 10, "{:?}", started.elapsed());
    assert_eq!(served.closed("header_timeout"), 1.0);
    assert_eq!(served.closed("handshake_timeout"), 0.0);
}

/// TLS over `tcp` offering `alpn`, trusting `pki`'s CA.
async fn tls_connect(tcp: TcpStream, pki: &Pki, alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(image_gateway::tls::load_certs(&pki.ca()).unwrap().remove(0)).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap()
}

/// An HTTP/2 request on `sender`; its status once its answer is read whole.
async fn h2_request<B>(
    sender: &mut hyper::client::conn::http2::SendRequest<B>,
    method: &str,
    path: &str,
    body: B,
) -> u16
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let request = http::Request::builder().method(method).uri(format!("https://127.0.0.1{path}")).body(body).unwrap();
    let answer = sender.send_request(request).await.unwrap();
    let status = answer.status().as_u16();
    answer.into_body().collect().await.unwrap();
    status
}

type H2Body = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, std::io::Error>;

/// An HTTP/2 connection over TLS to `served`, driven by a task of its own (which ends when
/// the connection does).
async fn h2_connect(
    served: &Served,
    pki: &Pki,
) -> (hyper::client::conn::http2::SendRequest<H2Body>, tokio::task::JoinHandle<Result<(), hyper::Error>>) {
    let tls = tls_connect(served.connect().await, pki, &[b"h2"]).await;
    let executor = hyper_util::rt::TokioExecutor::new();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(executor, hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    (sender, tokio::spawn(connection))
}

fn empty() -> H2Body {
    http_body_util::Empty::new().map_err(|never| match never {}).boxed_unsync()
}

#[tokio::test(start_paused = true)]
async fn an_http2_connection_without_a_request_is_closed_as_an_http1_one() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "gw");
    let server = pki.server("server", &["127.0.0.1"]);
    let served = serve_here(|c| c.server.tls = Some(tls(&server))).await;

    // Its first request is due within the header deadline from the accept.
    let started = Instant::now();
    let (_sender, connection) = h2_connect(&served, &pki).await;
    sleep_until(started + Duration::from_millis(9_990)).await;
    assert!(!connection.is_finished(), "closed before the header deadline");
    timeout(Duration::from_secs(60), connection).await.expect("still open after the header deadline").unwrap().ok();
    assert_eq!(started.elapsed().as_secs(), 10, "{:?}", started.elapsed());
    assert_eq!(served.closed("header_timeout"), 1.0);

    // Then, idle between requests, the keep-alive timeout.
    let (mut sender, connection) = h2_connect(&served, &pki).await;
    assert_eq!(h2_request(&mut sender, "GET", "/healthz", empty()).await, 200);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(h2_request(&mut sender, "GET", "/healthz", empty()).await, 200);
    let idle_since = Instant::now();
    sleep_until(idle_since + Duration::from_millis(89_990)).await;
    assert!(!connection.is_finished(), "closed before the keep-alive timeout");
    timeout(Duration::from_secs(60), connection).await.expect("still open after the keep-alive timeout").unwrap().ok();
    assert_eq!(idle_since.elapsed().as_secs(), 90, "{:?}", idle_since.elapsed());
    assert_eq!(served.closed("idle_timeout"), 1.0);
    assert_eq!(served.closed("header_timeout"), 1.0);
}

/// On the real clock: a request body's frames cross the HTTP/2 connection's own tasks, which
/// tokio's paused clock can outrun. Only that the connection outlives its keep-alive timeout
/// while a request is open is asserted, no timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_with_a_request_open_is_not_idle() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "gw");
    let server = pki.server("server", &["127.0.0.1"]);
    let served = serve_here(|c| {
        c.server.tls = Some(tls(&server));
        c.server.header_read_timeout_secs = 1.0;
        c.server.keepalive_timeout_secs = 1.0;
    })
    .await;
    let (mut sender, connection) = h2_connect(&served, &pki).await;
    // A body sent a piece every 0.5 s for 2.5 s.
    let (pieces, body) = tokio::sync::mpsc::channel::<&'static [u8]>(1);
    let body = futures_util::stream::unfold(body, |mut body| async move {
        let piece = body.recv().await?;
        Some((Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from_static(piece))), body))
    });
    tokio::spawn(async move {
        for piece in [&b"{\"metadata\""[..], b":", b"{", b"}", b"}"] {
            tokio::time::sleep(Duration::from_millis(500)).await;
            pieces.send(piece).await.unwrap();
        }
    });
    let metadata = "/v2.1/images/6f1c1bd8-4f0e-4b8a-9d7e-1d2b3c4d5e6f/metadata";
    assert_eq!(
        h2_request(&mut sender, "POST", metadata, http_body_util::StreamBody::new(body).boxed_unsync()).await,
        404
    );
    assert_eq!(h2_request(&mut sender, "GET", "/healthz", empty()).await, 200);
    assert!(!connection.is_finished());
    assert_eq!(served.closed("idle_timeout"), 0.0);
}

#[test]
fn check_names_the_key_and_the_file_of_bad_tls_files() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "gw");
    let server = pki.server("server", &["127.0.0.1"]);
    let other = pki.server("other", &["127.0.0.1"]);
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM at all\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let cases = [
        (garbage.as_path(), server.key.as_path(), None, "server.tls.cert_file", &garbage),
        (missing.as_path(), server.key.as_path(), None, "server.tls.cert_file", &missing),
        (server.cert.as_path(), garbage.as_path(), None, "server.tls.key_file", &garbage),
        (server.cert.as_path(), other.key.as_path(), None, "server.tls.key_file", &other.key),
        (server.cert.as_path(), server.key.as_path(), Some(&garbage), "server.tls.client_ca_file", &garbage),
    ];
    for (cert, key, client_ca, name, file) in cases {
        let mut toml = format!("[server.tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n");
        if let Some(ca) = client_ca {
            toml += &format!("client_ca_file = {ca:?}\n");
        }
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, &toml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_image-gateway"))
            .args(["check", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{toml}");
        assert!(stderr.contains(name) && stderr.contains(&file.display().to_string()), "{toml}: {stderr}");
    }
    let config = dir.path().join("gateway.toml");
    let good = format!("[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n", server.cert, server.key);
    std::fs::write(&config, good).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_image-gateway"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Mutual TLS as Alliance portals use it (docs/security.md): a caller whose verified
/// certificate names one of a namespace's `trusted_callers` acts for an environment without a
/// token of its own; the same call without that certificate does not.
#[tokio::test]
async fn an_alliance_caller_trusted_by_its_certificate_acts_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "gw");
    let clients = Pki::new(dir.path(), "clients");
    let server = pki.server("server", &["127.0.0.1"]);
    let portal = clients.client("portal", "portal.example");
    let other = clients.client("other", "other.example");
    let served = serve_here(|c| {
        c.server.tls = Some(ListenerTls { client_ca_file: Some(clients.ca()), ..tls(&server) });
        let caller = TrustedCaller {
            client_certificate: true,
            certificate_names: vec!["portal.example".into()],
            ..Default::default()
        };
        let namespace = NamespaceConfig {
            identity: IdentityMode::TrustedHeaders,
            trusted_callers: vec![caller],
            ..Default::default()
        };
        c.alliance.namespaces.insert("ns".into(), namespace);
    })
    .await;
    let url = format!("{}/images", base(&served));
    for (certificate, status) in [(Some(&portal), 200), (Some(&other), 401), (None, 401)] {
        let http = client(&pki.ca(), certificate).build().unwrap();
        let answer =
            http.get(&url).header("x-target-ns", "ns").header("x-environment-id", "env1").send().await.unwrap();
        assert_eq!(answer.status(), status, "{certificate:?}: {}", answer.text().await.unwrap());
    }
}

/// Over HTTP/2 a request's header list is bounded by `server.max_header_bytes`, as its head is
/// over HTTP/1.1 (hyper's own HTTP/2 default would be 16 MiB).
#[tokio::test]
async fn an_http2_header_list_over_max_header_bytes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "gw");
    let server = pki.server("server", &["127.0.0.1"]);
    let served = serve_here(|c| c.server.tls = Some(tls(&server))).await;
    let http = client(&pki.ca(), None).build().unwrap();
    let value = "v".repeat(8000);
    for (fields, fits) in [(6, true), (10, false)] {
        let mut request = http.get(format!("{}/healthz", base(&served)));
        for i in 0..fields {
            request = request.header(format!("x-filler-{i}"), &value);
        }
        let answer = request.send().await;
        let status = answer.as_ref().map(|a| (a.version(), a.status().as_u16()));
        if fits {
            assert_eq!(status.unwrap(), (Version::HTTP_2, 200));
        } else {
            assert!(!matches!(status, Ok((_, 200))), "{fields} fields of 8000 bytes served: {status:?}");
        }
    }
}

/// The server's limits act over TLS as over TCP; here the lingering close: a client sending
/// a body far over the limit reads its 413 rather than a reset, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_the_body_limit_reads_its_413_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "gw");
    let server = pki.server("server", &["127.0.0.1"]);
    let served = serve_here(|c| {
        c.server.tls = Some(tls(&server));
        c.limits.body_limit_bytes = 1024;
    })
    .await;
    let url = format!("{}/v2.1/images/6f1c1bd8-4f0e-4b8a-9d7e-1d2b3c4d5e6f/metadata", base(&served));
    for _ in 0..5 {
        let http = client(&pki.ca(), None).http1_only().build().unwrap();
        let body = vec![b' '; 20_000_000];
        let answer = http.post(&url).header("content-type", "application/json").body(body).send().await.unwrap();
        assert_eq!(answer.status(), 413);
    }
    served.wait_for("image_gateway_connections_closed_total{reason=\"lingering_close\"}", |n| n == 5.0).await;
}

/// As over HTTP/1.1, a client that takes nothing of its answer is cut off at
/// `server.send_timeout_secs`, and the list's admission place comes back; over HTTP/2 it stops
/// the answer by flow control rather than by a full socket.
#[tokio::test(start_paused = true)]
async fn an_http2_client_that_takes_nothing_of_its_answer_is_cut_off_at_the_send_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "gw");
    let server = pki.server("server", &["127.0.0.1"]);
    let project = "0123456789abcdef0123456789abcdef";
    let store = common::store_with_a_large_list(project).await;
    let mut config = common::test_config();
    config.server.tls = Some(tls(&server));
    config.server.send_timeout_secs = 7.0;
    config.limits.max_heavy_in_flight = 1;
    let served = common::serve_store(config, Some(store)).await;
    // Frames cross the client's and the server's HTTP/2 tasks after a socket: this tick keeps
    // the paused clock from moving on to a deadline before they have.
    let tick = tokio::spawn(async {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let (mut sender, connection) = h2_connect(&served, &pki).await;
    let request = http::Request::get("https://127.0.0.1/v2.1/images/detail")
        .header("x-identity-status", "Confirmed")
        .header("x-project-id", project)
        .header("x-roles", "member,reader")
        .body(empty())
        .unwrap();
    // The answer's head, and never a byte of its body.
    let answer = sender.send_request(request).await.unwrap();
    assert_eq!(answer.status(), 200);
    let started = Instant::now();
    let cut = async {
        while served.closed("send_timeout") < 1.0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    timeout(Duration::from_secs(600), cut).await.expect("a client that takes nothing is never cut off");
    assert!(started.elapsed() <= Duration::from_secs(8), "{:?}", started.elapsed());
    assert!(started.elapsed() >= Duration::from_secs(7), "{:?}", started.elapsed());
    assert_eq!(served.metric("image_gateway_heavy_requests_in_flight"), 0.0, "its place came back");
    timeout(Duration::from_secs(1), connection).await.expect("the connection is still open").unwrap().ok();
    drop(answer);
    tick.abort();
}
