//! image-gateway: keeps legacy image-API clients working on a Glance v2 cloud.
//!
//! - [`config`]: the configuration and its validation;
//! - [`mapping`]: the pure mapping engine (routes, query maps, views);
//! - [`glance`]: the Glance v2 client and the embedded in-memory store;
//! - [`nova`]: the Nova image proxy dialect; [`glance_v1`]: the Glance v1 dialect;
//! - [`list`]: translated list answers, page by page; [`admission`]: the limit on them;
//! - [`layers`]: the gateway's own middleware; [`trust`]: whom it believes, about what;
//! - [`telemetry`]: spans exported to an OpenTelemetry collector;
//! - [`app`] and [`server`]: assembly; [`watch`]: files read again when they change.
#![forbid(unsafe_code)]

pub mod admission;
pub mod alliance;
pub mod app;
pub mod body;
pub mod config;
pub mod explain;
pub mod glance;
pub mod glance_v1;
pub mod golden;
pub mod idle;
pub mod keystone;
pub mod layers;
pub mod list;
pub mod mapping;
pub mod nova;
pub mod passthrough;
pub mod public_url;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod trust;
pub mod watch;

/// Makes ring rustls's crypto provider for this process. reqwest is built without one (see
/// Cargo.toml: aws-lc would cost minutes of C build), so every HTTP client needs this first.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
