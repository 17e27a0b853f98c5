//! The "Alliance Glance API v1" dialect: Glance-v2-like JSON under `/images`.
//!
//! Two headers say where and for whom a call acts: `X-Target-Ns` picks a configured namespace
//! (one Glance per cloud or region) and `X-Environment-Id` is the project acted for. Neither is
//! ever guessed: a missing or unknown one is a 400 unless the configuration names a default
//! namespace. Naming an environment proves nothing: [`identity`] decides on what proof a call
//! acts for it.

mod error;
mod identity;
mod images;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use http::{HeaderMap, HeaderName};
use serde_json::Value;

use crate::config::IdentityMode;
use crate::glance::{Call, GlanceClient};
use crate::keystone::Keystone;
use crate::layers::metrics::{RouteLabel, UpstreamTime};
use crate::mapping::{
    split_path, Action, BindError, Lookup, Mapping, Param, Parts, QueryMap, RequestSchema, Route, View,
};
use crate::public_url::{self, OriginPolicy};
use crate::trust::ClientCertificate;

pub use error::AllianceError;
pub use identity::TrustedCallers;

/// The calls `mappings/alliance.toml` may route to, each with what it was bound to at load.
#[derive(Debug)]
pub enum AllianceAction {
    ListImages {
        view: Arc<View>,
        query: Arc<QueryMap>,
    },
    /// `image`: an image id, or a name among the environment's images.
    ShowImage {
        view: Arc<View>,
        image: Param,
    },
    CreateImage {
        view: Arc<View>,
        request: Arc<RequestSchema>,
    },
    UpdateImage {
        view: Arc<View>,
        request: Arc<RequestSchema>,
        image: Param,
    },
    DeleteImage {
        image: Param,
    },
}

impl Action for AllianceAction {
    const DIALECT: &'static str = "alliance";
    const NAMES: &'static [&'static str] =
        &["list_images", "show_image", "create_image", "update_image", "delete_image"];

    fn bind(name: &str, parts: &Parts<'_>) -> Result<Self, BindError> {
        Ok(match name {
            "list_images" => AllianceAction::ListImages { view: parts.view()?, query: parts.query()? },
            "show_image" => AllianceAction::ShowImage { view: parts.view()?, image: parts.param("image")? },
            "create_image" => AllianceAction::CreateImage { view: parts.view()?, request: parts.request()? },
            "update_image" => AllianceAction::UpdateImage {
                view: parts.view()?,
                request: parts.request()?,
                image: parts.param("image")?,
            },
            "delete_image" => AllianceAction::DeleteImage { image: parts.param("image")? },
            _ => return Err(BindError::UnknownAction),
        })
    }
}

/// Alliance's compiled mapping file.
pub type AllianceMapping = Mapping<AllianceAction>;

const DIALECT: &str = AllianceAction::DIALECT;
const UNMATCHED: &str = "alliance.unmatched";
const TARGET_NS: &str = "x-target-ns";
const ENVIRONMENT: &str = "x-environment-id";
pub(crate) const AUTH_TOKEN: HeaderName = HeaderName::from_static("x-auth-token");

/// One namespace: a Glance, and how its callers prove who they are.
#[derive(Clone, Debug)]
pub struct Namespace {
    pub glance: GlanceClient,
    pub identity: IdentityMode,
    pub trusted_callers: Vec<TrustedCallers>,
}

/// The Alliance dialect as configured.
#[derive(Debug)]
pub struct AllianceApi {
    pub mapping: Arc<AllianceMapping>,
    pub namespaces: HashMap<String, Namespace>,
    pub default_namespace: Option<String>,
    /// Path prefixes before `/images` ("" for none).
    pub mounts: Vec<String>,
    pub body_limit: u64,
    pub request_timeout: Duration,
    /// Tokens for environments the gateway holds credentials for.
    pub keystone: Option<Arc<Keystone>>,
    /// How the links' origin is decided.
    pub origin: Arc<OriginPolicy>,
    /// The limit on lists in flight.
    pub admission: Arc<crate::admission::Admission>,
}

/// One Alliance call being served.
pub struct AllianceCall<'a> {
    route: &'a Route<AllianceAction>,
    params: Vec<(String, String)>,
    query: Vec<(String, String)>,
    namespace: &'a Namespace,
    environment: String,
    glance: Call,
    body: Value,
    /// Where the created image will be, for `Location`.
    images_url: String,
}

impl AllianceCall<'_> {
    fn param(&self, param: Param) -> &str {
        param.of(&self.params)
    }
}

/// One mount of the dialect.
#[derive(Clone)]
struct Mount {
    api: Arc<AllianceApi>,
    path: Arc<str>,
}

/// The routes of one mount: `{mount}/images` and everything below it.
pub fn router(api: Arc<AllianceApi>, mount: &str) -> axum::Router {
    axum::Router::new()
        .route(&format!("{mount}/images"), any(handle))
        .route(&format!("{mount}/images/"), any(handle))
        .route(&format!("{mount}/images/{{*rest}}"), any(handle))
        .with_state(Mount { api, path: mount.into() })
}

