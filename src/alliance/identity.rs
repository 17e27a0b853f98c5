//! Who an Alliance call acts for, and on what proof (docs/security.md).
//!
//! `X-Environment-Id` names the project a call acts for; naming it proves nothing. The proof is
//! either the caller's own Keystone token, whose project must be that environment, or, in a
//! namespace whose `identity` allows it, the caller's being one of its `trusted_callers` (by
//! network and/or verified client certificate, optionally limited to some environments), for
//! whom the gateway then acts with its own credentials or identity headers. Anything else is
//! refused before a single call to Glance.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::{AllianceApi, AllianceError, Namespace, AUTH_TOKEN};
use crate::config::{IdentityMode, TrustedCaller};
use crate::layers::trace;
use crate::public_url::Cidr;
use crate::trust::{self, ClientCertificate};

/// One `trusted_callers` entry, parsed.
#[derive(Clone, Debug)]
pub struct TrustedCallers {
    /// False for an entry that would trust anyone: it then trusts nobody.
    sound: bool,
    networks: Vec<Cidr>,
    client_certificate: bool,
    certificate_names: Vec<String>,
    environments: Vec<String>,
}

impl From<&TrustedCaller> for TrustedCallers {
    /// `Config::validate` refuses an entry that trusts anyone or names a bad network; should
    /// one get here all the same, it trusts nobody.
    fn from(c: &TrustedCaller) -> Self {
        let networks: Vec<Cidr> = c.networks.iter().filter_map(|n| n.parse().ok()).collect();
        let sound = networks.len() == c.networks.len() && (!networks.is_empty() || c.client_certificate);
        TrustedCallers {
            sound,
            networks,
            client_certificate: c.client_certificate,
            certificate_names: c.certificate_names.clone(),
            environments: c.environments.clone(),
        }
    }
}

impl TrustedCallers {
    /// Whether the caller is one of these (whatever the environment).
    fn matches(&self, caller: &Caller<'_>) -> bool {
        let network = self.networks.is_empty() || trust::peer_in(&self.networks, caller.peer);
        let certificate = !self.client_certificate
            || caller.certificate.is_some_and(|cert| {
                self.certificate_names.is_empty() || cert.names.iter().any(|n| self.certificate_names.contains(n))
            });
        self.sound && network && certificate
    }

    fn allows(&self, environment: &str) -> bool {
        self.environments.is_empty() || self.environments.iter().any(|e| e == environment)
    }
}

/// What the connection says about the caller.
pub struct Caller<'a> {
    pub peer: Option<std::net::IpAddr>,
    pub certificate: Option<&'a ClientCertificate>,
    pub token: Option<&'a HeaderValue>,
}

/// What Glance is sent to know who is calling, and the token if the gateway got it itself;
/// or the refusal.
pub async fn upstream_identity(
    api: &AllianceApi,
    ns: &Namespace,
    environment: &str,
    caller: &Caller<'_>,
    incoming: &HeaderMap,
) -> Result<(HeaderMap, Option<String>), AllianceError> {
    let mut out = HeaderMap::new();
    trace::correlate(incoming, &mut out);
    if let Some(token) = caller.token {
        check_token(api, token, environment, incoming).await?;
        out.insert(AUTH_TOKEN, token.clone());
        return Ok((out, None));
    }
    if ns.identity == IdentityMode::Token {
        return Err(AllianceError::Unauthorized(
            "Send X-Auth-Token: a Keystone token of the environment's project".into(),
        ));
    }
    let trusted: Vec<_> = ns.trusted_callers.iter().filter(|t| t.matches(caller)).collect();
    if trusted.is_empty() {
        return Err(AllianceError::Unauthorized(
            "Send X-Auth-Token: this caller is not trusted to act for environments without one".into(),
        ));
    }
    if !trusted.iter().any(|t| t.allows(environment)) {
        return Err(AllianceError::Forbidden(format!("This caller may not act for environment {environment}")));
    }
    let env = HeaderValue::from_str(environment).map_err(|_| AllianceError::BadRequest("bad environment".into()))?;
    match ns.identity {
        IdentityMode::TrustedHeaders => {
            out.insert(HeaderName::from_static("x-identity-status"), HeaderValue::from_static("Confirmed"));
            out.insert(HeaderName::from_static("x-project-id"), env);
            out.insert(HeaderName::from_static("x-user-id"), HeaderValue::from_static("image-gateway"));
            out.insert(HeaderName::from_static("x-roles"), HeaderValue::from_static("member,reader"));
            Ok((out, None))
        }
        IdentityMode::GatewayCredentials | IdentityMode::Token => {
            let token = match &api.keystone {
                Some(keystone) => keystone.token(environment, incoming).await?,
                None => None,
            };
            let token = token.ok_or_else(|| {
                AllianceError::Unauthorized(format!("No credentials for environment {environment}: send X-Auth-Token"))
            })?;
            let mut value = HeaderValue::from_str(&token).map_err(|_| AllianceError::BadRequest("bad token".into()))?;
            value.set_sensitive(true);
            out.insert(AUTH_TOKEN, value);
            Ok((out, Some(token)))
        }
    }
}

