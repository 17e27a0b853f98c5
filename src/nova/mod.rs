//! The Nova image proxy dialect.
//!
//! A request under a Nova mount goes through the same steps Nova's own stack takes: find the
//! route (with or without a hex project id in front), read the microversion, optionally refuse
//! calls Nova removed, run the route's action against Glance, and shape the answer (or the
//! error, in [`fault`]) the way Nova would. Routes, filters and views come from the mapping
//! file; this module holds only what a mapping file cannot say.

pub mod fault;
mod images;
mod metadata;
pub mod microversion;
mod versions;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{OriginalUri, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::Value;

use crate::glance::UpstreamError;
use crate::glance::{Call, GlanceClient};
use crate::keystone::Keystone;
use crate::layers::metrics::{RouteLabel, UpstreamTime};
use crate::layers::request_id;
use crate::mapping::{
    split_path, Action, ApiVersion, BindError, FieldRef, LinkBases, Lookup, Mapping, Param, Parts, QueryMap, Route,
    View,
};
use crate::passthrough::Upstream;
use crate::public_url::OriginPolicy;

use fault::{NovaError, PageFormat, NOT_FOUND_DEFAULT};

/// The calls `mappings/nova.toml` may route to, each with what it was bound to at load.
#[derive(Debug)]
pub enum NovaAction {
    ListImages {
        view: Arc<View>,
        query: Arc<QueryMap>,
    },
    ShowImage {
        view: Arc<View>,
        image: Param,
    },
    DeleteImage {
        image: Param,
    },
    ListMetadata {
        view: Arc<View>,
        image: Param,
    },
    /// `metadata`: the view's custom-properties field, which the item is taken from.
    ShowMetadataItem {
        metadata: FieldRef,
        image: Param,
        key: Param,
    },
    MergeMetadata {
        view: Arc<View>,
        image: Param,
    },
    ReplaceMetadata {
        image: Param,
    },
    SetMetadataItem {
        image: Param,
        key: Param,
    },
    DeleteMetadataItem {
        image: Param,
        key: Param,
    },
}

impl Action for NovaAction {
    const DIALECT: &'static str = "nova";
    const NAMES: &'static [&'static str] = &[
        "list_images",
        "show_image",
        "delete_image",
        "list_metadata",
        "show_metadata_item",
        "merge_metadata",
        "replace_metadata",
        "set_metadata_item",
        "delete_metadata_item",
    ];

    /// Image calls name their image `{id}` and metadata calls `{image_id}` and `{key}`, as
    /// Nova's own routes do.
    fn bind(name: &str, parts: &Parts<'_>) -> Result<Self, BindError> {
        let (image, key) = (|| parts.param("image_id"), || parts.param("key"));
        Ok(match name {
            "list_images" => NovaAction::ListImages { view: parts.view()?, query: parts.query()? },
            "show_image" => NovaAction::ShowImage { view: parts.view()?, image: parts.param("id")? },
            "delete_image" => NovaAction::DeleteImage { image: parts.param("id")? },
            "list_metadata" => NovaAction::ListMetadata { view: parts.view()?, image: image()? },
            "show_metadata_item" => NovaAction::ShowMetadataItem {
                metadata: parts.view_field("custom_properties")?,
                image: image()?,
                key: key()?,
            },
            "merge_metadata" => NovaAction::MergeMetadata { view: parts.view()?, image: image()? },
            "replace_metadata" => NovaAction::ReplaceMetadata { image: image()? },
            "set_metadata_item" => NovaAction::SetMetadataItem { image: image()?, key: key()? },
            "delete_metadata_item" => NovaAction::DeleteMetadataItem { image: image()?, key: key()? },
            _ => return Err(BindError::UnknownAction),
        })
    }
}

/// Nova's compiled mapping file.
pub type NovaMapping = Mapping<NovaAction>;

