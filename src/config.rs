//! Gateway configuration: a TOML file, overridden by `IMAGE_GATEWAY_*` environment variables
//! (`__` separates nested keys: `IMAGE_GATEWAY_GLANCE__URL`).
//!
//! Unknown keys are errors, so a typo never silently falls back to a default. Values that
//! parse but make no sense together are caught by [`Config::validate`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::mapping::ApiVersion;

/// Where `serve` and `check` look when `--config` is not given.
pub const DEFAULT_PATH: &str = "config/gateway.toml";
const ENV_PREFIX: &str = "IMAGE_GATEWAY_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// figment's message names the key and the file or variable that supplied it.
    #[error("{0}")]
    Load(#[from] Box<figment::Error>),
    #[error("{file}: {key}: {problem}")]
    Invalid { file: String, key: &'static str, problem: String },
    #[error("{0}: file not found")]
    Missing(PathBuf),
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the gateway listens on.
    pub listen: SocketAddr,
    /// The address clients use to reach the gateway (e.g. `https://compute.example.com`), used
    /// in every link the gateway writes. Without it links are built from the `Host` header.
    pub public_url: Option<Url>,
    /// Peers (IP addresses or networks) whose `X-Forwarded-Proto`, `-Host` and `-Prefix` decide
    /// the links the gateway writes: the ingress controllers or proxies in front of it.
    pub trusted_proxies: Vec<String>,
    /// Peers (IP addresses or networks) whose identity headers (`X-Roles`, `X-Project-Id`,
    /// `X-Identity-Status`, ...) are believed and passed on: an auth layer in front that sets
    /// them itself. Everybody else's are dropped before any route sees them.
    pub identity_proxies: Vec<String>,
    /// Directory holding the dialects' mapping files. Without it the mapping files built into
    /// the binary are used.
    pub mappings_dir: Option<PathBuf>,
    /// The dialects served: each entry a kind (the Rust that serves it), its mapping file and
    /// its mounts. The key names the entry in errors.
    pub dialects: BTreeMap<String, DialectConfig>,
    pub server: ServerConfig,
    pub limits: Limits,
    pub glance: GlanceConfig,
    pub nova: NovaConfig,
    pub glance_v1: GlanceV1Config,
    pub alliance: AllianceConfig,
    pub keystone: KeystoneConfig,
    pub shutdown: ShutdownConfig,
    pub reload: ReloadConfig,
    pub log: LogConfig,
    pub tracing: TracingConfig,
}

/// One dialect served by the gateway.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DialectConfig {
    /// Which dialect this is: the module that serves it.
    pub kind: DialectKind,
    /// Its mapping file, in `mappings_dir`. Without `mappings_dir`, the built-in copy of the
    /// kind's file, which this must then name.
    pub mapping: String,
    /// The paths its routes are served below ("" for the root, where the kind allows it).
    #[serde(default)]
    pub mounts: Vec<String>,
    /// Nova only: roots of the legacy v2 API (run as 2.1, no microversion headers).
    #[serde(default)]
    pub legacy_mounts: Vec<String>,
}

/// The dialects the gateway has Rust for.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum DialectKind {
    Nova,
    Alliance,
    GlanceV1,
}

impl DialectKind {
    pub fn name(self) -> &'static str {
        match self {
            DialectKind::Nova => "nova",
            DialectKind::Alliance => "alliance",
            DialectKind::GlanceV1 => "glance_v1",
        }
    }

    /// The name of the kind's mapping file built into the binary.
    pub fn built_in_mapping(self) -> &'static str {
        match self {
            DialectKind::Nova => "nova.toml",
            DialectKind::Alliance => "alliance.toml",
            DialectKind::GlanceV1 => "glance_v1.toml",
        }
    }

    /// Whether the kind serves its calls at the root (`/images` for Alliance).
    fn mounts_at_root(self) -> bool {
        self == DialectKind::Alliance
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AllianceConfig {
    /// Namespace for requests without `X-Target-Ns`; unset: the header is required.
    pub default_namespace: Option<String>,
    /// `X-Target-Ns` values, each a Glance.
    pub namespaces: BTreeMap<String, NamespaceConfig>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    /// This namespace's Glance; unset: `glance.url` (or the in-memory store).
    pub glance_url: Option<Url>,
    /// TLS to this namespace's own Glance; unset: `glance.tls`.
    pub tls: Option<UpstreamTls>,
    /// How callers prove who they are.
    #[serde(default)]
    pub identity: IdentityMode,
    /// Callers allowed to act without a token of their own (`identity` other than `token`).
    #[serde(default)]
    pub trusted_callers: Vec<TrustedCaller>,
}

/// Callers trusted to act for environments with the gateway's own credentials: peers in
/// `networks`, and/or presenting a client certificate that the listener's
/// `server.tls.client_ca_file` verified (with one of `certificate_names`, when given). Both
/// must hold when both are given; at least one must be.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TrustedCaller {
    /// IP addresses or networks.
    #[serde(default)]
    pub networks: Vec<String>,
    /// Whether a verified client certificate is required.
    #[serde(default)]
    pub client_certificate: bool,
    /// The DNS names or common names the certificate must carry one of; empty: any.
    #[serde(default)]
    pub certificate_names: Vec<String>,
    /// The environments (project ids) these callers may act for; empty: all of them.
    #[serde(default)]
    pub environments: Vec<String>,
}

/// TLS to one upstream. Without `ca_file` the system's trust store decides.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM bundle of the CAs trusted for this upstream, instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM, with its chain) and key, for an upstream that asks for one.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Accept any certificate (a warning at every start): never in production.
    #[serde(default)]
    pub insecure: bool,
}

