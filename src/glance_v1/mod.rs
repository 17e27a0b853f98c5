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
use crate::mapping::{split_path, Action, BindError, Lookup, Mapping, Param, Parts, QueryMap, Route, View};
use crate::public_url::OriginPolicy;

pub use error::V1Error;

/// The calls `mappings/glance_v1.toml` may route to, each bound to the view, query map and
/// path parameters (`image`: the image id, `member`: a member's project) of its route when the
/// file is loaded.
#[derive(Debug)]
pub enum GlanceV1Action {
    ListImages {
        view: Arc<View>,
        query: Arc<QueryMap>,
    },
    /// HEAD: the view written as headers.
    ImageMeta {
        view: Arc<View>,
        image: Param,
    },
    DownloadImage {
        view: Arc<View>,
        image: Param,
    },
    CreateImage {
        view: Arc<View>,
    },
    UpdateImage {
        view: Arc<View>,
        image: Param,
    },
    DeleteImage {
        image: Param,
    },
    ListMembers {
        image: Param,
    },
    ReplaceMembers {
        image: Param,
    },
    AddMember {
        image: Param,
        member: Param,
    },
    RemoveMember {
        image: Param,
        member: Param,
    },
    SharedImages {
        member: Param,
    },
}

impl Action for GlanceV1Action {
    const DIALECT: &'static str = "glance_v1";
    const NAMES: &'static [&'static str] = &[
        "list_images",
        "image_meta",
        "download_image",
        "create_image",
        "update_image",
        "delete_image",
        "list_members",
        "replace_members",
        "add_member",
        "remove_member",
        "shared_images",
    ];

    fn bind(name: &str, parts: &Parts<'_>) -> Result<Self, BindError> {
        let image = || parts.param("id");
        let member = || parts.param("member");
        Ok(match name {
            "list_images" => GlanceV1Action::ListImages { view: parts.view()?, query: parts.query()? },
            "image_meta" => GlanceV1Action::ImageMeta { view: parts.view()?, image: image()? },
            "download_image" => GlanceV1Action::DownloadImage { view: parts.view()?, image: image()? },
            "create_image" => GlanceV1Action::CreateImage { view: parts.view()? },
            "update_image" => GlanceV1Action::UpdateImage { view: parts.view()?, image: image()? },
            "delete_image" => GlanceV1Action::DeleteImage { image: image()? },
            "list_members" => GlanceV1Action::ListMembers { image: image()? },
            "replace_members" => GlanceV1Action::ReplaceMembers { image: image()? },
            "add_member" => GlanceV1Action::AddMember { image: image()?, member: member()? },
            "remove_member" => GlanceV1Action::RemoveMember { image: image()?, member: member()? },
            "shared_images" => GlanceV1Action::SharedImages { member: member()? },
            _ => return Err(BindError::UnknownAction),
        })
    }
}

/// The v1 dialect's compiled mapping file.
pub type GlanceV1Mapping = Mapping<GlanceV1Action>;

const DIALECT: &str = GlanceV1Action::DIALECT;
const UNMATCHED: &str = "glance_v1.unmatched";
const VERSIONS: &str = "glance_v1.versions";

/// Settings the v1 dialect takes from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where it is served (`dialects.*.mounts`): the version document at each, the calls
    /// below it at `/v1/...`.
    pub mounts: Vec<String>,
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
    pub mapping: Arc<GlanceV1Mapping>,
    pub glance: GlanceClient,
    pub settings: Settings,
    pub origin: Arc<OriginPolicy>,
    /// The limit on lists in flight.
    pub admission: Arc<Admission>,
}

/// One v1 call being served.
pub struct V1Call<'a> {
    route: &'a Route<GlanceV1Action>,
    method: &'a Method,
    params: Vec<(String, String)>,
    query: Vec<(String, String)>,
    /// The request's headers: v1 says an image's metadata in them.
    headers: &'a HeaderMap,
    glance: Call,
    /// `{origin}{mount}/v1/images`, for `Location`.
    images_url: String,
    /// The request has a body: a declared length above 0, or a stream (chunked, or HTTP/2
    /// DATA) that did not end with the head.
    has_body: bool,
}

#[derive(Clone, Debug)]
struct Mount {
    api: Arc<GlanceV1Api>,
    path: Arc<str>,
}

/// The service for one v1 mount, to be nested at `path`.
pub fn mount(api: Arc<GlanceV1Api>, path: &str) -> Router {
    Router::new().fallback(handle).with_state(Mount { api, path: path.into() })
}

async fn handle(State(Mount { api, path: mount }): State<Mount>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    if matches!(path, "" | "/" | "/versions") && matches!(parts.method, Method::GET | Method::HEAD) {
        // glanceclient reads `/versions` and takes only a 200 there.
        let status = if path == "/versions" { StatusCode::OK } else { StatusCode::MULTIPLE_CHOICES };
        let origin = api.origin.origin(&parts.headers, &parts.extensions);
        let response = (status, axum::Json(versions(&origin, &mount))).into_response();
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
        method: &parts.method,
        params,
        query: url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()).into_owned().collect(),
        headers: &parts.headers,
        glance: Call::new(api.glance.forwarded(&parts.headers)),
        images_url: format!("{origin}{mount}/v1/images"),
        has_body: !http_body::Body::is_end_stream(&body)
            || crate::body::declared_length(&parts.headers).is_some_and(|len| len > 0),
    };
    // Image bytes take as long as they take (idle timers watch them); anything else has the
    // request deadline.
    let limit = api.settings.request_timeout;
    let outcome = if images::sends_bytes(&route.action, call.has_body) {
        run(&api, &call, body).await
    } else {
        tokio::time::timeout(limit, run(&api, &call, body)).await.unwrap_or(Err(V1Error::Timeout(limit)))
    };
    let mut response = outcome.unwrap_or_else(|e| e.page(&parts.headers));
    response.extensions_mut().insert(UpstreamTime(call.glance.upstream_time()));
    labelled(response, route.id.clone())
}

async fn run(api: &GlanceV1Api, call: &V1Call<'_>, body: Body) -> Result<Response, V1Error> {
    let p = |param: &Param| param.of(&call.params);
    match &call.route.action {
        // v1 routed HEAD of a list to the list, which refused it.
        GlanceV1Action::ListImages { .. } if call.method == Method::HEAD => {
            Err(V1Error::MethodNotAllowed("GET".into()))
        }
        GlanceV1Action::ListImages { view, query } => images::list(api, call, view, query).await,
        GlanceV1Action::ImageMeta { view, image } => images::meta(api, call, view, p(image)).await,
        GlanceV1Action::DownloadImage { view, image } => images::download(api, call, view, p(image)).await,
        GlanceV1Action::CreateImage { view } => images::create(api, call, view, body).await,
        GlanceV1Action::UpdateImage { view, image } => images::update(api, call, view, p(image), body).await,
        GlanceV1Action::DeleteImage { image } => images::delete(api, call, p(image)).await,
        GlanceV1Action::ListMembers { image } => members::list(api, call, p(image)).await,
        GlanceV1Action::ReplaceMembers { image } => members::replace(api, call, p(image), body).await,
        GlanceV1Action::AddMember { image, member } => members::add(api, call, p(image), p(member), body).await,
        GlanceV1Action::RemoveMember { image, member } => members::remove(api, call, p(image), p(member)).await,
        GlanceV1Action::SharedImages { member } => members::shared_images(api, call, p(member)).await,
    }
}

/// The methods the routes of `path` take, for `Allow`.
fn allowed(mapping: &GlanceV1Mapping, path: &str) -> String {
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