/// Serves every request under `{mount}/images`.
async fn handle(State(Mount { api, path: mount }): State<Mount>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().strip_prefix(&*mount).unwrap_or("");
    // `/images/` is the seed's own spelling of `/images`.
    let path = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path);
    let found =
        split_path(path).and_then(|segments| match api.mapping.routes.lookup(parts.method.as_str(), &segments) {
            Lookup::Found { route, params } => Some(Ok((route, params))),
            Lookup::MethodNotAllowed => Some(Err(AllianceError::MethodNotAllowed(parts.method.to_string()))),
            Lookup::NotFound => None,
        });
    let (route, params) = match found {
        Some(Ok(found)) => found,
        Some(Err(e)) => return labelled(e.into_response(), UNMATCHED.into()),
        None => return labelled(AllianceError::NoRoute(path.to_owned()).into_response(), UNMATCHED.into()),
    };
    let outcome = tokio::time::timeout(api.request_timeout, async {
        let (namespace, environment) = target(&api, &parts.headers)?;
        let caller = identity::Caller {
            peer: public_url::peer(&parts.extensions),
            certificate: parts.extensions.get::<ClientCertificate>(),
            token: parts.headers.get(AUTH_TOKEN),
        };
        let (headers, gateway_token) =
            identity::upstream_identity(&api, namespace, &environment, &caller, &parts.headers).await?;
        let origin = api.origin.origin(&parts.headers, &parts.extensions);
        let mut call = AllianceCall {
            route,
            params,
            query: url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()).into_owned().collect(),
            namespace,
            glance: Call::new(headers),
            environment,
            body: Value::Null,
            images_url: format!("{origin}{mount}/images"),
        };
        if matches!(route.method.as_str(), "POST" | "PATCH" | "PUT") {
            let bytes = crate::body::read(&parts.headers, body, api.body_limit).await?;
            call.body = crate::body::json(&parts.headers, &bytes, &[])?;
        }
        let mut response = images::run(&api, &call).await;
        let mut upstream = call.glance.upstream_time();
        // Glance refused a token the gateway got itself (revoked, expired early): once more
        // with a fresh one. Glance acts on nothing it answers 401, so a write is safe to repeat.
        if let (Err(AllianceError::Upstream(e)), Some(token), Some(keystone)) =
            (&response, &gateway_token, &api.keystone)
        {
            if e.status() == Some(http::StatusCode::UNAUTHORIZED) {
                keystone.invalidate(&call.environment, token).await;
                let (headers, _) =
                    identity::upstream_identity(&api, namespace, &call.environment, &caller, &parts.headers).await?;
                call.glance = Call::new(headers);
                response = images::run(&api, &call).await;
                upstream += call.glance.upstream_time();
            }
        }
        Ok::<_, AllianceError>((response, upstream))
    })
    .await;
    let response = match outcome {
        Ok(Ok((result, upstream))) => {
            let mut response = result.unwrap_or_else(IntoResponse::into_response);
            response.extensions_mut().insert(UpstreamTime(upstream));
            response
        }
        Ok(Err(e)) => e.into_response(),
        Err(_) => AllianceError::Timeout(api.request_timeout).into_response(),
    };
    labelled(response, route.id.clone())
}

/// The namespace and environment a call acts in, from its headers.
fn target<'a>(api: &'a AllianceApi, headers: &HeaderMap) -> Result<(&'a Namespace, String), AllianceError> {
    let header = |name: &str| headers.get(name).map(|v| v.to_str().map(str::trim));
    let ns_name = match header(TARGET_NS) {
        Some(Ok(name)) if !name.is_empty() => name.to_owned(),
        Some(_) => return Err(AllianceError::BadRequest("X-Target-Ns is empty or not text".into())),
        None => api
            .default_namespace
            .clone()
            .ok_or_else(|| AllianceError::BadRequest("X-Target-Ns is missing: name the namespace to act in".into()))?,
    };
    let namespace = api
        .namespaces
        .get(&ns_name)
        .ok_or_else(|| AllianceError::BadRequest(format!("X-Target-Ns names no configured namespace: `{ns_name}`")))?;
    let environment = match header(ENVIRONMENT) {
        Some(Ok(env)) if valid_environment(env) => env.to_owned(),
        Some(_) => {
            return Err(AllianceError::BadRequest(
                "X-Environment-Id must be a project id (letters, digits, `-` and `_`, at most 64)".into(),
            ))
        }
        None => {
            return Err(AllianceError::BadRequest("X-Environment-Id is missing: name the project to act for".into()))
        }
    };
    Ok((namespace, environment))
}

fn valid_environment(env: &str) -> bool {
    (1..=64).contains(&env.len()) && env.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn labelled(mut response: Response, route: Arc<str>) -> Response {
    response.extensions_mut().insert(RouteLabel { dialect: DIALECT, route });
    response
}