/// TLS on the listener: HTTPS with ALPN (HTTP/2 and HTTP/1.1). Files renewed on disk are
/// picked up without a restart.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// CAs whose client certificates are verified (mutual TLS); unset: none asked for.
    pub client_ca_file: Option<PathBuf>,
    /// Refuse clients without such a certificate at the handshake (else they are served, as
    /// callers without a certificate).
    #[serde(default)]
    pub require_client_certificate: bool,
}

/// How a namespace's callers prove who they are. In every mode a caller may send its own
/// `X-Auth-Token`: Keystone validates it and its project must be the `X-Environment-Id`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IdentityMode {
    /// Only that: a caller without a valid token of the environment's project gets 401.
    #[default]
    Token,
    /// Also: a `trusted_callers` caller without a token acts with a token the gateway gets
    /// with the environment's credentials (`keystone.environments`).
    GatewayCredentials,
    /// Also: a `trusted_callers` caller without a token is sent as identity headers
    /// (`X-Project-Id` = the environment, `X-Identity-Status: Confirmed`): only for a Glance
    /// behind an auth layer that trusts them, or the in-memory store.
    TrustedHeaders,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeystoneConfig {
    /// Keystone's v3 endpoint (`http://keystone:5000/v3`); needed for `environments`.
    pub url: Option<Url>,
    /// Renew a cached token this many seconds before it expires.
    pub renew_before_secs: Option<f64>,
    /// Validate the tokens of Nova clients with Keystone: a missing or invalid token is a 401
    /// before Glance is asked, and the token's project is what the URL's project id must match.
    #[serde(default)]
    pub validate_nova_tokens: bool,
    /// Credentials by environment (Keystone project id). Secrets are best given as
    /// environment variables: IMAGE_GATEWAY_KEYSTONE__ENVIRONMENTS__<PROJECT_ID>__PASSWORD.
    pub environments: BTreeMap<String, Credentials>,
    /// TLS to `url`.
    #[serde(default)]
    pub tls: UpstreamTls,
}

/// How the gateway authenticates for one environment: a user's password (scoped to the
/// environment's project), or an application credential (scoped to its own project, which
/// must be the environment).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Domain of the user (name); default `Default`.
    pub user_domain: Option<String>,
    pub application_credential_id: Option<String>,
    pub application_credential_secret: Option<Secret>,
}

/// A password or an application credential's secret. It never prints (`Debug` shows `***`,
/// so no log line, panic message or `check` output can carry it), never serializes (an error:
/// no configuration dump can carry it either), and this copy is wiped from memory when dropped.
#[derive(Clone)]
pub struct Secret(SecretString);

impl<'de> Deserialize<'de> for Secret {
    /// Text only; anything else is refused without echoing it (serde's own message would).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Secret;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a secret as a quoted string")
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Secret, E> {
                Ok(Secret::new(value))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(E::custom("a secret must be a quoted string, not a number"))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(E::custom("a secret must be a quoted string, not a number"))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom("a secret must be a quoted string, not a number"))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom("a secret must be a quoted string, not a boolean"))
            }
        }
        deserializer.deserialize_any(Text)
    }
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }

    /// The value, for the one place that sends it (the Keystone token request).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("a secret is never serialized"))
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After SIGTERM: how long `/readyz` fails while requests are still served, so that
    /// Kubernetes (or a load balancer) stops routing here first. Match the pod's preStop delay.
    pub drain_delay_secs: f64,
    /// Then: how long requests in flight may take to finish before they are dropped.
    pub grace_period_secs: f64,
}

/// Reloading on change (docs/operations.md, "Reload"). Fixed at start: a reload does not
/// change it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Watch the configuration file's directory and `mappings_dir`, and reload when what they
    /// hold changes (as SIGHUP does): a Kubernetes ConfigMap update needs no restart.
    pub watch: bool,
    /// A change is acted on once the files have been quiet this long (at most 2 s after the
    /// first change of a burst, or this if longer), so that a burst of writes makes one reload.
    pub debounce_ms: u64,
}

/// What the gateway's HTTP server tolerates from a client connection (docs/operations.md,
/// "Server limits"). Fixed at start: a reload does not change them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// A request's whole head must arrive within this, counted from the connection's accept
    /// or from the first byte of a later request; else the connection is closed.
    pub header_read_timeout_secs: f64,
    /// A kept-alive connection waiting for its next request is closed after this.
    pub keepalive_timeout_secs: f64,
    /// A request body that sends nothing for this long fails (408 from the dialects).
    pub body_idle_timeout_secs: f64,
    /// A client that takes nothing of its answer for this long is disconnected.
    pub send_timeout_secs: f64,
    /// Largest request head (request line and headers), in bytes; above it, hyper's 431.
    pub max_header_bytes: usize,
    /// Most header fields in a request; above it, hyper's 431.
    pub max_headers: usize,
    /// Longest request target (path and query), in bytes; above it, 414 (as Nova's own server
    /// and nginx's default buffers): such a request could only fail upstream.
    pub max_request_target_bytes: usize,
    /// Most client connections open at once; at the limit the gateway stops accepting.
    pub max_connections: usize,
    /// After answering a request whose body was left unread, how long to keep reading (and
    /// dropping) what the client still sends, so that it reads the answer rather than a reset.
    /// 0: close at once.
    pub lingering_close_secs: f64,
    /// HTTPS on the listener; unset: plain HTTP.
    pub tls: Option<ListenerTls>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Whole-request deadline, upstream calls included.
    pub request_timeout_secs: f64,
    /// Largest JSON request body accepted.
    pub body_limit_bytes: u64,
    /// Heavy requests (translated lists) served at once; more are answered 503 with
    /// `Retry-After` at once. Each holds about a raw Glance page and a page of answer (some
    /// 3 MiB at `glance.page_size` 1000): the default fits a 256 MiB memory limit.
    pub max_heavy_in_flight: u32,
    /// The `Retry-After` of those 503s.
    pub retry_after_secs: f64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GlanceConfig {
    /// Glance v2 endpoint (without `/v2`). Without it the gateway serves an in-memory store.
    pub url: Option<Url>,
    /// Glance's address as clients see it, for `alternate` links. Defaults to `url`.
    pub public_url: Option<Url>,
    /// Where Glance's own v2 API is served through the gateway (passed through to `url`, or the
    /// in-memory store).
    pub mount: String,
    pub connect_timeout_secs: f64,
    /// Deadline of one Glance call.
    pub timeout_secs: f64,
    /// Images asked for per Glance list call when a client list spans several pages.
    pub page_size: u32,
    /// Consecutive failures (unreachable, timed out, 5xx) after which calls fail at once...
    pub circuit_breaker_failures: u32,
    /// ...for this long, before one trial call.
    pub circuit_breaker_cooldown_secs: f64,
    /// Request headers passed on to Glance: the token and, for a Glance that trusts an auth
    /// layer in front, the identity headers, which only reach this far from `identity_proxies`.
    pub forward_headers: Vec<String>,
    /// Who a caller is to the in-memory store (without `url`).
    pub embedded_identity: EmbeddedIdentity,
    /// TLS to `url`.
    pub tls: UpstreamTls,
}

