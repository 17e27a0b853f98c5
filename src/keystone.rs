//! Keystone v3 tokens for the environments the gateway holds credentials for.
//!
//! A token is fetched on first use, cached per environment, and renewed `renew_before` ahead of
//! its expiry; a caller that saw Glance refuse it (401) invalidates it and asks again. Fetches
//! for one environment are serialised, so a burst of requests costs one token request. Neither
//! passwords nor tokens are ever logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, Method};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tracing::Instrument as _;
use url::Url;

use crate::config::{Credentials, KeystoneConfig};
use crate::layers::trace;
use crate::tls::client::ClientTls;

const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum KeystoneError {
    #[error("cannot reach Keystone: {0}")]
    Unreachable(String),
    #[error("Keystone refused the gateway's credentials for environment {environment}: {status}")]
    Refused { environment: String, status: u16 },
    #[error("Keystone cannot answer now ({0})")]
    Unavailable(u16),
    #[error("Keystone sent an unusable answer: {0}")]
    BadAnswer(String),
}

/// A request Keystone never answered; a TLS failure is logged as Keystone's and said as such.
fn unreachable(e: reqwest::Error) -> KeystoneError {
    let e = e.without_url();
    let tls = crate::tls::client::report_tls_failure("keystone", &e);
    KeystoneError::Unreachable(tls.map_or_else(|| e.to_string(), |tls| format!("TLS failed: {tls}")))
}

#[derive(Clone)]
struct Cached {
    token: String,
    expires: OffsetDateTime,
}

/// The gateway's Keystone client.
pub struct Keystone {
    client: reqwest::Client,
    tokens_url: Url,
    credentials: HashMap<String, Credentials>,
    renew_before: Duration,
    /// One slot per environment; the async lock serialises fetches for it.
    cache: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Cached>>>>>,
    /// Client tokens checked, by their SHA-256 (the tokens themselves are never kept): their
    /// project (`None`: not valid), until re-checked.
    validated: Mutex<HashMap<[u8; 32], Validation>>,
    /// Validations in flight: a flood of made-up tokens waits here rather than flooding Keystone.
    validating: tokio::sync::Semaphore,
}

#[derive(Clone)]
struct Validation {
    project: Option<String>,
    until: std::time::Instant,
}

/// How long a client token found valid is trusted before Keystone is asked again (never past
/// its own expiry)...
const VALIDATION_TTL: Duration = Duration::from_secs(60);
/// ...and how long one found invalid stays refused without asking.
const REFUSAL_TTL: Duration = Duration::from_secs(10);
/// Most validations remembered; when full, expired ones are dropped, and if none is, the new
/// one is not kept.
const VALIDATION_CACHE: usize = 10_000;
/// Most validations asked of Keystone at once.
const VALIDATIONS_IN_FLIGHT: usize = 16;

impl std::fmt::Debug for Keystone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keystone").field("tokens_url", &self.tokens_url.as_str()).finish_non_exhaustive()
    }
}

impl Keystone {
    /// A client for `config` over `tls` (from `keystone.tls`), or `None` when no Keystone is
    /// configured.
    pub fn new(
        config: &KeystoneConfig,
        tls: &ClientTls,
        timeout: Duration,
    ) -> Result<Option<Keystone>, reqwest::Error> {
        let Some(url) = &config.url else { return Ok(None) };
        let client = tls.reqwest().timeout(timeout).build()?;
        let mut tokens_url = url.clone();
        tokens_url.set_path(&format!("{}/auth/tokens", url.path().trim_end_matches('/')));
        Ok(Some(Keystone {
            client,
            tokens_url,
            credentials: config.environments.clone().into_iter().collect(),
            renew_before: config.renew_before_secs.map_or(DEFAULT_RENEW_BEFORE, Duration::from_secs_f64),
            cache: Mutex::default(),
            validated: Mutex::default(),
            validating: tokio::sync::Semaphore::new(VALIDATIONS_IN_FLIGHT),
        }))
    }

    /// A valid token for `environment`, or `None` if the gateway holds no credentials for it.
    /// `incoming`: the headers of the client request it is for, whose trace a fetch joins.
    pub async fn token(&self, environment: &str, incoming: &HeaderMap) -> Result<Option<String>, KeystoneError> {
        let Some(credentials) = self.credentials.get(environment) else { return Ok(None) };
        let slot = self.slot(environment);
        let mut cached = slot.lock().await;
        let fresh = |c: &Cached| c.expires - OffsetDateTime::now_utc() > self.renew_before;
        if let Some(c) = cached.as_ref().filter(|c| fresh(c)) {
            return Ok(Some(c.token.clone()));
        }
        let got = self.fetch(environment, credentials, incoming).await?;
        let token = got.token.clone();
        *cached = Some(got);
        Ok(Some(token))
    }