/// A client's token proves the environment when Keystone says it is valid and scoped to it.
async fn check_token(
    api: &AllianceApi,
    token: &HeaderValue,
    environment: &str,
    incoming: &HeaderMap,
) -> Result<(), AllianceError> {
    let keystone = api.keystone.as_ref().ok_or_else(|| {
        AllianceError::Unauthorized("This gateway cannot verify tokens (no keystone.url configured)".into())
    })?;
    let token = token.to_str().map_err(|_| AllianceError::Unauthorized("X-Auth-Token is not valid".into()))?;
    match keystone.validate(token, incoming).await? {
        None => Err(AllianceError::Unauthorized("X-Auth-Token is not valid".into())),
        Some(project) if project == environment => Ok(()),
        Some(_) => Err(AllianceError::Forbidden(format!(
            "The token is not scoped to environment {environment} (X-Environment-Id)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn callers(networks: &[&str], client_certificate: bool, names: &[&str]) -> TrustedCallers {
        TrustedCallers::from(&TrustedCaller {
            networks: networks.iter().map(|n| n.to_string()).collect(),
            client_certificate,
            certificate_names: names.iter().map(|n| n.to_string()).collect(),
            environments: vec!["env-a".into()],
        })
    }

    fn caller<'a>(peer: &str, certificate: Option<&'a ClientCertificate>) -> Caller<'a> {
        Caller { peer: Some(peer.parse().unwrap()), certificate, token: None }
    }

    #[test]
    fn trusted_callers_match_by_network_certificate_or_both() {
        let portal = ClientCertificate { names: vec!["portal.example".into(), "Portal CN".into()] };
        let other = ClientCertificate { names: vec!["other.example".into()] };
        let by_network = callers(&["10.0.0.0/8"], false, &[]);
        assert!(by_network.matches(&caller("10.1.2.3", None)));
        assert!(!by_network.matches(&caller("192.0.2.1", Some(&portal))));
        let by_certificate = callers(&[], true, &[]);
        assert!(by_certificate.matches(&caller("192.0.2.1", Some(&other))));
        assert!(!by_certificate.matches(&caller("10.1.2.3", None)));
        let by_name = callers(&[], true, &["portal.example"]);
        assert!(by_name.matches(&caller("192.0.2.1", Some(&portal))));
        assert!(!by_name.matches(&caller("192.0.2.1", Some(&other))));
        let both = callers(&["10.0.0.0/8"], true, &[]);
        assert!(both.matches(&caller("10.1.2.3", Some(&portal))));
        assert!(!both.matches(&caller("10.1.2.3", None)));
        assert!(!both.matches(&caller("192.0.2.1", Some(&portal))));
        assert!(by_network.allows("env-a") && !by_network.allows("env-b"));
        // Unsound entries trust nobody, even if validation was skipped.
        assert!(!callers(&[], false, &[]).matches(&caller("10.1.2.3", Some(&portal))));
        assert!(!callers(&["10.0.0.0/8", "nonsense"], false, &[]).matches(&caller("10.1.2.3", None)));
    }
}