/// How the in-memory store tells callers apart.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddedIdentity {
    /// Every caller acts in one project, without admin rights.
    #[default]
    SingleProject,
    /// From `X-Project-Id` and `X-Roles` as they reach the store (development): a client's own
    /// only from `identity_proxies`, else the gateway's (an Alliance `trusted_headers` namespace).
    Headers,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NovaConfig {
    /// Highest microversion accepted (and what `latest` means); higher ones get Nova's 406.
    pub max_microversion: String,
    /// When true, answer 404 above each route's `max_version`, exactly as Nova does. By
    /// default the gateway keeps serving the calls at every microversion: that is its point.
    pub enforce_removal: bool,
    /// Nova's `[api] max_limit`: the largest page before `images_links` appears.
    pub max_limit: u32,
    /// Nova's `[quota] metadata_items`: most metadata keys per image; -1 for no limit.
    pub metadata_items: i64,
    /// The real Nova (`http://nova:8774`): every request under the mounts that is not an image
    /// call (servers, flavors, version documents) is passed to it. Unset: those get Nova's 404.
    pub upstream_url: Option<Url>,
    /// TLS to `upstream_url`.
    pub upstream_tls: UpstreamTls,
}

/// The Glance v1 dialect (docs/glance-v1.md).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GlanceV1Config {
    /// Largest image one v1 upload may send; unset: as large as Glance takes (its own
    /// `image_size_cap`). Image bytes stream through, whatever this is.
    pub max_image_bytes: Option<u64>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `json` (one object per line, for log pipelines) or `text`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `image_gateway=debug,info`; `RUST_LOG` wins.
    pub filter: String,
}

/// W3C trace context (`traceparent`, `tracestate`): see [`crate::layers::trace`].
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// Join the trace a client's valid `traceparent` names (its `tracestate` passed on); when
    /// false, every request starts a trace of its own, for a gateway whose clients' trace
    /// ids should not reach the upstreams' logs.
    pub accept_client_context: bool,
    /// An OpenTelemetry collector's OTLP/HTTP base (`http://collector:4318`): the spans of
    /// sampled traces are sent to its `/v1/traces`. Unset: nothing is exported (ids are still
    /// made and sent upstream).
    pub otlp_endpoint: Option<Url>,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig { accept_client_context: true, otlp_endpoint: None }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8774)),
            public_url: None,
            trusted_proxies: Vec::new(),
            identity_proxies: Vec::new(),
            mappings_dir: None,
            dialects: [
                (
                    "nova".to_owned(),
                    DialectConfig {
                        kind: DialectKind::Nova,
                        mapping: "nova.toml".into(),
                        mounts: vec!["/v2.1".into()],
                        legacy_mounts: vec!["/v2".into()],
                    },
                ),
                (
                    "alliance".to_owned(),
                    DialectConfig {
                        kind: DialectKind::Alliance,
                        mapping: "alliance.toml".into(),
                        mounts: vec![String::new()],
                        legacy_mounts: Vec::new(),
                    },
                ),
                (
                    "glance_v1".to_owned(),
                    DialectConfig {
                        kind: DialectKind::GlanceV1,
                        mapping: "glance_v1.toml".into(),
                        mounts: vec!["/image-v1".into()],
                        legacy_mounts: Vec::new(),
                    },
                ),
            ]
            .into(),
            server: ServerConfig {
                header_read_timeout_secs: 10.0,
                keepalive_timeout_secs: 90.0,
                body_idle_timeout_secs: 30.0,
                send_timeout_secs: 30.0,
                max_header_bytes: 64 << 10,
                max_headers: 100,
                max_request_target_bytes: 8192,
                max_connections: 1024,
                lingering_close_secs: 5.0,
                tls: None,
            },
            limits: Limits {
                request_timeout_secs: 60.0,
                body_limit_bytes: 1 << 20,
                max_heavy_in_flight: 32,
                retry_after_secs: 1.0,
            },
            glance: GlanceConfig {
                url: None,
                public_url: None,
                mount: "/image".into(),
                connect_timeout_secs: 5.0,
                timeout_secs: 30.0,
                page_size: 1000,
                circuit_breaker_failures: 5,
                circuit_breaker_cooldown_secs: 5.0,
                forward_headers: [
                    "x-auth-token",
                    "x-identity-status",
                    "x-project-id",
                    "x-user-id",
                    "x-roles",
                    "x-tenant-id",
                    "x-domain-id",
                ]
                .map(String::from)
                .to_vec(),
                embedded_identity: EmbeddedIdentity::SingleProject,
                tls: UpstreamTls::default(),
            },
            nova: NovaConfig {
                max_microversion: "2.104".into(),
                enforce_removal: false,
                max_limit: 1000,
                metadata_items: 128,
                upstream_url: None,
                upstream_tls: UpstreamTls::default(),
            },
            glance_v1: GlanceV1Config::default(),
            alliance: AllianceConfig::default(),
            keystone: KeystoneConfig::default(),
            shutdown: ShutdownConfig { drain_delay_secs: 5.0, grace_period_secs: 25.0 },
            reload: ReloadConfig { watch: true, debounce_ms: 300 },
            log: LogConfig { format: LogFormat::Json, filter: "info".into() },
            tracing: TracingConfig::default(),
        }
    }
}