const DIALECT: &str = NovaAction::DIALECT;
/// The label of requests no route claims.
const UNMATCHED: &str = "nova.unmatched";
/// The label of the version documents.
const VERSIONS: &str = "nova.versions";
/// The label of calls handed to the real Nova.
const PASSTHROUGH: &str = "nova.passthrough";
/// Media types Nova reads as JSON besides `application/json`.
const NOVA_JSON: &[&str] = &["text/plain", "application/vnd.openstack.compute+json"];
const COMPUTE_REQUEST_ID: HeaderName = HeaderName::from_static("x-compute-request-id");

/// Settings the Nova dialect takes from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Mounts of the microversioned roots, and of the legacy v2 ones (`dialects.*`).
    pub mounts: Vec<String>,
    pub legacy_mounts: Vec<String>,
    pub max_version: ApiVersion,
    pub enforce_removal: bool,
    pub max_limit: usize,
    /// Base of `alternate` links; `None`: the gateway's own embedded-store mount.
    pub image_service_url: Option<String>,
    /// Path at which the embedded store is exposed, for `alternate` links without a Glance.
    pub embedded_mount: String,
    pub request_timeout: Duration,
    /// Largest request body accepted.
    pub body_limit: u64,
    /// Nova's `metadata_items` quota; `None`: unlimited.
    pub metadata_items: Option<usize>,
}

/// The Nova dialect: its mapping, its Glance, its settings.
#[derive(Debug)]
pub struct NovaApi {
    pub mapping: Arc<NovaMapping>,
    pub glance: GlanceClient,
    pub settings: Settings,
    /// The real Nova, for everything under the mounts that is not an image call.
    pub passthrough: Option<Upstream>,
    /// Keystone, when client tokens are to be validated before anything else.
    pub token_validator: Option<Arc<Keystone>>,
    /// How the links' origin is decided.
    pub origin: Arc<OriginPolicy>,
    /// The limit on lists in flight.
    pub admission: Arc<crate::admission::Admission>,
}

/// One Nova call being served.
pub struct NovaCall<'a> {
    route: &'a Route<NovaAction>,
    params: Vec<(String, String)>,
    query: Vec<(String, String)>,
    links: LinkBases,
    /// The route's path below the mount and project, e.g. `images/detail`, for next links.
    collection: String,
    glance: Call,
    /// Served under the legacy `/v2` root (relaxed body checks).
    legacy: bool,
    /// The decoded JSON body of a POST or PUT (`Null` when empty).
    body: Value,
}

#[derive(Clone, Debug)]
struct Mount {
    api: Arc<NovaApi>,
    path: String,
    /// The `/v2` root: runs as 2.1 and sends no microversion headers.
    legacy: bool,
}

/// The service for one Nova mount, to be nested at `path`.
pub fn mount(api: Arc<NovaApi>, path: &str, legacy: bool) -> Router {
    Router::new().fallback(handle).with_state(Mount { api, path: path.to_owned(), legacy })
}

