//! The application as configured: mapping files compiled, Glance client built. `serve` runs it;
//! `check` builds it and stops, so both accept and refuse exactly the same inputs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::admission::Admission;
use crate::alliance::{self, AllianceApi, AllianceMapping, Namespace};
use crate::config::{Config, DialectConfig, DialectKind, UpstreamTls};
use crate::glance::{embedded, GlanceClient};
use crate::glance_v1::{self, GlanceV1Api};
use crate::keystone::Keystone;
use crate::layers::metrics::Metrics;
use crate::mapping::{Action, Mapping, MappingError};
use crate::nova::{self, NovaApi};
use crate::passthrough::Upstream;
use crate::public_url::OriginPolicy;
use crate::tls::client::ClientTls;
use crate::tls::TlsError;

/// How metrics and logs name `glance.url` (or the in-memory store); a namespace's own Glance
/// is `glance/<namespace>`.
const DEFAULT_GLANCE: &str = "glance";

/// The mapping file compiled into the binary for each dialect kind, used when `mappings_dir`
/// is not set.
fn built_in_mapping(kind: DialectKind) -> &'static str {
    match kind {
        DialectKind::Nova => include_str!("../mappings/nova.toml"),
        DialectKind::Alliance => include_str!("../mappings/alliance.toml"),
        DialectKind::GlanceV1 => include_str!("../mappings/glance_v1.toml"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Mapping(#[from] MappingError),
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot build the Glance client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot set up the passthrough: {0}")]
    Passthrough(#[from] crate::passthrough::BuildError),
    #[error("TLS to {upstream}: {source}")]
    Tls { upstream: String, source: TlsError },
}

/// The TLS of the upstream named `upstream`, built once for all of its clients.
fn client_tls(upstream: &str, tls: &UpstreamTls) -> Result<ClientTls, LoadError> {
    ClientTls::new(upstream, tls).map_err(|source| LoadError::Tls { upstream: upstream.to_owned(), source })
}

/// What serves Glance's own v2 API at `glance.mount`.
#[derive(Clone, Debug)]
pub enum ImageApi {
    /// The real Glance, passed through.
    Glance(Upstream),
    /// The in-memory store's router.
    Embedded(axum::Router),
}

#[derive(Debug)]
pub struct App {
    pub config: Config,
    /// The process's metrics, kept across reloads.
    pub metrics: Arc<Metrics>,
    pub glance: GlanceClient,
    pub image_api: ImageApi,
    /// The dialects `config.dialects` lists (at most one of each kind).
    pub nova: Option<Arc<NovaApi>>,
    pub alliance: Option<Arc<AllianceApi>>,
    pub glance_v1: Option<Arc<GlanceV1Api>>,
    /// The limit on lists in flight, shared by every dialect.
    pub admission: Arc<Admission>,
    /// How the origin of the gateway's links is decided.
    pub origin: Arc<OriginPolicy>,
}

impl App {
    /// Builds the gateway `config` describes. `metrics` and `store` (the running in-memory
    /// store, if any) are the process's: a reload keeps its metrics and must not lose the
    /// images of the in-memory store.
    pub fn load(config: Config, metrics: Arc<Metrics>, store: Option<axum::Router>) -> Result<App, LoadError> {
        App::build(config, metrics, store, None)
    }

    /// The gateway `config` describes, replacing this one (SIGHUP): the same metrics and
    /// in-memory store, and the state of the limits that protect the upstreams and the memory
    /// carried over where their settings did not change: each unchanged upstream's circuit
    /// breaker (an open circuit stays open, failures stay counted), and the admission limit
    /// with the lists in flight under it (a reload does not let twice as many in).
    pub fn reload(&self, config: Config) -> Result<App, LoadError> {
        App::build(config, self.metrics.clone(), self.embedded_store(), Some(self))
    }

    fn build(
        config: Config,
        metrics: Arc<Metrics>,
        store: Option<axum::Router>,
        previous: Option<&App>,
    ) -> Result<App, LoadError> {
        let connect = Duration::from_secs_f64(config.glance.connect_timeout_secs);
        let idle = Duration::from_secs_f64(config.glance.timeout_secs);
        let (glance, image_api) = match &config.glance.url {
            Some(url) => {
                let tls = client_tls(DEFAULT_GLANCE, &config.glance.tls)?;
                let passthrough = ImageApi::Glance(Upstream::new(DEFAULT_GLANCE, url.clone(), &tls, connect, idle)?);
                (GlanceClient::http(DEFAULT_GLANCE, &config, url.clone(), &tls, &metrics)?, passthrough)
            }
            None => {
                let router = store.unwrap_or_else(|| {
                    embedded::router(embedded::Store::with_identity(config.glance.embedded_identity))
                });
                (GlanceClient::embedded(DEFAULT_GLANCE, &config, router.clone(), &metrics), ImageApi::Embedded(router))
            }
        };
        let glance = glance.carry_over(previous.map(|p| &p.glance));
        let image_service_url =
            config.glance.public_url.as_ref().or(config.glance.url.as_ref()).map(unversioned_endpoint);
        let settings = |dialect: &DialectConfig| nova::Settings {
            mounts: dialect.mounts.clone(),
            legacy_mounts: dialect.legacy_mounts.clone(),
            max_version: config.max_microversion(),
            enforce_removal: config.nova.enforce_removal,
            max_limit: config.nova.max_limit as usize,
            image_service_url: image_service_url.clone(),
            embedded_mount: config.glance.mount.clone(),
            request_timeout: Duration::from_secs_f64(config.limits.request_timeout_secs),
            body_limit: config.limits.body_limit_bytes,
            metadata_items: usize::try_from(config.nova.metadata_items).ok(),
        };
        let keystone = match &config.keystone.url {
            Some(_) => {
                Keystone::new(&config.keystone, &client_tls("keystone", &config.keystone.tls)?, idle)?.map(Arc::new)
            }
            None => None,
        };
        let passthrough = match &config.nova.upstream_url {
            Some(url) => {
                let tls = client_tls("nova", &config.nova.upstream_tls)?;
                Some(Upstream::new("nova", url.clone(), &tls, connect, idle)?)
            }
            None => None,
        };
        let token_validator = keystone.clone().filter(|_| config.keystone.validate_nova_tokens);
        let origin = Arc::new(config.origin_policy());
        let (limit, retry_after) =
            (config.limits.max_heavy_in_flight as usize, Duration::from_secs_f64(config.limits.retry_after_secs));
        let admission = match previous.map(|p| &p.admission) {
            Some(kept) if kept.same_settings(limit, retry_after) => kept.clone(),
            // A new limit counts from zero: lists still in flight under the old one are not
            // counted against it (for as long as they take).
            _ => Arc::new(Admission::new(limit, retry_after, metrics.heavy())),
        };
        let (mut nova, mut alliance, mut v1) = (None, None, None);
        // Each kind of dialect, built by its own module's rules.
        for dialect in config.dialects.values() {
            let file = (config.mappings_dir.as_deref(), dialect.mapping.as_str(), built_in_mapping(dialect.kind));
            match dialect.kind {
                DialectKind::Nova => {
                    nova = Some(Arc::new(NovaApi {
                        mapping: Arc::new(load_mapping(file)?),
                        glance: glance.clone(),
                        settings: settings(dialect),
                        passthrough: passthrough.clone(),
                        token_validator: token_validator.clone(),
                        origin: origin.clone(),
                        admission: admission.clone(),
                    }))
                }
                DialectKind::Alliance => {
                    let kept = previous.and_then(|p| p.alliance.as_ref()).map(|a| &a.namespaces);
                    let shared =
                        Shared { glance: &glance, keystone: &keystone, origin: &origin, admission: &admission };
                    let mapping = load_mapping(file)?;
                    alliance = Some(Arc::new(load_alliance(&config, dialect, mapping, shared, &metrics, kept)?));
                }
                DialectKind::GlanceV1 => {
                    v1 = Some(Arc::new(GlanceV1Api {
                        mapping: Arc::new(load_mapping(file)?),
                        glance: glance.clone(),
                        settings: glance_v1::Settings {
                            mounts: dialect.mounts.clone(),
                            request_timeout: Duration::from_secs_f64(config.limits.request_timeout_secs),
                            body_limit: config.limits.body_limit_bytes,
                            max_image_bytes: config.glance_v1.max_image_bytes,
                        },
                        origin: origin.clone(),
                        admission: admission.clone(),
                    }))
                }
            }
        }
        Ok(App { config, metrics, glance, image_api, nova, alliance, glance_v1: v1, admission, origin })
    }

    /// The in-memory store's router, when that is what serves images.
    pub fn embedded_store(&self) -> Option<axum::Router> {
        match &self.image_api {
            ImageApi::Embedded(router) => Some(router.clone()),
            ImageApi::Glance(_) => None,
        }
    }
}

/// The Alliance dialect of `dialect`, each namespace with its Glance: an unchanged one keeps
/// its client (and circuit breaker) from `previous`.
fn load_alliance(
    config: &Config,
    dialect: &DialectConfig,
    mapping: AllianceMapping,
    shared: Shared<'_>,
    metrics: &Metrics,
    previous: Option<&HashMap<String, Namespace>>,
) -> Result<AllianceApi, LoadError> {
    let mut namespaces = HashMap::new();
    for (name, ns) in &config.alliance.namespaces {
        let glance = match &ns.glance_url {
            Some(url) => {
                let upstream = format!("{DEFAULT_GLANCE}/{name}");
                let tls = client_tls(&upstream, ns.tls.as_ref().unwrap_or(&config.glance.tls))?;
                GlanceClient::http(&upstream, config, url.clone(), &tls, metrics)?
                    .carry_over(previous.and_then(|p| p.get(name)).map(|ns| &ns.glance))
            }
            None => shared.glance.clone(),
        };
        let trusted_callers = ns.trusted_callers.iter().map(alliance::TrustedCallers::from).collect();
        namespaces.insert(name.clone(), Namespace { glance, identity: ns.identity, trusted_callers });
    }
    Ok(AllianceApi {
        mapping: Arc::new(mapping),
        namespaces,
        default_namespace: config.alliance.default_namespace.clone(),
        mounts: dialect.mounts.clone(),
        body_limit: config.limits.body_limit_bytes,
        request_timeout: Duration::from_secs_f64(config.limits.request_timeout_secs),
        keystone: shared.keystone.clone(),
        origin: shared.origin.clone(),
        admission: shared.admission.clone(),
    })
}

/// What every dialect shares.
#[derive(Clone, Copy)]
struct Shared<'a> {
    glance: &'a GlanceClient,
    keystone: &'a Option<Arc<Keystone>>,
    origin: &'a Arc<OriginPolicy>,
    admission: &'a Arc<Admission>,
}

/// Reads and compiles one mapping file from `dir`, or the built-in copy when there is no dir.
fn load_mapping<A: Action>(file: (Option<&Path>, &str, &str)) -> Result<Mapping<A>, LoadError> {
    let (name, text) = read_mapping(file)?;
    Ok(Mapping::compile(&name, &text)?)
}

/// The name (for messages) and text of one mapping file from `dir`, or of the built-in copy.
fn read_mapping((dir, name, built_in): (Option<&Path>, &str, &str)) -> Result<(String, String), LoadError> {
    match dir {
        Some(dir) => {
            let path = dir.join(name);
            let text =
                std::fs::read_to_string(&path).map_err(|source| LoadError::Read { path: path.clone(), source })?;
            Ok((path.display().to_string(), text))
        }
        None => Ok((format!("(built-in) {name}"), built_in.to_owned())),
    }
}

/// The name and text of the mapping file `dialect` uses, as [`App::load`] reads it: for tools
/// that show what a file says (`explain`, `test`).
pub fn mapping_source(config: &Config, dialect: &DialectConfig) -> Result<(String, String), LoadError> {
    read_mapping((config.mappings_dir.as_deref(), dialect.mapping.as_str(), built_in_mapping(dialect.kind)))
}

/// Nova's rule for the image endpoint in links: drop a trailing `/vN[.M]` and trailing slashes.
fn unversioned_endpoint(url: &url::Url) -> String {
    nova::strip_version(url.as_str().trim_end_matches('/')).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_endpoints_lose_their_version() {
        for (given, want) in [
            ("http://g:9292", "http://g:9292"),
            ("http://g:9292/", "http://g:9292"),
            ("http://g:9292/v2", "http://g:9292"),
            ("http://g/image/v2.1/", "http://g/image"),
            ("http://g/image", "http://g/image"),
        ] {
            assert_eq!(unversioned_endpoint(&given.parse().unwrap()), want, "{given}");
        }
    }

    #[test]
    fn the_shipped_mapping_files_compile() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
        let nova = built_in_mapping(DialectKind::Nova);
        load_mapping::<nova::NovaAction>((Some(&dir), "nova.toml", nova)).unwrap();
        load_mapping::<nova::NovaAction>((None, "nova.toml", nova)).unwrap();
        let alliance = built_in_mapping(DialectKind::Alliance);
        load_mapping::<alliance::AllianceAction>((Some(&dir), "alliance.toml", alliance)).unwrap();
        load_mapping::<alliance::AllianceAction>((None, "alliance.toml", alliance)).unwrap();
        let v1 = built_in_mapping(DialectKind::GlanceV1);
        load_mapping::<glance_v1::GlanceV1Action>((Some(&dir), "glance_v1.toml", v1)).unwrap();
        load_mapping::<glance_v1::GlanceV1Action>((None, "glance_v1.toml", v1)).unwrap();
    }

    #[test]
    fn a_missing_mapping_file_names_its_path() {
        let file = (Some(Path::new("/nonexistent")), "nova.toml", built_in_mapping(DialectKind::Nova));
        let e = load_mapping::<nova::NovaAction>(file).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/nova.toml: "), "{e}");
    }
}