/// What is wrong with a list of networks trusted with identity, if anything: each must parse,
/// and none may be every address (that is trusting anyone who names it).
fn trust_problem(networks: &[String]) -> Option<String> {
    networks.iter().find_map(|n| match n.parse::<crate::public_url::Cidr>() {
        Err(problem) => Some(problem),
        Ok(cidr) if cidr.is_everything() => Some(format!("`{n}` trusts every address: name the peers")),
        Ok(_) => None,
    })
}

/// Whether `key` (dotted, as figment spells it) holds a [`Secret`].
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.ends_with(".password") || key.ends_with(".application_credential_secret")
}

/// What is wrong with a mount path, if anything.
fn mount_problem(mount: &str) -> Option<String> {
    let bad = !mount.starts_with('/') || mount.ends_with('/') || mount.contains(['{', '}', '*', '?']);
    bad.then(|| format!("`{mount}` must start with `/`, not end with `/`, and hold no pattern"))
}

/// Whether a URL carries a user or password: they would go with every client's request.
fn has_credentials(url: &Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}

/// What is wrong with one upstream's TLS, if anything: its files parse, a client certificate
/// comes with its key, and `insecure` does not contradict a `ca_file`.
fn upstream_tls_problem(tls: &UpstreamTls) -> Option<String> {
    if tls.insecure && tls.ca_file.is_some() {
        return Some("insecure = true trusts any certificate, so ca_file contradicts it: remove one".into());
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(_), None) => return Some("cert_file needs key_file".into()),
        (None, Some(_)) => return Some("key_file needs cert_file".into()),
        _ => {}
    }
    for (key, path) in [("ca_file", &tls.ca_file), ("cert_file", &tls.cert_file)] {
        if let Some(Err(e)) = path.as_deref().map(crate::tls::load_certs) {
            return Some(format!("{key}: {e}"));
        }
    }
    match tls.key_file.as_deref().map(crate::tls::load_key) {
        Some(Err(e)) => Some(format!("key_file: {e}")),
        _ => None,
    }
}

