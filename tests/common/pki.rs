//! A private certificate authority made by a test, as Kolla-ansible, OpenStack-Ansible or
//! cert-manager would make one: a CA, server certificates for names and addresses, client
//! certificates, all written as PEM files in a directory the test owns.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A CA and the directory its files go to.
pub struct Pki {
    dir: PathBuf,
    name: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// The files of one issued certificate.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// A new CA named `name`, writing to `dir` (its certificate at `dir/<name>-ca.pem`).
    pub fn new(dir: &Path, name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pki = Pki { dir: dir.to_owned(), name: name.to_owned(), issuer };
        std::fs::write(pki.ca(), pki.issuer.pem()).unwrap();
        pki
    }

    /// The CA's certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// A server certificate for `names` (DNS names or IP addresses), as `<file>.pem` and
    /// `<file>-key.pem`.
    pub fn server(&self, file: &str, names: &[&str]) -> Issued {
        self.server_until(file, names, CertificateParams::default().not_after)
    }

    /// As [`Pki::server`], expiring at `not_after` (rcgen's default is the year 4096).
    pub fn server_until(&self, file: &str, names: &[&str], not_after: time::OffsetDateTime) -> Issued {
        let common_name = names.first().copied().unwrap_or("server");
        self.issue(file, names, common_name, ExtendedKeyUsagePurpose::ServerAuth, not_after)
    }

    /// A client certificate whose common name (and DNS name) is `name`.
    pub fn client(&self, file: &str, name: &str) -> Issued {
        self.issue(file, &[name], name, ExtendedKeyUsagePurpose::ClientAuth, CertificateParams::default().not_after)
    }

    fn issue(
        &self,
        file: &str,
        names: &[&str],
        common_name: &str,
        usage: ExtendedKeyUsagePurpose,
        not_after: time::OffsetDateTime,
    ) -> Issued {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.not_after = not_after;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let issued =
            Issued { cert: self.dir.join(format!("{file}.pem")), key: self.dir.join(format!("{file}-key.pem")) };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }
}
