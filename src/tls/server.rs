//! TLS on the listener: rustls's server configuration made from `server.tls`, with ALPN `h2`
//! and `http/1.1`, client certificates verified by `client_ca_file` when it is set, and a
//! certificate that follows its files.
//!
//! cert-manager renews a certificate by rewriting a Kubernetes Secret, and the kubelet updates
//! the mounted copy by writing the new files into a new directory and swapping the `..data`
//! symlink the file names point through. So the directories holding `cert_file` and
//! `key_file` are watched ([`crate::watch`]), and once a change there has settled the pair is
//! read again: a pair that loads and matches replaces the served one for new handshakes (open
//! connections keep theirs); one that does not is logged and counted, and the previous pair
//! keeps serving. The client CA is read once, at start.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, ServerConnection, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use super::{load_certs, load_key, TlsError};
use crate::config::ListenerTls;
use crate::layers::metrics::Metrics;
use crate::trust::ClientCertificate;
use crate::watch::{self, DirWatch};

/// How often the files are read for changes where the kernel cannot report them (no inotify
/// instance or watch left): the fallback watcher polls.
const POLL_INTERVAL: Duration = Duration::from_secs(10);

/// A change is acted on once the directories have been quiet this long, so that a renewal's
/// several events (three for the kubelet's swap, one per file written in place) make one
/// reload, and a certificate and key written one after the other are read together.
const SETTLE: Duration = Duration::from_millis(200);

/// A problem with one key of `server.tls`, for the configuration's validation.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Invalid {
    /// The key, as `check` names it (`server.tls.cert_file`).
    pub key: &'static str,
    pub error: TlsError,
}

