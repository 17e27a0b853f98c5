//! Upstreams behind TLS with a private CA, as Kolla-ansible, OpenStack-Ansible or TripleO run
//! them: in process (tokio-rustls in front of an axum router) for the ordinary tests, or nginx
//! terminating TLS in front of a real service, as their haproxy does.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::pki::Issued;

/// Serves `router` over HTTPS on loopback with `server`'s certificate, on the calling runtime.
/// With `client_ca`, only to clients presenting a certificate that CA issued: refused at the
/// handshake, as haproxy's `verify required` does.
pub async fn serve_tls(router: axum::Router, server: &Issued, client_ca: Option<&Path>) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in image_gateway::tls::load_certs(ca).unwrap() {
                roots.add(cert).unwrap();
            }
            builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap(),
            )
        }
        None => builder.with_no_client_auth(),
    };
    let certs = image_gateway::tls::load_certs(&server.cert).unwrap();
    let config = builder.with_single_cert(certs, image_gateway::tls::load_key(&server.key).unwrap()).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = TlsListener { tcp, acceptor: TlsAcceptor::from(Arc::new(config)) };
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// TLS connections for axum: a handshake that fails is the client's problem, and skipped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        loop {
            let Ok((tcp, peer)) = self.tcp.accept().await else { continue };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// nginx terminating TLS on loopback in front of a plain service; stopped when dropped.
pub struct NginxFront {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    child: Child,
    dir: PathBuf,
}

impl NginxFront {
    /// Fronts `upstream` (`http://host:port`) with `server`'s certificate, its files in `dir`.
    /// With `client_ca`, nginx requires a client certificate that CA issued (`ssl_verify_client
    /// on`): without one it answers 400 itself, as nginx does.
    pub fn start(dir: &Path, upstream: &str, server: &Issued, client_ca: Option<&Path>) -> NginxFront {
        let nginx = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .expect("nginx is not installed: scripts/test.sh installs nginx-light");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = dir.join(format!("nginx-{port}"));
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let verify = client_ca.map_or(String::new(), |ca| {
            format!("ssl_client_certificate {};\n        ssl_verify_client on;", ca.display())
        });
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n    access_log {d}/access.log;\n    client_body_temp_path {d}/tmp/body;\n    \
             proxy_temp_path {d}/tmp/proxy;\n    client_max_body_size 0;\n    server {{\n        \
             listen 127.0.0.1:{port} ssl;\n        ssl_certificate {cert};\n        \
             ssl_certificate_key {key};\n        {verify}\n        location / {{\n            \
             proxy_pass {upstream};\n            proxy_http_version 1.1;\n            \
             proxy_set_header Host $http_host;\n            proxy_set_header X-Forwarded-Proto https;\n            \
             proxy_request_buffering off;\n            proxy_buffering off;\n        }}\n    }}\n}}\n",
            cert = server.cert.display(),
            key = server.key.display(),
            upstream = upstream.trim_end_matches('/'),
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new(nginx)
            .args(["-p".as_ref(), dir.as_os_str(), "-e".as_ref(), dir.join("error.log").as_os_str()])
            .args(["-c".as_ref(), dir.join("nginx.conf").as_os_str()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut front = NginxFront { url: format!("https://127.0.0.1:{port}"), child, dir };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return front;
            }
            if let Ok(Some(status)) = front.child.try_wait() {
                panic!("nginx exited ({status}): {}", front.error_log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nginx did not listen on {port}: {}", front.error_log());
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for NginxFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
