//! The Glance v1 dialect: the image API Glance served until Queens, from Glance v2.
//!
//! v1 says an image's metadata in `x-image-meta-*` headers (HEAD, and around the bytes of a
//! GET; and on the way in, POST and PUT), lists in JSON. Routes, list filters and the image's
//! fields come from `mappings/glance_v1.toml`; this module holds what a mapping file cannot
//! say: headers in and out, the streams of image bytes, members, and v1's checks of what a
//! client sends, all made before anything reaches Glance.

mod error;
mod images;
mod members;
mod meta;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{json, Value};

use crate::admission::Admission;
use crate::glance::{Call, GlanceClient};
use crate::layers::metrics::{RouteLabel, UpstreamTime};
use crate::mapping::{split_path, ActionSpec, Lookup, Mapping, Route};
use crate::public_url::OriginPolicy;

pub use error::V1Error;

/// The actions `mappings/glance_v1.toml` may name.
pub const ACTIONS: &[ActionSpec] = &[
    ActionSpec { name: "list_images", needs_view: true, needs_query: true, needs_request: false },
    ActionSpec { name: "image_meta", needs_view: true, needs_query: false, needs_request: false },
    ActionSpec { name: "download_image", needs_view: true, needs_query: false, needs_request: false },
    ActionSpec { name: "create_image", needs_view: true, needs_query: false, needs_request: false },
    ActionSpec { name: "update_image", needs_view: true, needs_query: false, needs_request: false },
    ActionSpec { name: "delete_image", needs_view: false, needs_query: false, needs_request: false },
    ActionSpec { name: "list_members", needs_view: false, needs_query: false, needs_request: false },
    ActionSpec { name: "replace_members", needs_view: false, needs_query: false, needs_request: false },
    ActionSpec { name: "add_member", needs_view: false, needs_query: false, needs_request: false },
    ActionSpec { name: "remove_member", needs_view: false, needs_query: false, needs_request: false },
    ActionSpec { name: "shared_images", needs_view: false, needs_query: false, needs_request: false },
];

const DIALECT: &str = "glance_v1";
const UNMATCHED: &str = "glance_v1.unmatched";
const VERSIONS: &str = "glance_v1.versions";

/// Settings the v1 dialect takes from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    pub mount: String,
    /// Deadline of a call that sends no image bytes.
    pub request_timeout: Duration,
    /// Largest JSON body (member lists).
    pub body_limit: u64,
    /// Largest image one upload may send.
    pub max_image_bytes: Option<u64>,
}

/// The v1 dialect: its mapping, its Glance, its settings.
#[derive(Debug)]
pub struct GlanceV1Api {
    pub mapping: Arc<Mapping>,
    pub glance: GlanceClient,
    pub settings: Settings,
    pub origin: Arc<OriginPolicy>,
    /// The limit on lists in flight.
    pub admission: Arc<Admission>,
}

/// One v1 call being served.
pub struct V1Call<'a> {
    route: &'a Route,
    params: Vec<(String, String)>,
    query: Vec<(String, String)>,
    /// The request's headers: v1 says an image's metadata in them.
    headers: &'a HeaderMap,
    glance: Call,
    /// `{origin}{mount}/v1/images`, for `Location`.
    images_url: String,
}

impl V1Call<'_> {
    fn param(&self, name: &str) -> &str {
        self.params.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
    }
}

/// The service for the v1 mount, to be nested at `settings.mount`.
pub fn mount(api: Arc<GlanceV1Api>) -> Router {
    Router::new().fallback(handle).with_state(api)
}

async fn handle(State(api): State<Arc<GlanceV1Api>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    if matches!(path, "" | "/" | "/versions") && matches!(parts.method, Method::GET | Method::HEAD) {
        // glanceclient reads `/versions` and takes only a 200 there.
        let status = if path == "/versions" { StatusCode::OK } else { StatusCode::MULTIPLE_CHOICES };
        let origin = api.origin.origin(&parts.headers, &parts.extensions);
        let response = (status, axum::Json(versions(&origin, &api.settings.mount))).into_response();
        return labelled(response, VERSIONS.into());
    }
    let found = split_path(path).map(|segments| api.mapping.routes.lookup(parts.method.as_str(), &segments));
    let (route, params) = match found {
        Some(Lookup::Found { route, params }) => (route, params),
        Some(Lookup::MethodNotAllowed) => {
            let allow = allowed(&api.mapping, path);
            return labelled(V1Error::MethodNotAllowed(allow).page(&parts.headers), UNMATCHED.into());
        }
        _ => {
            let e = V1Error::NotFound("The resource could not be found.".into());
            return labelled(e.page(&parts.headers), UNMATCHED.into());
        }
    };
    let origin = api.origin.origin(&parts.headers, &parts.extensions);
    let call = V1Call {
        route,
        params,
        query: url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()).into_owned().collect(),
        headers: &parts.headers,
        glance: Call::new(api.glance.forwarded(&parts.headers)),
        images_url: format!("{origin}{}/v1/images", api.settings.mount),
    };
    // Image bytes take as long as they take (idle timers watch them); anything else has the
    // request deadline.
    let limit = api.settings.request_timeout;
    let outcome = if images::sends_bytes(route, &parts.headers) {
        run(&api, &call, body).await
    } else {
        tokio::time::timeout(limit, run(&api, &call, body)).await.unwrap_or(Err(V1Error::Timeout(limit)))
    };
    let mut response = outcome.unwrap_or_else(|e| e.page(&parts.headers));
    response.extensions_mut().insert(UpstreamTime(call.glance.upstream_time()));
    labelled(response, route.id.clone())
}

async fn run(api: &GlanceV1Api, call: &V1Call<'_>, body: Body) -> Result<Response, V1Error> {
    match call.route.action.as_str() {
        "list_images" => images::list(api, call).await,
        "image_meta" => images::meta(api, call).await,
        "download_image" => images::download(api, call).await,
        "create_image" => images::create(api, call, body).await,
        "update_image" => images::update(api, call, body).await,
        "delete_image" => images::delete(api, call).await,
        "list_members" => members::list(api, call).await,
        "replace_members" => members::replace(api, call, body).await,
        "add_member" => members::add(api, call, body).await,
        "remove_member" => members::remove(api, call).await,
        "shared_images" => members::shared_images(api, call).await,
        // Mapping files are checked against ACTIONS when loaded.
        _ => Err(V1Error::NotFound("The resource could not be found.".into())),
    }
}

/// The methods the routes of `path` take, for `Allow`.
fn allowed(mapping: &Mapping, path: &str) -> String {
    let segments = split_path(path).unwrap_or_default();
    let takes = |method: &&str| matches!(mapping.routes.lookup(method, &segments), Lookup::Found { .. });
    ["GET", "HEAD", "POST", "PUT", "DELETE"].into_iter().filter(takes).collect::<Vec<_>>().join(", ")
}

/// The version document of a v1-only Glance (Queens' `versions.py` with only v1 enabled).
fn versions(origin: &str, mount: &str) -> Value {
    let version = |id: &str| json!({"id": id, "status": "DEPRECATED", "links": [{"rel": "self", "href": format!("{origin}{mount}/v1/")}]});
    json!({"versions": [version("v1.1"), version("v1.0")]})
}

fn labelled(mut response: Response, route: Arc<str>) -> Response {
    response.extensions_mut().insert(RouteLabel { dialect: DIALECT, route });
    response
}