async fn handle(State(mount): State<Mount>, request: Request) -> Response {
    let api = &*mount.api;
    // A path that does not decode to clean segments names nothing.
    let path = request.uri().path();
    let segments = split_path(path).or_else(|| path.is_empty().then(Vec::new));
    let is_root = segments.as_ref().is_some_and(|s| s.iter().all(String::is_empty));
    let claimed = segments.as_ref().filter(|_| !is_root).and_then(|segments| {
        let (project, rest) = split_project(segments);
        match api.mapping.routes.lookup(request.method().as_str(), rest) {
            Lookup::Found { route, params } => Some((route, params, project.map(str::to_owned))),
            Lookup::MethodNotAllowed | Lookup::NotFound => None,
        }
    });
    let Some((route, params, project)) = claimed else {
        // Not an image call: the real Nova's, if there is one.
        if let Some(nova) = &api.passthrough {
            return forward(api, nova, request).await;
        }
        let (parts, _) = request.into_parts();
        if is_root && parts.method == http::Method::GET {
            let origin = api.origin.origin(&parts.headers, &parts.extensions);
            return version_document(api, &mount, &parts.headers, &origin);
        }
        let page = NovaError::NoRoute(PageFormat::negotiate(&parts.headers)).into_response();
        return labelled(page, UNMATCHED.into(), parts.headers.get(request_id::HEADER));
    };
    let project = project.as_deref();
    let (parts, body) = request.into_parts();
    let version = if mount.legacy {
        Ok(microversion::MIN)
    } else {
        microversion::requested(&parts.headers, api.settings.max_version)
    };
    let response = match version {
        Ok(version) => {
            let call = NovaCall {
                route,
                params,
                query: url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()).into_owned().collect(),
                links: link_bases(api, &mount, &api.origin.origin(&parts.headers, &parts.extensions), project),
                collection: route.template.to_string().trim_start_matches('/').to_owned(),
                glance: Call::new(api.glance.forwarded(&parts.headers)),
                legacy: mount.legacy,
                body: Value::Null,
            };
            let limit = api.settings.request_timeout;
            let outcome = tokio::time::timeout(limit, serve(api, call, version, project, &parts.headers, body)).await;
            let (mut response, upstream) =
                outcome.unwrap_or_else(|_| (NovaError::Timeout(limit).into_response(), Duration::ZERO));
            response.extensions_mut().insert(UpstreamTime(upstream));
            if !mount.legacy {
                set_version_headers(response.headers_mut(), version);
            }
            response
        }
        Err(e) => {
            // Nova echoes a well-formed version it does not support, not a malformed one.
            let asked = match &e {
                microversion::VersionError::Unsupported(asked, _) => Some(*asked),
                microversion::VersionError::Malformed(_) => None,
            };
            let mut response = NovaError::from(e).into_response();
            if let Some(asked) = asked {
                set_version_headers(response.headers_mut(), asked);
            }
            response
        }
    };
    labelled(response, route.id.clone(), parts.headers.get(request_id::HEADER))
}

/// `GET {mount}` and `GET {mount}/`: unauthenticated, with version headers on the
/// microversioned root only.
fn version_document(api: &NovaApi, mount: &Mount, headers: &HeaderMap, origin: &str) -> Response {
    let doc = versions::version(origin, &mount.path, mount.legacy, api.settings.max_version);
    let mut response = axum::Json(doc).into_response();
    if !mount.legacy {
        match microversion::requested(headers, api.settings.max_version) {
            Ok(version) => set_version_headers(response.headers_mut(), version),
            Err(e) => response = NovaError::from(e).into_response(),
        }
    }
    labelled(response, VERSIONS.into(), headers.get(request_id::HEADER))
}

/// `GET /`: the list of Nova's roots (the first of each kind).
pub async fn root(State(api): State<Arc<NovaApi>>, request: Request) -> Response {
    if let Some(nova) = &api.passthrough {
        return forward(&api, nova, request).await;
    }
    let doc = versions::versions(
        &api.origin.origin(request.headers(), request.extensions()),
        api.settings.mounts.first().map(String::as_str),
        api.settings.legacy_mounts.first().map(String::as_str),
        api.settings.max_version,
    );
    let mut response = axum::Json(doc).into_response();
    response.extensions_mut().insert(RouteLabel { dialect: DIALECT, route: VERSIONS.into() });
    response
}

/// Hands a request to the real Nova, unchanged but for the proxy headers.
async fn forward(api: &NovaApi, nova: &Upstream, request: Request) -> Response {
    let original = request.extensions().get::<OriginalUri>().map_or(request.uri(), |o| &o.0);
    let target = nova.target(original.path_and_query().map_or("/", |pq| pq.as_str()));
    let origin = api.origin.origin(request.headers(), request.extensions());
    let id = request.headers().get(request_id::HEADER).cloned();
    let response = match target {
        Ok(target) => nova.forward(request, target, &origin).await,
        Err(e) => Err(e),
    };
    labelled(response.unwrap_or_else(|e| NovaError::Upstream(e).into_response()), PASSTHROUGH.into(), id.as_ref())
}