/// The listener's TLS: the acceptor for new connections, and the watch that keeps its
/// certificate current (it stops when this is dropped).
pub struct ServerTls {
    acceptor: TlsAcceptor,
    _watch: DirWatch,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the files of `config` and starts watching the certificate's and key's directories;
    /// within a tokio runtime, which runs the reloads.
    pub fn load(config: &ListenerTls, metrics: Arc<Metrics>) -> Result<ServerTls, Invalid> {
        let provider = provider();
        let verifier = client_verifier(config, &provider)?;
        let resolver = Arc::new(Reloading {
            current: ArcSwap::from_pointee(certified_key(config, &provider)?),
            files: config.clone(),
            provider: provider.clone(),
            metrics,
        });
        let builder = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Invalid { key: "server.tls", error: e.into() })?;
        let verifier_set = verifier.is_some();
        let builder = match verifier {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        };
        let mut server = builder.with_cert_resolver(resolver.clone());
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let not_after = resolver.served(&resolver.current.load());
        tracing::info!(
            cert_file = %config.cert_file.display(),
            not_after,
            client_certificates = if verifier_set { "verified" } else { "not asked for" },
            "listener certificate loaded"
        );
        let watch = watch(resolver).map_err(|error| Invalid { key: "server.tls.cert_file", error })?;
        Ok(ServerTls { acceptor: TlsAcceptor::from(Arc::new(server)), _watch: watch })
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

/// Whether `config`'s files load: the certificate chain, its key (and that they match), the
/// client CAs. What `image-gateway check` and every reload of the configuration run.
pub fn check(config: &ListenerTls) -> Result<(), Invalid> {
    let provider = provider();
    certified_key(config, &provider)?;
    client_verifier(config, &provider)?;
    Ok(())
}

/// ring, as everywhere in the gateway, whatever provider the process has installed.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate chain and key of `config`, checked to belong together.
fn certified_key(config: &ListenerTls, provider: &CryptoProvider) -> Result<CertifiedKey, Invalid> {
    let certs = load_certs(&config.cert_file).map_err(|error| Invalid { key: "server.tls.cert_file", error })?;
    let key = load_key(&config.key_file).map_err(|error| Invalid { key: "server.tls.key_file", error })?;
    let key_problem = |e: rustls::Error| Invalid {
        key: "server.tls.key_file",
        error: TlsError::File {
            path: config.key_file.clone(),
            problem: format!("not usable as the key of the certificate of {}: {e}", config.cert_file.display()),
        },
    };
    CertifiedKey::from_der(certs, key, provider).map_err(key_problem)
}

/// The verifier of client certificates, when `client_ca_file` is set.
fn client_verifier(
    config: &ListenerTls,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, Invalid> {
    let Some(ca_file) = &config.client_ca_file else {
        if config.require_client_certificate {
            // Config::validate says so first; never serve without the check asked for.
            let error = rustls::Error::General("server.tls.require_client_certificate without a client_ca_file".into());
            return Err(Invalid { key: "server.tls.require_client_certificate", error: error.into() });
        }
        return Ok(None);
    };
    let invalid = |problem: String| Invalid {
        key: "server.tls.client_ca_file",
        error: TlsError::File { path: ca_file.clone(), problem },
    };
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca_file).map_err(|error| Invalid { key: "server.tls.client_ca_file", error })? {
        roots.add(cert).map_err(|e| invalid(e.to_string()))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let builder = if config.require_client_certificate { builder } else { builder.allow_unauthenticated() };
    builder.build().map(Some).map_err(|e| invalid(e.to_string()))
}

/// The served certificate: the last pair of files that loaded.
#[derive(Debug)]
struct Reloading {
    current: ArcSwap<CertifiedKey>,
    files: ListenerTls,
    provider: Arc<CryptoProvider>,
    metrics: Arc<Metrics>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl Reloading {
    /// Shows when `key`, about to be served, expires: in the metrics, and for the log.
    fn served(&self, key: &CertifiedKey) -> String {
        let parsed = key.cert.first().and_then(|cert| x509_parser::parse_x509_certificate(cert).ok());
        let Some((_, cert)) = parsed else { return "unknown".into() };
        let not_after = cert.validity().not_after;
        self.metrics.tls_certificate_expires(&self.files.cert_file.display().to_string(), not_after.timestamp());
        not_after.to_string()
    }

    /// Reads the files again; a new pair that loads is served from now on.
    fn reload(&self) {
        match certified_key(&self.files, &self.provider) {
            // Another file of the directory changed, or a step of a swap before the swap.
            Ok(key) if key.cert == self.current.load().cert => {}
            Ok(key) => {
                let not_after = self.served(&key);
                self.current.store(Arc::new(key));
                self.metrics.tls_certificate_reloaded(true);
                tracing::info!(cert_file = %self.files.cert_file.display(), not_after, "listener certificate reloaded");
            }
            Err(e) => {
                self.metrics.tls_certificate_reloaded(false);
                tracing::error!(
                    key = e.key,
                    "listener certificate not reloaded, still serving the previous one: {}",
                    e.error
                );
            }
        }
    }
}

/// Watches the directories of the certificate and key, reloading once each burst of changes
/// there has settled; with the kernel's notifications, or by polling if they cannot be had.
fn watch(resolver: Arc<Reloading>) -> Result<DirWatch, TlsError> {
    let dirs: Vec<PathBuf> = [&resolver.files.cert_file, &resolver.files.key_file]
        .into_iter()
        .map(|file| watch::directory_of(file))
        .collect();
    let (watch, mut changes) =
        DirWatch::start("the listener certificate's files", &dirs, POLL_INTERVAL).map_err(|e| TlsError::File {
            path: dirs[0].clone(),
            problem: format!("cannot be watched for renewed certificates: {e}"),
        })?;
    // Ends when the watch is dropped.
    tokio::spawn(async move {
        while watch::settled(&mut changes, SETTLE).await {
            resolver.reload();
        }
    });
    Ok(watch)
}

/// What a connection's verified client certificate says, if its client presented one (a
/// handshake with a certificate only succeeds if `client_ca_file` verified it).
pub fn client_certificate(connection: &ServerConnection) -> Option<ClientCertificate> {
    let cert = connection.peer_certificates()?.first()?;
    let names = match x509_parser::parse_x509_certificate(cert) {
        Ok((_, cert)) => certificate_names(&cert),
        Err(e) => {
            // rustls has parsed it already: this would be a difference between two parsers.
            tracing::warn!("cannot read the names of a verified client certificate: {e}");
            Vec::new()
        }
    };
    Some(ClientCertificate { names })
}

/// DNS and URI subject alternative names, then the subject's common name.
fn certificate_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let mut names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(n) | GeneralName::URI(n) => Some((*n).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    for cn in cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()) {
        if !names.iter().any(|n| n == cn) {
            names.push(cn.to_owned());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_named_by_its_dns_and_uri_names_then_its_common_name() {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![
            rcgen::SanType::DnsName("portal.example".try_into().unwrap()),
            rcgen::SanType::IpAddress([192, 0, 2, 1].into()),
            rcgen::SanType::URI("spiffe://cloud/ns/portal".try_into().unwrap()),
            rcgen::SanType::Rfc822Name("ops@example.com".try_into().unwrap()),
        ];
        params.distinguished_name.push(rcgen::DnType::CommonName, "portal-client");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.der()).unwrap();
        assert_eq!(certificate_names(&parsed), ["portal.example", "spiffe://cloud/ns/portal", "portal-client"]);

        // A common name that is also a DNS name is said once.
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, "portal.example");
        let cert = params.self_signed(&key).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.der()).unwrap();
        assert_eq!(certificate_names(&parsed), ["portal.example", "spiffe://cloud/ns/portal"]);
    }
}
