//! TLS to the upstreams (Glance, a namespace's Glance, Keystone, the Nova passthrough): one
//! rustls configuration per upstream, from its [`UpstreamTls`], shared by its reqwest client and
//! its passthrough connector; and the failures it causes, told apart from the others.
//!
//! Deployments behind Kolla-ansible, OpenStack-Ansible or TripleO serve their APIs with a
//! private CA: `ca_file` trusts it instead of the system's store (still the default).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_platform_verifier::BuilderVerifierExt as _;

use super::{load_certs, load_key, TlsError};
use crate::config::UpstreamTls;

/// How the gateway speaks TLS to one upstream. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ClientTls(Arc<ClientConfig>);

impl ClientTls {
    /// The configuration `tls` describes for the upstream named `upstream` (`glance`,
    /// `glance/<namespace>`, `keystone`, `nova`). With `insecure`, warns at every start.
    pub fn new(upstream: &str, tls: &UpstreamTls) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
        let builder = if tls.insecure {
            tracing::warn!(
                upstream,
                "TLS certificates of this upstream are not verified (insecure = true): anyone on the path \
                 can read and change its traffic, tokens included"
            );
            let verifier = AcceptAnyCertificate(provider.signature_verification_algorithms);
            builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier))
        } else if let Some(ca_file) = &tls.ca_file {
            let mut roots = RootCertStore::empty();
            for cert in load_certs(ca_file)? {
                roots.add(cert).map_err(|e| TlsError::File { path: ca_file.clone(), problem: e.to_string() })?;
            }
            builder.with_root_certificates(roots)
        } else {
            builder.with_platform_verifier()?
        };
        let config = match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => builder.with_client_auth_cert(load_certs(cert)?, load_key(key)?)?,
            // Config validation refuses one without the other.
            _ => builder.with_no_client_auth(),
        };
        Ok(ClientTls(Arc::new(config)))
    }

    /// The configuration without ALPN, as hyper-rustls wants it (its builder adds h2 and
    /// http/1.1).
    pub fn rustls(&self) -> ClientConfig {
        (*self.0).clone()
    }

    /// A reqwest client builder with this TLS: ALPN h2 and http/1.1 as reqwest's own TLS offers
    /// them. Upstreams are reached directly, as the passthrough reaches them (an `HTTPS_PROXY`
    /// meant for a pod's egress must not carry their traffic and tokens), and their redirects
    /// are not followed.
    pub fn reqwest(&self) -> reqwest::ClientBuilder {
        let mut config = self.rustls();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).use_preconfigured_tls(config)
    }
}

/// The TLS failure behind `error`, logged as `upstream`'s: one warning per failing call, naming
/// the upstream and what TLS said (`invalid peer certificate: UnknownIssuer`).
pub fn report_tls_failure(upstream: &str, error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let tls = tls_failure(error)?;
    tracing::warn!(upstream, error = %tls, "TLS with the upstream failed");
    Some(tls.to_string())
}

/// The TLS failure behind an HTTP client's error, if that is what it is: a certificate the
/// upstream's CA does not vouch for, a client certificate it refused, a handshake that failed.
/// rustls's error travels inside `io::Error`s (one in another, through tokio-rustls and
/// hyper), whose `source()` skips what they wrap, so the walk opens each one.
pub fn tls_failure<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let next = |e: &&'a (dyn std::error::Error + 'static)| match e.downcast_ref::<std::io::Error>() {
        Some(io) => io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
        None => e.source(),
    };
    std::iter::successors(Some(error), next).find_map(|e| e.downcast_ref::<rustls::Error>())
}

/// The verifier of `insecure = true`: any certificate, for any name. The handshake's
/// signatures are still checked, so the key exchange is with the holder of that certificate.
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