/// Runs a routed call once the version is known: Nova's checks in Nova's order, then the action.
async fn serve(
    api: &NovaApi,
    mut call: NovaCall<'_>,
    version: ApiVersion,
    project: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> (Response, Duration) {
    let outcome = async {
        // Like Nova's size limiter, refuse an oversized declared body whatever the method.
        let limit = api.settings.body_limit;
        if crate::body::declared_length(headers).is_some_and(|len| len > limit) {
            return Err(NovaError::BodyTooLarge(limit));
        }
        // Nova decodes a body before it dispatches on the version; its schema checks come after.
        if matches!(call.route.method.as_str(), "POST" | "PUT") {
            let bytes = crate::body::read(headers, body, limit).await?;
            call.body = crate::body::json(headers, &bytes, NOVA_JSON)?;
        }
        if api.settings.enforce_removal && call.route.max_version.is_some_and(|max| version > max) {
            return Err(NovaError::NotFound(NOT_FOUND_DEFAULT.into()));
        }
        let identity = identity_project(api, headers).await?;
        if let Some(e) = project_mismatch(project, identity.as_deref()) {
            return Err(e);
        }
        run(api, &call).await
    }
    .await;
    let response = match outcome {
        Ok(Some(response)) => response,
        // Nova's 204s still say JSON.
        Ok(None) => (StatusCode::NO_CONTENT, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))])
            .into_response(),
        Err(e) => e.into_response(),
    };
    (response, call.glance.upstream_time())
}

/// What an action answers: a JSON body (200), or nothing (204).
type Reply = Result<Option<Response>, NovaError>;

async fn run(api: &NovaApi, call: &NovaCall<'_>) -> Reply {
    let json = |body: Value| Some(axum::Json(body).into_response());
    let param = |p: &Param| p.of(&call.params);
    match &call.route.action {
        NovaAction::ListImages { view, query } => images::list(api, call, view, query).await.map(Some),
        NovaAction::ShowImage { view, image } => images::show(api, call, view, param(image)).await.map(json),
        NovaAction::DeleteImage { image } => images::delete(api, call, param(image)).await.map(|()| None),
        NovaAction::ListMetadata { view, image } => metadata::list(api, call, view, param(image)).await.map(json),
        NovaAction::ShowMetadataItem { metadata, image, key } => {
            metadata::show_item(api, call, metadata, param(image), param(key)).await.map(json)
        }
        NovaAction::MergeMetadata { view, image } => metadata::merge(api, call, view, param(image)).await.map(json),
        NovaAction::ReplaceMetadata { image } => metadata::replace(api, call, param(image)).await.map(json),
        NovaAction::SetMetadataItem { image, key } => {
            metadata::set_item(api, call, param(image), param(key)).await.map(json)
        }
        NovaAction::DeleteMetadataItem { image, key } => {
            metadata::delete_item(api, call, param(image), param(key)).await.map(|()| None)
        }
    }
}

/// Nova registers every route both bare and below `/{project_id}` with `[0-9a-f-]+`.
pub(crate) fn split_project(segments: &[String]) -> (Option<&str>, &[String]) {
    match segments {
        [first, rest @ ..]
            if !rest.is_empty()
                && !first.is_empty()
                && first.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase() || b == b'-') =>
        {
            (Some(first.as_str()), rest)
        }
        _ => (None, segments),
    }
}