    /// The project of a client's token, or `None` if Keystone says it is not valid. A token is
    /// validated with itself (a user may always look at its own token), then trusted for a
    /// minute at most; a refused one stays refused for a few seconds. `incoming` as for [`Keystone::token`].
    pub async fn validate(&self, token: &str, incoming: &HeaderMap) -> Result<Option<String>, KeystoneError> {
        let key: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes");
        if let Some(known) = self.known(&key) {
            return Ok(known);
        }
        let _permit = self.validating.acquire().await.expect("the semaphore is never closed");
        // Another request may have checked it while this one waited.
        if let Some(known) = self.known(&key) {
            return Ok(known);
        }
        let (span, headers) = self.span(&Method::GET, incoming);
        let response = self
            .client
            .get(self.tokens_url.clone())
            .headers(headers)
            .header("x-auth-token", token)
            .header("x-subject-token", token)
            .send()
            .instrument(span.clone())
            .await
            .map_err(unreachable)?;
        span.record("status", response.status().as_u16());
        let now = std::time::Instant::now();
        let validation = match response.status().as_u16() {
            200 => {
                let bytes =
                    response.bytes().await.map_err(|e| KeystoneError::BadAnswer(e.without_url().to_string()))?;
                let body: Value =
                    serde_json::from_slice(&bytes).map_err(|e| KeystoneError::BadAnswer(e.to_string()))?;
                let left = match body["token"]["expires_at"].as_str().map(|s| OffsetDateTime::parse(s, &Rfc3339)) {
                    // Past its expiry (negative): not kept at all.
                    Some(Ok(expires)) => (expires - OffsetDateTime::now_utc()).try_into().unwrap_or(Duration::ZERO),
                    _ => VALIDATION_TTL,
                };
                let project = body["token"]["project"]["id"].as_str().unwrap_or_default().to_owned();
                Validation { project: Some(project), until: now + left.min(VALIDATION_TTL) }
            }
            401 | 404 => Validation { project: None, until: now + REFUSAL_TTL },
            status @ (429 | 500..) => return Err(KeystoneError::Unavailable(status)),
            // 403 included: a user may always validate its own token, so a refusal here is
            // Keystone's policy or the gateway's setup, not the client's token.
            other => return Err(KeystoneError::BadAnswer(format!("token validation answered {other}"))),
        };
        let mut validated = self.validated.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if validated.len() >= VALIDATION_CACHE {
            validated.retain(|_, v| v.until > now);
        }
        if validated.len() < VALIDATION_CACHE {
            validated.insert(key, validation.clone());
        }
        Ok(validation.project)
    }

    /// What an earlier validation found, while it holds.
    fn known(&self, key: &[u8; 32]) -> Option<Option<String>> {
        let validated = self.validated.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        validated.get(key).filter(|v| v.until > std::time::Instant::now()).map(|v| v.project.clone())
    }

    /// Forgets `token` for `environment` (Glance refused it), so the next call fetches anew.
    pub async fn invalidate(&self, environment: &str, token: &str) {
        let slot = self.slot(environment);
        let mut cached = slot.lock().await;
        if cached.as_ref().is_some_and(|c| c.token == token) {
            *cached = None;
        }
    }

    fn slot(&self, environment: &str) -> Arc<tokio::sync::Mutex<Option<Cached>>> {
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.entry(environment.to_owned()).or_default().clone()
    }

    /// The span of one call to Keystone, and the headers that carry it there.
    fn span(&self, method: &Method, incoming: &HeaderMap) -> (tracing::Span, HeaderMap) {
        let mut headers = HeaderMap::new();
        trace::correlate(incoming, &mut headers);
        let span = trace::upstream_span("keystone", method, self.tokens_url.path(), &mut headers);
        (span, headers)
    }

    async fn fetch(&self, environment: &str, c: &Credentials, incoming: &HeaderMap) -> Result<Cached, KeystoneError> {
        let identity = match (&c.application_credential_id, &c.application_credential_secret, &c.username, &c.password)
        {
            // An application credential is scoped to its own project; asking for a scope is an error.
            (Some(id), Some(secret), _, _) => json!({"auth": {"identity": {
                "methods": ["application_credential"],
                "application_credential": {"id": id, "secret": secret.expose()},
            }}}),
            (_, _, Some(user), Some(password)) => json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": user,
                    "domain": {"name": c.user_domain.as_deref().unwrap_or("Default")},
                    "password": password.expose(),
                }}},
                "scope": {"project": {"id": environment}},
            }}),
            // Config validation guarantees one complete kind.
            _ => return Err(KeystoneError::BadAnswer(format!("no usable credentials for {environment}"))),
        };
        let (span, headers) = self.span(&Method::POST, incoming);
        let response = self
            .client
            .post(self.tokens_url.clone())
            .headers(headers)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(identity.to_string())
            .send()
            .instrument(span.clone())
            .await
            .map_err(unreachable)?;
        let status = response.status();
        span.record("status", status.as_u16());
        if !status.is_success() {
            return Err(KeystoneError::Refused { environment: environment.to_owned(), status: status.as_u16() });
        }
        let token = response
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| KeystoneError::BadAnswer("no X-Subject-Token".into()))?;
        let bytes = response.bytes().await.map_err(|e| KeystoneError::BadAnswer(e.without_url().to_string()))?;
        let body: Value = serde_json::from_slice(&bytes).map_err(|e| KeystoneError::BadAnswer(e.to_string()))?;
        let expires = body["token"]["expires_at"]
            .as_str()
            .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
            .ok_or_else(|| KeystoneError::BadAnswer("token without a usable expires_at".into()))?;
        // The token must act for this environment, whatever the credentials were set up for.
        let project = body["token"]["project"]["id"].as_str().unwrap_or_default();
        if project != environment {
            return Err(KeystoneError::BadAnswer(format!(
                "the credentials for environment {environment} give a token for project {project}"
            )));
        }
        tracing::debug!(environment, expires = %expires, "got a Keystone token");
        Ok(Cached { token, expires })
    }
}