impl Config {
    /// Loads defaults, then the file, then the environment. `explicit` says whether the path
    /// came from the command line: a missing default file is fine, a missing named one is not.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        Config::load_with(path, explicit, None)
    }

    /// As [`Config::load`], with `overlay` (a TOML file) read as if appended to the file: the
    /// settings a directory of golden cases assumes (`image-gateway test`).
    pub fn load_with(path: &Path, explicit: bool, overlay: Option<&Path>) -> Result<Config, ConfigError> {
        if explicit && !path.is_file() {
            return Err(ConfigError::Missing(path.to_owned()));
        }
        let env = Env::prefixed(ENV_PREFIX).split("__");
        let mut figment = Figment::from(Serialized::defaults(Config::default())).merge(Toml::file(path));
        if let Some(overlay) = overlay {
            figment = figment.merge(Toml::file(overlay));
        }
        let mut figment = figment.merge(env.clone().filter(|key| !is_secret_key(key.as_str())));
        // Secrets from the environment are text exactly as given: figment would read `007` as
        // the number 7, and `true` as a boolean.
        for (key, value) in env.iter().filter(|(key, _)| is_secret_key(key.as_str())) {
            figment = figment.merge(Serialized::default(key.as_str(), value));
        }
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate(&path.display().to_string())?;
        Ok(config)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let invalid = |key, problem: String| Err(ConfigError::Invalid { file: file.to_owned(), key, problem });
        for (key, secs) in [
            ("server.header_read_timeout_secs", self.server.header_read_timeout_secs),
            ("server.keepalive_timeout_secs", self.server.keepalive_timeout_secs),
            ("server.body_idle_timeout_secs", self.server.body_idle_timeout_secs),
            ("server.send_timeout_secs", self.server.send_timeout_secs),
            ("limits.request_timeout_secs", self.limits.request_timeout_secs),
            ("glance.connect_timeout_secs", self.glance.connect_timeout_secs),
            ("glance.timeout_secs", self.glance.timeout_secs),
            ("glance.circuit_breaker_cooldown_secs", self.glance.circuit_breaker_cooldown_secs),
            ("limits.retry_after_secs", self.limits.retry_after_secs),
        ] {
            if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0) {
                return invalid(key, format!("{secs} is not a number of seconds between 0 and 86400"));
            }
        }
        for (key, secs) in [
            ("shutdown.drain_delay_secs", self.shutdown.drain_delay_secs),
            ("shutdown.grace_period_secs", self.shutdown.grace_period_secs),
        ] {
            if !(secs.is_finite() && (0.0..=3600.0).contains(&secs)) {
                return invalid(key, format!("{secs} is not a number of seconds between 0 and 3600"));
            }
        }
        let linger = self.server.lingering_close_secs;
        if !(linger.is_finite() && (0.0..=60.0).contains(&linger)) {
            return invalid(
                "server.lingering_close_secs",
                format!("{linger} is not a number of seconds between 0 and 60"),
            );
        }
        for (key, value, range) in [
            // hyper reads 8 KiB at a time, so a lower limit saves nothing and only refuses
            // clients; above 1 MiB, a connection's read buffer would grow as far.
            ("server.max_header_bytes", self.server.max_header_bytes, 8192..=1 << 20),
            ("server.max_headers", self.server.max_headers, 16..=10_000),
            // Within the head's limit: a target longer than the whole head cannot arrive.
            (
                "server.max_request_target_bytes",
                self.server.max_request_target_bytes,
                256..=self.server.max_header_bytes,
            ),
            ("server.max_connections", self.server.max_connections, 1..=1_000_000),
            // Under 10 ms a kubelet's swap would make several reloads; over 10 s a change waits long.
            ("reload.debounce_ms", usize::try_from(self.reload.debounce_ms).unwrap_or(usize::MAX), 10..=10_000),
        ] {
            if !range.contains(&value) {
                return invalid(key, format!("{value} is not between {} and {}", range.start(), range.end()));
            }
        }
        if let Some(tls) = &self.server.tls {
            if tls.require_client_certificate && tls.client_ca_file.is_none() {
                let problem = "needs server.tls.client_ca_file to verify the certificates".to_owned();
                return invalid("server.tls.require_client_certificate", problem);
            }
            // The files as they are now: a renewal that breaks them later is refused then, and
            // the previous certificate kept (crate::tls::server).
            if let Err(e) = crate::tls::server::check(tls) {
                return invalid(e.key, e.error.to_string());
            }
        }
        if let Some(problem) = self.trusted_proxies.iter().find_map(|p| p.parse::<crate::public_url::Cidr>().err()) {
            return invalid("trusted_proxies", problem);
        }
        if let Some(problem) = trust_problem(&self.identity_proxies) {
            return invalid("identity_proxies", problem);
        }
        if self.limits.body_limit_bytes == 0 {
            return invalid("limits.body_limit_bytes", "must be at least 1".into());
        }
        if self.limits.max_heavy_in_flight == 0 {
            return invalid("limits.max_heavy_in_flight", "must be at least 1".into());
        }
        for (key, url) in [
            ("public_url", &self.public_url),
            ("glance.url", &self.glance.url),
            ("glance.public_url", &self.glance.public_url),
            ("nova.upstream_url", &self.nova.upstream_url),
            ("tracing.otlp_endpoint", &self.tracing.otlp_endpoint),
        ] {
            if let Some(url) = url {
                // Said without the URL, which would put the password in a log line.
                if has_credentials(url) {
                    return invalid(key, "must not hold credentials: clients bring their own".into());
                }
                if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() || url.query().is_some() {
                    return invalid(key, format!("`{url}` is not an http(s) base URL without a query"));
                }
            }
        }
        for (key, tls) in [
            ("glance.tls", &self.glance.tls),
            ("keystone.tls", &self.keystone.tls),
            ("nova.upstream_tls", &self.nova.upstream_tls),
        ] {
            if let Some(problem) = upstream_tls_problem(tls) {
                return invalid(key, problem);
            }
        }
        if self.glance.circuit_breaker_failures == 0 {
            return invalid("glance.circuit_breaker_failures", "must be at least 1".into());
        }
        if !(1..=10_000).contains(&self.glance.page_size) {
            return invalid("glance.page_size", format!("{} is not between 1 and 10000", self.glance.page_size));
        }
        if let Some(bad) =
            self.glance.forward_headers.iter().find(|h| http::HeaderName::from_bytes(h.as_bytes()).is_err())
        {
            return invalid("glance.forward_headers", format!("`{bad}` is not a header name"));
        }
        if let Some(problem) = mount_problem(&self.glance.mount) {
            return invalid("glance.mount", problem);
        }
        if let Err((key, problem)) = self.dialects_problem() {
            return invalid(key, problem);
        }
        if let Some(ns) =
            self.alliance.default_namespace.as_ref().filter(|ns| !self.alliance.namespaces.contains_key(*ns))
        {
            return invalid("alliance.default_namespace", format!("`{ns}` is not one of alliance.namespaces"));
        }
        for (name, ns) in &self.alliance.namespaces {
            if ns.glance_url.as_ref().is_some_and(has_credentials) {
                let problem = format!("namespace `{name}`: must not hold credentials: clients bring their own");
                return invalid("alliance.namespaces.*.glance_url", problem);
            }
            if let Some(url) = ns.glance_url.as_ref().filter(|u| !matches!(u.scheme(), "http" | "https")) {
                return invalid(
                    "alliance.namespaces.*.glance_url",
                    format!("`{url}` of namespace `{name}` is not http(s)"),
                );
            }
            if let Some(tls) = &ns.tls {
                let problem = match &ns.glance_url {
                    Some(_) => upstream_tls_problem(tls),
                    None => Some("needs glance_url: without it the namespace uses glance.url and glance.tls".into()),
                };
                if let Some(problem) = problem {
                    return invalid("alliance.namespaces.*.tls", format!("namespace `{name}`: {problem}"));
                }
            }
            if let Some(problem) = self.trusted_callers_problem(ns) {
                return invalid("alliance.namespaces.*.trusted_callers", format!("namespace `{name}`: {problem}"));
            }
            let in_memory = ns.glance_url.is_none() && self.glance.url.is_none();
            let isolated = ns.identity == IdentityMode::TrustedHeaders
                && self.glance.embedded_identity == EmbeddedIdentity::Headers;
            if in_memory && !isolated {
                let problem = format!(
                    "namespace `{name}` on the in-memory store needs identity = \"trusted_headers\" and \
                     glance.embedded_identity = \"headers\": else its environments would share one project"
                );
                return invalid("alliance.namespaces.*.identity", problem);
            }
            if ns.identity != IdentityMode::TrustedHeaders && self.keystone.url.is_none() {
                let problem = format!(
                    "is needed by namespace `{name}`: its callers' tokens (and the gateway's own, with \
                     identity = \"gateway_credentials\") are checked with Keystone"
                );
                return invalid("keystone.url", problem);
            }
        }
        if (!self.keystone.environments.is_empty() || self.keystone.validate_nova_tokens) && self.keystone.url.is_none()
        {
            return invalid(
                "keystone.url",
                "is needed for keystone.environments and keystone.validate_nova_tokens".into(),
            );
        }
        for (env, c) in &self.keystone.environments {
            let password = c.username.is_some() && c.password.is_some();
            let app = c.application_credential_id.is_some() && c.application_credential_secret.is_some();
            if password == app {
                return invalid(
                    "keystone.environments",
                    format!("`{env}` needs username and password, or application_credential_id and _secret (one kind)"),
                );
            }
        }
        match self.nova.max_microversion.parse::<ApiVersion>() {
            Ok(v) if v >= ApiVersion::new(2, 1) => {}
            _ => {
                return invalid(
                    "nova.max_microversion",
                    format!("`{}` is not a version of 2.1 or above", self.nova.max_microversion),
                )
            }
        }
        if self.nova.metadata_items < -1 {
            return invalid(
                "nova.metadata_items",
                format!("{} is neither -1 (no limit) nor a count", self.nova.metadata_items),
            );
        }
        if self.nova.max_limit == 0 {
            return invalid("nova.max_limit", "must be at least 1".into());
        }
        Ok(())
    }

    /// What is wrong with `dialects`, if anything: known files, clean mounts that no two
    /// entries share, and each kind served by one entry at most.
    fn dialects_problem(&self) -> Result<(), (&'static str, String)> {
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        let mut kinds: BTreeMap<DialectKind, &str> = BTreeMap::new();
        for (name, d) in &self.dialects {
            if let Some(other) = kinds.insert(d.kind, name) {
                let problem =
                    format!("`{name}` and `{other}` are both of kind `{}`: one entry per kind", d.kind.name());
                return Err(("dialects.*.kind", problem));
            }
            let file_ok = d.mapping.ends_with(".toml") && !d.mapping.contains(['/', '\\']) && d.mapping != ".toml";
            if !file_ok {
                let problem = format!("`{}` of `{name}` is not a file name ending in .toml", d.mapping);
                return Err(("dialects.*.mapping", problem));
            }
            if self.mappings_dir.is_none() && d.mapping != d.kind.built_in_mapping() {
                let problem = format!(
                    "`{}` of `{name}` needs mappings_dir: only `{}` is built in for kind `{}`",
                    d.mapping,
                    d.kind.built_in_mapping(),
                    d.kind.name()
                );
                return Err(("dialects.*.mapping", problem));
            }
            if d.kind != DialectKind::Nova && !d.legacy_mounts.is_empty() {
                return Err(("dialects.*.legacy_mounts", format!("`{name}`: only kind `nova` has legacy mounts")));
            }
            if d.kind == DialectKind::Nova && d.mounts.is_empty() && !d.legacy_mounts.is_empty() {
                return Err(("dialects.*.mounts", format!("`{name}`: legacy mounts need a microversioned one")));
            }
            let keyed = d.mounts.iter().map(|m| ("dialects.*.mounts", m));
            for (key, mount) in keyed.chain(d.legacy_mounts.iter().map(|m| ("dialects.*.legacy_mounts", m))) {
                let root_ok = mount.is_empty() && d.kind.mounts_at_root() && key == "dialects.*.mounts";
                if let Some(problem) = mount_problem(mount).filter(|_| !root_ok) {
                    return Err((key, format!("`{name}`: {problem}")));
                }
                if let Some(other) = seen.insert(mount, name) {
                    return Err((key, format!("`{mount}` of `{name}` is also a mount of `{other}`")));
                }
            }
        }
        Ok(())
    }

    /// The entry serving dialect `kind`, if any.
    pub fn dialect(&self, kind: DialectKind) -> Option<&DialectConfig> {
        self.dialects.values().find(|d| d.kind == kind)
    }

    /// What is wrong with a namespace's trusted callers, if anything: they exist exactly when
    /// the identity mode can use them, and none of them is "anyone".
    fn trusted_callers_problem(&self, ns: &NamespaceConfig) -> Option<String> {
        match (ns.identity, ns.trusted_callers.is_empty()) {
            (IdentityMode::Token, false) => {
                return Some(
                    "identity = \"token\" trusts no caller without a token: remove them or \
                     choose gateway_credentials or trusted_headers"
                        .into(),
                )
            }
            (IdentityMode::GatewayCredentials | IdentityMode::TrustedHeaders, true) => {
                return Some(
                    "name the callers trusted to act without a token (networks and/or client_certificate)".into(),
                )
            }
            _ => {}
        }
        for caller in &ns.trusted_callers {
            if caller.networks.is_empty() && !caller.client_certificate {
                return Some("an entry trusts anyone: give networks and/or client_certificate = true".into());
            }
            if let Some(problem) = trust_problem(&caller.networks) {
                return Some(problem);
            }
            if !caller.certificate_names.is_empty() && !caller.client_certificate {
                return Some("certificate_names needs client_certificate = true".into());
            }
            let verifies = self.server.tls.as_ref().is_some_and(|tls| tls.client_ca_file.is_some());
            if caller.client_certificate && !verifies {
                return Some("client_certificate needs server.tls.client_ca_file to verify them".into());
            }
        }
        None
    }

    /// The peers whose identity headers are believed (checked by validate()).
    pub fn identity_proxies(&self) -> Vec<crate::public_url::Cidr> {
        self.identity_proxies.iter().filter_map(|p| p.parse().ok()).collect()
    }

    pub fn origin_policy(&self) -> crate::public_url::OriginPolicy {
        crate::public_url::OriginPolicy {
            configured: self.public_url.as_ref().map(|u| u.as_str().trim_end_matches('/').to_owned()),
            // validate() has checked them.
            trusted_proxies: self.trusted_proxies.iter().filter_map(|p| p.parse().ok()).collect(),
        }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.limits.request_timeout_secs)
    }

    pub fn max_microversion(&self) -> ApiVersion {
        // validate() has checked it.
        self.nova.max_microversion.parse().unwrap_or(ApiVersion::new(2, 1))
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;
    use figment::Jail;

    fn load_in(jail: &Jail, file: &str) -> Result<Config, String> {
        jail.create_file("gateway.toml", file).map_err(|e| e.to_string())?;
        Config::load(Path::new("gateway.toml"), true).map_err(|e| e.to_string())
    }

    #[test]
    fn file_then_environment() {
        Jail::expect_with(|jail| {
            jail.set_env("IMAGE_GATEWAY_LISTEN", "0.0.0.0:9000");
            jail.set_env("IMAGE_GATEWAY_GLANCE__URL", "http://glance.example:9292");
            let c = load_in(jail, "listen = \"127.0.0.1:1\"\n[glance]\ntimeout_secs = 5\n").unwrap();
            assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
            assert_eq!(c.glance.url.as_ref().unwrap().as_str(), "http://glance.example:9292/");
            assert_eq!(c.glance.timeout_secs, 5.0);
            assert_eq!(c.dialect(DialectKind::Nova).unwrap().mounts, ["/v2.1"]);
            assert_eq!(c.dialect(DialectKind::Alliance).unwrap().mounts, [""]);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        Jail::expect_with(|jail| {
            let e = load_in(jail, "[glance]\nurll = \"http://x\"\n").unwrap_err();
            assert!(e.contains("urll"), "{e}");
            let e = load_in(jail, "[tracing]\naccept_client_contexts = false\n").unwrap_err();
            assert!(e.contains("accept_client_contexts"), "{e}");
            jail.set_env("IMAGE_GATEWAY_NOVA__MOUNTT", "/x");
            let e = load_in(jail, "").unwrap_err();
            assert!(e.contains("mountt"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn invalid_values_name_the_key() {
        Jail::expect_with(|jail| {
            for (file, key) in [
                ("[glance]\nurl = \"ftp://x\"\n", "glance.url"),
                ("[nova]\nupstream_url = \"http://admin:s3cret@nova\"\n", "nova.upstream_url"),
                (
                    "[alliance.namespaces.a]\nidentity = \"token\"\nglance_url = \"http://admin:s3cret@g\"\n",
                    "glance_url",
                ),
                ("[glance]\ntimeout_secs = 0\n", "glance.timeout_secs"),
                ("[tracing]\notlp_endpoint = \"grpc://collector:4317\"\n", "tracing.otlp_endpoint"),
                ("[tracing]\notlp_endpoint = \"http://collector:4318?x=1\"\n", "tracing.otlp_endpoint"),
                ("[dialects.nova]\nmounts = [\"v2.1\"]\n", "dialects.*.mounts"),
                ("[dialects.nova]\nlegacy_mounts = [\"/v2.1\"]\n", "dialects.*.legacy_mounts"),
                ("[dialects.nova]\nmounts = [\"\"]\n", "dialects.*.mounts"),
                ("[dialects.alliance]\nlegacy_mounts = [\"/x\"]\n", "dialects.*.legacy_mounts"),
                ("[dialects.alliance]\nmounts = [\"/v2.1\"]\n", "dialects.*.mounts"),
                ("[dialects.alliance]\nmapping = \"my.toml\"\n", "dialects.*.mapping"),
                ("[dialects.alliance]\nmapping = \"../x.toml\"\n", "dialects.*.mapping"),
                ("[dialects.other]\nkind = \"nova\"\nmapping = \"nova.toml\"\n", "dialects.*.kind"),
                ("[dialects.nova]\nlegacy_mounts = [\"/v2\"]\nmounts = []\n", "dialects.*.mounts"),
                ("[nova]\nmax_microversion = \"2.x\"\n", "nova.max_microversion"),
                ("[glance]\nforward_headers = [\"bad header\"]\n", "glance.forward_headers"),
                ("[server]\nmax_connections = 0\n", "server.max_connections"),
                ("[server]\nmax_header_bytes = 4096\n", "server.max_header_bytes"),
                ("[server]\nmax_headers = 0\n", "server.max_headers"),
                ("[server]\nheader_read_timeout_secs = 0\n", "server.header_read_timeout_secs"),
                ("[server]\nkeepalive_timeout_secs = -1\n", "server.keepalive_timeout_secs"),
                ("[server]\nbody_idle_timeout_secs = inf\n", "server.body_idle_timeout_secs"),
                ("[server]\nlingering_close_secs = 61\n", "server.lingering_close_secs"),
                ("[reload]\ndebounce_ms = 0\n", "reload.debounce_ms"),
                ("[reload]\nwatch = true\nevery = 1\n", "every"),
                (
                    "[server.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nrequire_client_certificate = true\n",
                    "server.tls.require_client_certificate",
                ),
                ("[server.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n", "server.tls.cert_file"),
                ("identity_proxies = [\"nope\"]\n", "identity_proxies"),
                ("identity_proxies = [\"::/0\"]\n", "identity_proxies"),
                (
                    "[alliance.namespaces.a]\nidentity = \"trusted_headers\"\ntrusted_callers = [{networks = [\"0.0.0.0/0\"]}]\n",
                    "trusted_callers",
                ),
                (
                    "[alliance.namespaces.a]\nidentity = \"trusted_headers\"\ntrusted_callers = [{networks = [\"10.0.0.0/8\"]}]\n",
                    "alliance.namespaces.*.identity",
                ),
                // Trust is explicit: never "anyone", never where it cannot act.
                ("[alliance.namespaces.a]\nidentity = \"gateway_credentials\"\n", "trusted_callers"),
                (
                    "[alliance.namespaces.a]\nidentity = \"trusted_headers\"\ntrusted_callers = [{environments = [\"e\"]}]\n",
                    "trusted_callers",
                ),
                (
                    "[alliance.namespaces.a]\nidentity = \"trusted_headers\"\ntrusted_callers = [{client_certificate = true}]\n",
                    "trusted_callers",
                ),
                (
                    "[alliance.namespaces.a]\nglance_url = \"http://g:9292\"\ntrusted_callers = [{networks = [\"10.0.0.0/8\"]}]\n",
                    "trusted_callers",
                ),
                ("[alliance.namespaces.a]\nglance_url = \"http://g:9292\"\n", "keystone.url"),
            ] {
                let e = load_in(jail, file).unwrap_err();
                assert!(e.contains(key) && e.contains("gateway.toml"), "{file}: {e}");
                assert!(!e.contains("s3cret"), "{e}");
            }
            let e = load_in(jail, "listen = \"nowhere\"\n").unwrap_err();
            assert!(e.contains("listen"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn upstream_tls_files_and_switches_are_checked() {
        Jail::expect_with(|jail| {
            jail.create_file("not-pem.pem", "hello")?;
            jail.create_file("empty-key.pem", "")?;
            for (file, key, says) in [
                ("[glance.tls]\nca_file = \"missing.pem\"\n", "glance.tls", "ca_file: missing.pem"),
                ("[keystone.tls]\nca_file = \"not-pem.pem\"\n", "keystone.tls", "ca_file: not-pem.pem"),
                ("[nova.upstream_tls]\ncert_file = \"c.pem\"\n", "nova.upstream_tls", "cert_file needs key_file"),
                ("[glance.tls]\nkey_file = \"k.pem\"\n", "glance.tls", "key_file needs cert_file"),
                (
                    "[glance.tls]\ncert_file = \"not-pem.pem\"\nkey_file = \"empty-key.pem\"\n",
                    "glance.tls",
                    "cert_file: not-pem.pem",
                ),
                ("[glance.tls]\ninsecure = true\nca_file = \"not-pem.pem\"\n", "glance.tls", "contradicts"),
                (
                    concat!(
                        "[alliance.namespaces.a]\nidentity = \"trusted_headers\"\n",
                        "trusted_callers = [{networks = [\"10.0.0.0/8\"]}]\ntls = {insecure = true}\n",
                    ),
                    "alliance.namespaces.*.tls",
                    "namespace `a`: needs glance_url",
                ),
                (
                    concat!(
                        "[alliance.namespaces.a]\nidentity = \"trusted_headers\"\nglance_url = \"https://g\"\n",
                        "trusted_callers = [{networks = [\"10.0.0.0/8\"]}]\ntls = {ca_file = \"missing.pem\"}\n",
                    ),
                    "alliance.namespaces.*.tls",
                    "namespace `a`: ca_file: missing.pem",
                ),
            ] {
                let e = load_in(jail, file).unwrap_err();
                assert!(e.contains(key) && e.contains(says), "{file}: {e}");
            }
            jail.create_file("pem-without-key.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")?;
            let e = load_in(jail, "[glance.tls]\ncert_file = \"pem-without-key.pem\"\nkey_file = \"not-pem.pem\"\n")
                .unwrap_err();
            assert!(e.contains("glance.tls") && e.contains("key_file: not-pem.pem"), "{e}");
            load_in(jail, "[glance.tls]\ninsecure = true\n").unwrap();
            Ok(())
        });
    }

    #[test]
    fn missing_files() {
        Jail::expect_with(|_| {
            assert!(matches!(Config::load(Path::new("nope.toml"), true), Err(ConfigError::Missing(_))));
            assert!(Config::load(Path::new("nope.toml"), false).is_ok());
            Ok(())
        });
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_PATH);
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed: Config =
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(&text)).extract().unwrap();
        parsed.validate("gateway.toml").unwrap();
    }

    #[test]
    fn secrets_never_print_nor_serialize() {
        Jail::expect_with(|jail| {
            jail.set_env("IMAGE_GATEWAY_KEYSTONE__ENVIRONMENTS__P1__PASSWORD", "s3cret-value");
            // Digits stay text, leading zeros included.
            jail.set_env("IMAGE_GATEWAY_KEYSTONE__ENVIRONMENTS__P2__APPLICATION_CREDENTIAL_SECRET", "00123");
            jail.set_env("IMAGE_GATEWAY_KEYSTONE__ENVIRONMENTS__P2__APPLICATION_CREDENTIAL_ID", "app");
            let c =
                load_in(jail, "[keystone]\nurl = \"http://k:5000/v3\"\n[keystone.environments.p1]\nusername = \"u\"\n")
                    .unwrap();
            let secret = c.keystone.environments["p1"].password.as_ref().unwrap();
            assert_eq!(secret.expose(), "s3cret-value");
            let digits = c.keystone.environments["p2"].application_credential_secret.as_ref().unwrap();
            assert_eq!(digits.expose(), "00123");
            for shown in [format!("{c:?}"), format!("{c:#?}")] {
                assert!(!shown.contains("s3cret"), "{shown}");
            }
            let e = serde_json::to_string(&c).unwrap_err().to_string();
            assert!(e.contains("never serialized") && !e.contains("s3cret"), "{e}");
            assert!(toml::to_string(&c).is_err());
            // A secret of the wrong type is refused without being echoed.
            let e = load_in(
                jail,
                "[keystone]\nurl = \"http://k:5000/v3\"\n[keystone.environments.p3]\nusername = \"u\"\npassword = 987654321\n",
            )
            .unwrap_err();
            assert!(e.contains("password") && !e.contains("987654321"), "{e}");
            Ok(())
        });
    }
}