/// Who the caller is: the project of its token as Keystone validates it (when configured;
/// a missing or invalid token is then a 401), else the `X-Project-Id` an auth layer in front set.
async fn identity_project(api: &NovaApi, headers: &HeaderMap) -> Result<Option<String>, NovaError> {
    let Some(keystone) = &api.token_validator else {
        let header = ["x-project-id", "x-tenant-id"].iter().find_map(|h| headers.get(*h)?.to_str().ok());
        return Ok(header.map(str::to_owned));
    };
    let token = headers.get("x-auth-token").and_then(|v| v.to_str().ok()).ok_or(NovaError::Unauthorized)?;
    match keystone.validate(token, headers).await {
        Ok(Some(project)) => Ok(Some(project).filter(|p| !p.is_empty())),
        Ok(None) => Err(NovaError::Unauthorized),
        Err(e) => Err(NovaError::Upstream(UpstreamError::Unreachable(e.to_string()))),
    }
}

/// Nova refuses a URL naming another project than the caller's identity (as set by an auth
/// layer in front, `X-Project-Id`).
fn project_mismatch(url_project: Option<&str>, identity: Option<&str>) -> Option<NovaError> {
    let (url_project, identity) = (url_project?, identity?);
    (url_project != identity).then(|| {
        NovaError::BadRequest(format!(
            "Malformed request URL: URL's project_id '{url_project}' doesn't match Context's project_id '{identity}'"
        ))
    })
}

/// Where this request's links point. The project id appears in links only when it appeared in
/// the URL, as in Nova.
fn link_bases(api: &NovaApi, mount: &Mount, origin: &str, project: Option<&str>) -> LinkBases {
    let pid = project.map(|p| format!("/{p}")).unwrap_or_default();
    LinkBases {
        versioned: format!("{origin}{}{pid}", mount.path),
        unversioned: format!("{origin}{}{pid}", strip_version(&mount.path)),
        image_service: api
            .settings
            .image_service_url
            .clone()
            .unwrap_or_else(|| format!("{origin}{}", api.settings.embedded_mount)),
    }
}

/// `/compute/v2.1` → `/compute`: Nova's bookmark links drop a trailing version segment.
pub(crate) fn strip_version(path: &str) -> &str {
    match path.rsplit_once('/') {
        Some((head, last))
            if last
                .strip_prefix('v')
                .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.')) =>
        {
            head
        }
        _ => path,
    }
}

fn set_version_headers(headers: &mut HeaderMap, version: ApiVersion) {
    if let Ok(v) = HeaderValue::from_str(&format!("compute {version}")) {
        headers.insert(microversion::HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&version.to_string()) {
        headers.insert(microversion::LEGACY_HEADER, v);
    }
    // Nova sends two Vary lines.
    headers.append(header::VARY, HeaderValue::from_static("OpenStack-API-Version"));
    headers.append(header::VARY, HeaderValue::from_static("X-OpenStack-Nova-API-Version"));
}

/// Marks the response with its route (for metrics) and Nova's second request-id header.
fn labelled(mut response: Response, route: Arc<str>, request_id: Option<&HeaderValue>) -> Response {
    if let Some(id) = request_id {
        response.headers_mut().insert(COMPUTE_REQUEST_ID, id.clone());
    }
    response.extensions_mut().insert(RouteLabel { dialect: DIALECT, route });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(path: &str) -> Vec<String> {
        split_path(path).unwrap()
    }

    #[test]
    fn project_ids_are_lowercase_hex_with_dashes() {
        let s = segs("/0123abcd-ef/images");
        assert_eq!(split_project(&s).0, Some("0123abcd-ef"));
        for path in ["/images/detail", "/ABCD/images", "/ab_cd/images", "/abcd"] {
            let s = segs(path);
            assert_eq!(split_project(&s).0, None, "{path}");
        }
    }

    #[test]
    fn bookmark_base_drops_the_version() {
        assert_eq!(strip_version("/v2.1"), "");
        assert_eq!(strip_version("/compute/v2.1"), "/compute");
        assert_eq!(strip_version("/v2"), "");
        assert_eq!(strip_version("/compute"), "/compute");
        assert_eq!(strip_version("/compute/version"), "/compute/version");
    }
}
