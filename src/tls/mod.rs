//! TLS: the certificates and keys the gateway reads from files, for its listener
//! ([`server`]) and for its upstreams ([`client`]). rustls with the ring provider throughout
//! (see [`crate::install_crypto_provider`]).

pub mod client;
pub mod server;

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {problem}")]
    File { path: PathBuf, problem: String },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

/// Every certificate of a PEM file (a chain, or a CA bundle); an error if there is none.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file = |problem: String| TlsError::File { path: path.to_owned(), problem };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file(e.to_string()))?;
    if certs.is_empty() {
        return Err(file("holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File { path: path.to_owned(), problem: e.to_string() })
}
