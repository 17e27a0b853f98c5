//! Who the gateway believes, and about what.
//!
//! Nothing a client sends is believed about who it is unless the configuration says its peer
//! may say so. Three kinds of trust, each its own key (docs/security.md):
//! - `trusted_proxies`: peers whose `X-Forwarded-*` headers decide the gateway's links
//!   ([`crate::public_url`]);
//! - `identity_proxies`: peers whose identity headers (`X-Roles`, `X-Project-Id`, ... as an
//!   auth layer such as keystonemiddleware sets them) are passed on; everybody else's are
//!   dropped at the edge, before any route sees them;
//! - a namespace's `trusted_callers` ([`crate::alliance`]): callers allowed to act for an
//!   environment with the gateway's own credentials, by network or client certificate.

use std::net::IpAddr;

use http::HeaderMap;

use crate::public_url::Cidr;

/// What a verified client certificate says about the caller: set on every request of a
/// connection whose client presented a certificate that the listener's `client_ca_file`
/// verified. Absent otherwise.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The certificate's DNS and URI subject alternative names, then its subject's common name.
    pub names: Vec<String>,
}

/// Whether `name` (lower case, as `http` keeps them) is one of the headers through which an
/// auth layer tells OpenStack services who the caller is: keystonemiddleware's user and
/// service sets (`X-User-*`, `X-Project-*`, `X-Domain-*`, `X-Roles`, `X-Service-*`, ...),
/// their deprecated forms (`X-Tenant*`, `X-User`, `X-Role`), the system scope and
/// oslo.context's extras.
/// By prefix, so that a variant this list never heard of is dropped too; `_` counts as `-`,
/// since WSGI servers hand `X_Roles` to Python as `HTTP_X_ROLES`, the same as `X-Roles`.
pub fn is_identity_header(name: &str) -> bool {
    const PREFIXES: [&str; 13] = [
        "x-identity-status",
        "x-service-",
        "x-user",
        "x-project-",
        "x-tenant",
        "x-domain-",
        "x-role",
        "x-is-admin-project",
        "x-system-scope",
        "x-trust-",
        "x-application-credential",
        "x-auth-project-id",
        "openstack-system-scope",
    ];
    // Checked for every header of most requests: no allocation.
    let starts_with = |prefix: &str| {
        name.len() >= prefix.len() && name.bytes().zip(prefix.bytes()).all(|(n, p)| n == p || (n == b'_' && p == b'-'))
    };
    PREFIXES.iter().any(|p| starts_with(p))
}

/// Removes every identity header from `headers`; says how many it removed.
pub fn strip_identity_headers(headers: &mut HeaderMap) -> usize {
    let names: Vec<_> = headers.keys().filter(|n| is_identity_header(n.as_str())).cloned().collect();
    let mut removed = 0;
    for name in names {
        if let http::header::Entry::Occupied(entry) = headers.entry(name) {
            removed += entry.remove_entry_mult().1.count();
        }
    }
    removed
}

/// Whether `peer` is in one of `networks`.
pub fn peer_in(networks: &[Cidr], peer: Option<IpAddr>) -> bool {
    peer.is_some_and(|ip| networks.iter().any(|n| n.contains(ip)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_headers_are_recognised_and_nothing_else() {
        for name in [
            "x-roles",
            "x-role",
            "x-project-id",
            "x-project-domain-name",
            "x-tenant-id",
            "x-tenant",
            "x-user-id",
            "x-user",
            "x-user-domain-id",
            "x-domain-id",
            "x-identity-status",
            "x-service-identity-status",
            "x-service-roles",
            "x-service-token",
            "x-service-catalog",
            "x-is-admin-project",
            "x-system-scope",
            "x-auth-project-id",
            "x_roles",
            "x_project_id",
            "x-identity_status",
            "openstack-system-scope",
        ] {
            assert!(is_identity_header(name), "{name}");
        }
        for name in [
            "x-auth-token",
            "x-openstack-request-id",
            "x-openstack-nova-api-version",
            "openstack-api-version",
            "x-environment-id",
            "x-target-ns",
            "x-image-meta-name",
            "content-type",
            "host",
        ] {
            assert!(!is_identity_header(name), "{name}");
        }
    }

    #[test]
    fn stripping_removes_every_value() {
        let mut h = HeaderMap::new();
        h.append("x-roles", "admin".parse().unwrap());
        h.append("x-roles", "member".parse().unwrap());
        h.insert("x-project-id", "p".parse().unwrap());
        h.insert("x-auth-token", "t".parse().unwrap());
        assert_eq!(strip_identity_headers(&mut h), 3);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-auth-token"));
    }
}
