//! The v1 image calls, each one or a few Glance v2 calls.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Value};

use crate::glance::{BoxError, Call, GlanceClient, ListError, UpstreamError};
use crate::list;
use crate::mapping::{LinkBases, QueryMap, RawObject, View, ViewContext};

use super::meta::{self, Requested};
use super::{GlanceV1Action, GlanceV1Api, V1Call, V1Error};

/// v1's `limit_param_default` and `api_limit_max`.
/// The only media type v1 takes and gives image bytes as.
const OCTETS: &str = "application/octet-stream";
const DEFAULT_LIMIT: i64 = 25;
const MAX_LIMIT: i64 = 1000;
/// The sort keys v1 took (registry `SUPPORTED_SORT_KEYS`).
const SORT_KEYS: [&str; 8] =
    ["name", "status", "container_format", "disk_format", "size", "id", "created_at", "updated_at"];
/// Filters v1 checked as whole numbers of at least 0.
const COUNT_FILTERS: [&str; 4] = ["size_min", "size_max", "min_ram", "min_disk"];
/// v1 images carry no links.
static NO_LINKS: LinkBases =
    LinkBases { versioned: String::new(), unversioned: String::new(), image_service: String::new() };

/// `GET /v1/images` and `/v1/images/detail`: v1's parameters checked as v1 checked them, then
/// translated by the route's query map and listed page by page ([`crate::list`]).
pub async fn list(
    api: &GlanceV1Api,
    call: &V1Call<'_>,
    view: &Arc<View>,
    query_map: &QueryMap,
) -> Result<Response, V1Error> {
    let last = |key: &str| call.query.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let bad = |m: &str| V1Error::BadRequest(m.to_owned());
    let limit = match last("limit").map(|v| v.trim().parse::<i64>()) {
        None => DEFAULT_LIMIT,
        Some(Err(_)) => return Err(bad("limit param must be an integer")),
        Some(Ok(n)) if n < 0 => return Err(bad("limit param must be positive")),
        Some(Ok(n)) => n.min(MAX_LIMIT),
    };
    let limit = usize::try_from(limit).unwrap_or(0);
    let marker = match last("marker").filter(|m| !m.is_empty()) {
        Some(m) => Some(uuid_like(m).ok_or_else(|| bad("Invalid marker format"))?),
        None => None,
    };
    if let Some(key) = last("sort_key").filter(|k| !SORT_KEYS.contains(k)) {
        let _ = key;
        return Err(bad(&format!("Unsupported sort_key. Acceptable values: {}", SORT_KEYS.join(", "))));
    }
    if last("sort_dir").is_some_and(|d| !matches!(d, "asc" | "desc")) {
        return Err(bad("Unsupported sort_dir. Acceptable values: asc, desc"));
    }
    for key in COUNT_FILTERS {
        if let Some(value) = last(key).filter(|v| v.trim().parse::<u64>().is_err()) {
            return Err(bad(&format!("Bad value passed to filter {key} got {value}")));
        }
    }
    if last("changes-since").is_some_and(|t| crate::mapping::view::utc_microseconds(t).is_err()) {
        return Err(bad("Unrecognized changes-since value"));
    }
    // v1's own words for v2's booleans.
    let protected = match last("protected").map(str::to_ascii_lowercase).as_deref() {
        None => None,
        Some("true" | "1") => Some("true"),
        Some("false" | "0") => Some("false"),
        Some(_) => return Err(bad("protected must be True, or False")),
    };
    let is_public = match last("is_public").map(str::to_ascii_lowercase).as_deref() {
        None => None,
        Some("true" | "1") => Some(true),
        Some("false" | "0") => Some(false),
        Some("none") => None,
        Some(_) => {
            return Err(bad(&format!("Bad value passed to filter is_public got {}", last("is_public").unwrap_or(""))))
        }
    };
    let query: Vec<(String, String)> = call
        .query
        .iter()
        .map(|(k, v)| match (k.as_str(), protected) {
            ("protected", Some(p)) => (k.clone(), p.to_owned()),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    let mut filters: Vec<(String, String)> =
        query_map.translate(&query).into_iter().filter(|(k, _)| !matches!(k.as_str(), "limit" | "marker")).collect();
    // v1 listed shared images whatever their members made of them (LP #1132294).
    filters.push(("member_status".into(), "all".into()));
    match (is_public, last("is_public").map(str::to_ascii_lowercase).as_deref()) {
        (Some(true), _) => filters.push(("visibility".into(), "public".into())),
        (None, Some("none")) => filters.push(("visibility".into(), "all".into())),
        _ => {}
    }
    // v2 has no "not public": those are listed and left out here, until `limit` are kept.
    let keep = (is_public == Some(false)).then(|| list::Keep {
        test: Box::new(|image: &RawObject<'_>| image.get("visibility").is_none_or(|v| v.get() != "\"public\"")),
        limit: Some(limit),
    });
    let ticket = api.admission.try_admit(super::DIALECT)?;
    let base_properties = api.glance.base_properties(&call.glance).await?;
    let glance_limit = if keep.is_some() { None } else { Some(limit) };
    let listing = api.glance.listing(&call.glance, filters, marker.as_deref(), glance_limit);
    let shape = list::Shape {
        view: view.clone(),
        links: NO_LINKS.clone(),
        base_properties,
        // v1 lists have no links: clients page with `marker` until a short page.
        tail: Box::new(|_, _| {}),
        keep,
    };
    list::respond(listing, shape, ticket).await.map_err(|e| match e {
        ListError::Upstream(e) => V1Error::Upstream(e),
        ListError::Visit(e) => V1Error::Render(e),
    })
}

/// `HEAD /v1/images/{id}`: the image as headers.
pub async fn meta(api: &GlanceV1Api, call: &V1Call<'_>, view: &View, id: &str) -> Result<Response, V1Error> {
    let image = fetch(api, call, id).await?;
    let mut response = StatusCode::OK.into_response();
    write_image_headers(api, call, view, &image, response.headers_mut()).await?;
    Ok(response)
}

/// `GET /v1/images/{id}`: the bytes, streamed from Glance, under the image's headers. As v1, an
/// image that is not active has none to give (404; deactivated: 403).
pub async fn download(api: &GlanceV1Api, call: &V1Call<'_>, view: &View, id: &str) -> Result<Response, V1Error> {
    let image = fetch(api, call, id).await?;
    match image["status"].as_str() {
        Some("active") => {}
        Some("deactivated") => return Err(V1Error::Forbidden(format!("Image {id} is deactivated"))),
        _ => return Err(V1Error::NotFound(format!("Image {id} is not active"))),
    }
    let data = api.glance.download(&call.glance, id).await.map_err(|e| not_found_as_v1(e, id))?;
    let (length, body) = match data {
        Some(data) => (data.length.or(image["size"].as_u64()), data.body),
        None => (Some(0), Body::empty()),
    };
    let mut response = body.into_response();
    write_image_headers(api, call, view, &image, response.headers_mut()).await?;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(OCTETS));
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    Ok(response)
}

/// The image's `x-image-meta-*` headers and its `ETag` (the checksum, when Glance has one).
async fn write_image_headers(
    api: &GlanceV1Api,
    call: &V1Call<'_>,
    view: &View,
    image: &Value,
    headers: &mut HeaderMap,
) -> Result<(), V1Error> {
    meta::write_headers(&render(api, call, view, image).await?, headers);
    if let Some(etag) = image["checksum"].as_str().and_then(|c| HeaderValue::from_str(c).ok()) {
        headers.insert(header::ETAG, etag);
    }
    Ok(())
}

/// The image a call names, with Glance's refusals said as v1 said them.
async fn fetch(api: &GlanceV1Api, call: &V1Call<'_>, id: &str) -> Result<Value, V1Error> {
    api.glance.get_image(&call.glance, id).await.map_err(|e| not_found_as_v1(e, id))
}

fn not_found_as_v1(e: UpstreamError, id: &str) -> V1Error {
    match e.status().map(|s| s.as_u16()) {
        Some(404) => V1Error::NotFound(format!("Image with identifier {id} not found")),
        Some(403) => V1Error::Forbidden("Forbidden image access".into()),
        _ => V1Error::Upstream(e),
    }
}

/// Shapes one Glance image with the route's view.
async fn render(api: &GlanceV1Api, call: &V1Call<'_>, view: &View, image: &Value) -> Result<Value, V1Error> {
    let base = api.glance.base_properties(&call.glance).await?;
    let ctx = ViewContext { links: &NO_LINKS, base_properties: &base };
    Ok(view.render(image, &ctx)?)
}

/// `{"image": ...}`, as v1 answered a create or an update.
async fn image_answer(
    api: &GlanceV1Api,
    call: &V1Call<'_>,
    view: &View,
    image: &Value,
    status: StatusCode,
) -> Result<Response, V1Error> {
    let body = json!({ "image": render(api, call, view, image).await? });
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(etag) = image["checksum"].as_str().and_then(|c| HeaderValue::from_str(c).ok()) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    Ok(response)
}

/// Whether a call streams image bytes in, and so has no total deadline (idle timers watch it).
pub fn sends_bytes(action: &GlanceV1Action, has_body: bool) -> bool {
    matches!(action, GlanceV1Action::CreateImage { .. } | GlanceV1Action::UpdateImage { .. }) && has_body
}

/// Where the image's bytes come from.
enum Source {
    Body { declared: Option<u64> },
    CopyFrom(String),
    Nothing,
}

/// The source a create or update names, checked before anything reaches Glance: one source at
/// most, a copy-from URL that is one, a size that agrees with the body, within the limit.
fn source(api: &GlanceV1Api, call: &V1Call<'_>, asked: &Requested) -> Result<Source, V1Error> {
    let header = call.headers.get("x-glance-api-copy-from").map(|v| v.to_str());
    let copy_from = match header {
        Some(Ok(url)) => Some(url.to_owned()),
        Some(Err(_)) => return Err(V1Error::BadRequest("Bad header: x-glance-api-copy-from".into())),
        None => asked.copy_from.clone(),
    };
    let body = call.has_body;
    if body && copy_from.is_some() {
        return Err(V1Error::BadRequest("It's invalid to provide multiple image sources.".into()));
    }
    if let Some(url) = copy_from {
        let usable = url::Url::parse(&url).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
        if !usable {
            return Err(V1Error::BadRequest(format!("External sources are not supported: '{url}'")));
        }
        return Ok(Source::CopyFrom(url));
    }
    if !body {
        return Ok(Source::Nothing);
    }
    // As v1: image bytes are octet-streams; anything else is a client mistake.
    let content_type = call.headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or_default());
    if content_type.is_some_and(|t| !t.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case(OCTETS)) {
        return Err(V1Error::BadRequest("Content-Type must be application/octet-stream".into()));
    }
    let length = crate::body::declared_length(call.headers);
    if let (Some(length), Some(size)) = (length, asked.size) {
        if length != size {
            return Err(V1Error::BadRequest(format!(
                "x-image-meta-size {size} does not match the {length} bytes of the request body"
            )));
        }
    }
    let declared = length.or(asked.size);
    if let (Some(declared), Some(limit)) = (declared, api.settings.max_image_bytes) {
        if declared > limit {
            return Err(too_large(limit));
        }
    }
    Ok(Source::Body { declared })
}

fn too_large(limit: u64) -> V1Error {
    V1Error::TooLarge(format!("Denying attempt to upload image larger than {limit} bytes."))
}

/// v1 would not activate an image without both formats.
fn formats_set(image: Option<&Value>, asked: &Requested) -> Result<(), V1Error> {
    for (key, what) in [("disk_format", "Disk"), ("container_format", "Container")] {
        let set = |v: Option<&Value>| v.is_some_and(|v| v.as_str().is_some_and(|s| !s.is_empty()));
        if !set(asked.fields.get(key)) && !set(image.and_then(|i| i.get(key))) {
            return Err(V1Error::BadRequest(format!("{what} format is not specified.")));
        }
    }
    Ok(())
}

/// `POST /v1/images`: a v2 image made from the headers, then its bytes streamed into Glance's
/// upload, or its copy-from started as a `web-download` import. An image whose bytes do not
/// all arrive (the client went, sent other than it declared, Glance refused them) is deleted:
/// nothing half-made stays behind.
pub async fn create(api: &GlanceV1Api, call: &V1Call<'_>, view: &View, body: Body) -> Result<Response, V1Error> {
    let asked = meta::read_headers(call.headers)?;
    let source = source(api, call, &asked)?;
    if !matches!(source, Source::Nothing) {
        formats_set(None, &asked)?;
    }
    let base = api.glance.base_properties(&call.glance).await?;
    let mut fields = asked.fields.clone();
    if asked.is_public == Some(true) {
        fields.insert("visibility".into(), json!("public"));
    }
    for (key, value) in &asked.properties {
        if base.contains(key) {
            return Err(core_property(key));
        }
        fields.insert(key.clone(), json!(value));
    }
    let image = api.glance.create_image(&call.glance, &Value::Object(fields)).await?;
    let id = image["id"].as_str().unwrap_or_default().to_owned();
    let mut unmade = Unmade { glance: api.glance.clone(), call: call.glance.clone(), id: Some(id.clone()) };
    let image = match source {
        Source::Body { declared } => {
            if let Err(e) = upload(api, call, &id, body, declared).await {
                unmade.delete().await;
                return Err(e);
            }
            let image = api.glance.get_image(&call.glance, &id).await?;
            if let Err(e) = checksum_agrees(&asked, &image) {
                unmade.delete().await;
                return Err(e);
            }
            image
        }
        Source::CopyFrom(url) => {
            if let Err(e) = api.glance.import_web_download(&call.glance, &id, &url).await {
                unmade.delete().await;
                return Err(import_error(&url, e));
            }
            api.glance.get_image(&call.glance, &id).await?
        }
        Source::Nothing => image,
    };
    unmade.id = None;
    let mut response = image_answer(api, call, view, &image, StatusCode::CREATED).await?;
    if let Ok(location) = HeaderValue::from_str(&format!("{}/{id}", call.images_url)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `PUT /v1/images/{id}`: the headers' changes as one v2 PATCH (properties not sent again are
/// removed unless `x-glance-registry-purge-props` says false or bytes are sent), then the
/// bytes or copy-from of a queued image.
pub async fn update(
    api: &GlanceV1Api,
    call: &V1Call<'_>,
    view: &View,
    id: &str,
    body: Body,
) -> Result<Response, V1Error> {
    let asked = meta::read_headers(call.headers)?;
    let source = source(api, call, &asked)?;
    let image = fetch(api, call, id).await?;
    let status = image["status"].as_str().unwrap_or_default();
    if asked.fields.get("id").is_some_and(|v| *v != image["id"]) {
        return Err(V1Error::Forbidden("Forbidden to modify 'id' of image.".into()));
    }
    if asked.status.as_deref().is_some_and(|s| s != status) {
        return Err(V1Error::Forbidden("Forbidden to modify 'status' of image.".into()));
    }
    if matches!(status, "active" | "deactivated") {
        let size_changes = asked.size.is_some_and(|s| Some(s) != image["size"].as_u64());
        let checksum_changes = asked.checksum.as_deref().is_some_and(|c| Some(c) != image["checksum"].as_str());
        for (key, changes) in [("size", size_changes), ("checksum", checksum_changes)] {
            if changes {
                return Err(V1Error::Forbidden(format!("Forbidden to modify '{key}' of {status} image.")));
            }
        }
    }
    if !matches!(source, Source::Nothing) {
        if status != "queued" {
            return Err(V1Error::Conflict("Cannot upload to an unqueued image".into()));
        }
        formats_set(Some(&image), &asked)?;
    }
    let purge = call
        .headers
        .get("x-glance-registry-purge-props")
        .is_none_or(|v| meta::bool_from_string(v.to_str().unwrap_or("")))
        && !matches!(source, Source::Body { .. });
    let base = api.glance.base_properties(&call.glance).await?;
    let ops = changes(&image, &asked, purge, &base)?;
    let mut image = if ops.is_empty() { image } else { api.glance.patch_image(&call.glance, id, &ops).await? };
    match source {
        Source::Body { declared } => {
            upload(api, call, id, body, declared).await?;
            image = api.glance.get_image(&call.glance, id).await?;
            checksum_agrees(&asked, &image)?;
        }
        Source::CopyFrom(url) => {
            api.glance.import_web_download(&call.glance, id, &url).await.map_err(|e| import_error(&url, e))?;
            image = api.glance.get_image(&call.glance, id).await?;
        }
        Source::Nothing => {}
    }
    image_answer(api, call, view, &image, StatusCode::OK).await
}

/// The JSON-patch operations that make `image` what `asked` says: a `replace` per core field
/// that changes, an `add` (v2's upsert) per property that changes, and with `purge` a `remove`
/// per custom property not named.
fn changes(
    image: &Value,
    asked: &Requested,
    purge: bool,
    base: &crate::mapping::PropertyNames,
) -> Result<Vec<Value>, V1Error> {
    let pointer = |key: &str| format!("/{}", key.replace('~', "~0").replace('/', "~1"));
    let mut ops = Vec::new();
    for (key, value) in asked.fields.iter().filter(|(k, _)| *k != "id") {
        if image.get(key) != Some(value) {
            ops.push(json!({"op": "replace", "path": pointer(key), "value": value}));
        }
    }
    let visibility = image["visibility"].as_str().unwrap_or_default();
    match asked.is_public {
        Some(true) if visibility != "public" => {
            ops.push(json!({"op": "replace", "path": "/visibility", "value": "public"}));
        }
        // Glance's own rule for v1's `is_public: false` (glance/db/utils.py): shared.
        Some(false) if visibility == "public" => {
            ops.push(json!({"op": "replace", "path": "/visibility", "value": "shared"}));
        }
        _ => {}
    }
    for (key, value) in &asked.properties {
        if base.contains(key) {
            return Err(core_property(key));
        }
        if image.get(key).and_then(Value::as_str) != Some(value.as_str()) {
            ops.push(json!({"op": "add", "path": pointer(key), "value": value}));
        }
    }
    if purge {
        let custom = image.as_object().into_iter().flatten().map(|(k, _)| k);
        for key in custom.filter(|k| !base.contains(*k) && !k.starts_with("os_glance_")) {
            if !asked.properties.iter().any(|(k, _)| k == key) {
                ops.push(json!({"op": "remove", "path": pointer(key)}));
            }
        }
    }
    Ok(ops)
}

fn core_property(key: &str) -> V1Error {
    V1Error::BadRequest(format!(
        "x-image-meta-property-{key} names a core image attribute: use x-image-meta-{key}, if v1 has it"
    ))
}

/// v1 refused bytes whose MD5 was not the one the client declared (Glance then marked the
/// image killed; here it is deleted or, for an update, left for the client to see).
fn checksum_agrees(asked: &Requested, image: &Value) -> Result<(), V1Error> {
    match (asked.checksum.as_deref(), image["checksum"].as_str()) {
        (Some(declared), Some(computed)) if !declared.eq_ignore_ascii_case(computed) => {
            Err(V1Error::BadRequest(format!(
                "Supplied checksum ({declared}) and checksum generated from uploaded image ({computed}) did not match."
            )))
        }
        _ => Ok(()),
    }
}

fn import_error(url: &str, e: UpstreamError) -> V1Error {
    match e {
        UpstreamError::Status { status, message } if status.is_client_error() => {
            V1Error::BadRequest(format!("Glance would not copy from {url}: {message}"))
        }
        other => V1Error::Upstream(other),
    }
}

/// `DELETE /v1/images/{id}`: 200 with an empty body, as Queens' code answered.
pub async fn delete(api: &GlanceV1Api, call: &V1Call<'_>, id: &str) -> Result<Response, V1Error> {
    api.glance.delete_image(&call.glance, id).await.map_err(|e| match e.status().map(|s| s.as_u16()) {
        Some(404) => V1Error::NotFound(format!("Image with identifier {id} not found")),
        _ => V1Error::Upstream(e),
    })?;
    Ok(StatusCode::OK.into_response())
}

/// Streams the request body into Glance's upload of image `id`, holding it to the size it
/// declared and to `max_image_bytes`.
async fn upload(
    api: &GlanceV1Api,
    call: &V1Call<'_>,
    id: &str,
    body: Body,
    declared: Option<u64>,
) -> Result<(), V1Error> {
    let verdict = Arc::new(AtomicU8::new(BODY_OK));
    let limit = api.settings.max_image_bytes;
    let data = checked(body, declared, limit, verdict.clone());
    let uploaded = api.glance.upload(&call.glance, id, data).await;
    match (uploaded, verdict.load(Ordering::Relaxed)) {
        (Ok(()), _) => Ok(()),
        (Err(_), BODY_TOO_LARGE) => Err(too_large(limit.unwrap_or(u64::MAX))),
        (Err(e), _) => Err(V1Error::Upstream(e)),
    }
}

const BODY_OK: u8 = 0;
const BODY_TOO_LARGE: u8 = 1;
const BODY_SHORT_OR_LONG: u8 = 2;

/// Why the gateway ended a client's body early.
#[derive(Debug, thiserror::Error)]
enum BodyProblem {
    #[error("the body is larger than the {0} bytes allowed")]
    TooLarge(u64),
    #[error("the body is {got} bytes or more, not the {declared} it declared")]
    Long { declared: u64, got: u64 },
    #[error("the body ended after {got} bytes, not the {declared} it declared")]
    Short { declared: u64, got: u64 },
}

/// The request body as chunks, failing at once when it grows past `limit` or past the size
/// it declared, or ends short of it; `verdict` records which.
fn checked(
    body: Body,
    declared: Option<u64>,
    limit: Option<u64>,
    verdict: Arc<AtomicU8>,
) -> impl Stream<Item = Result<Bytes, BoxError>> + Send + 'static {
    let state = (body.into_data_stream(), 0u64, false);
    futures_util::stream::unfold(state, move |(mut data, seen, done)| {
        let verdict = verdict.clone();
        async move {
            if done {
                return None;
            }
            match data.next().await {
                Some(Ok(chunk)) => {
                    let seen = seen + chunk.len() as u64;
                    if let Some(limit) = limit.filter(|l| seen > *l) {
                        verdict.store(BODY_TOO_LARGE, Ordering::Relaxed);
                        return Some((Err(BodyProblem::TooLarge(limit).into()), (data, seen, true)));
                    }
                    if let Some(declared) = declared.filter(|d| seen > *d) {
                        verdict.store(BODY_SHORT_OR_LONG, Ordering::Relaxed);
                        return Some((Err(BodyProblem::Long { declared, got: seen }.into()), (data, seen, true)));
                    }
                    Some((Ok(chunk), (data, seen, false)))
                }
                Some(Err(e)) => Some((Err(e.into()), (data, seen, true))),
                None => match declared.filter(|d| seen != *d) {
                    Some(declared) => {
                        verdict.store(BODY_SHORT_OR_LONG, Ordering::Relaxed);
                        Some((Err(BodyProblem::Short { declared, got: seen }.into()), (data, seen, true)))
                    }
                    None => None,
                },
            }
        }
    })
}

/// An image created for a call that has not succeeded: deleted if the call fails or is
/// dropped (the client went), so that no half-made image stays behind.
struct Unmade {
    glance: GlanceClient,
    call: Call,
    /// `None` once the image is made, or deleted.
    id: Option<String>,
}

impl Unmade {
    async fn delete(&mut self) {
        if let Some(id) = self.id.take() {
            remove(&self.glance, &self.call, &id).await;
        }
    }
}

impl Drop for Unmade {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let (glance, call) = (self.glance.clone(), self.call.clone());
            // The request is gone with its task: the deletion gets one of its own.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { remove(&glance, &call, &id).await });
            }
        }
    }
}

async fn remove(glance: &GlanceClient, call: &Call, id: &str) {
    match glance.delete_image(call, id).await {
        Ok(()) => tracing::info!(image = %id, "deleted an image whose upload did not complete"),
        Err(e) => tracing::error!(image = %id, error = %e, "could not delete an image whose upload did not complete"),
    }
}

/// oslo's `is_uuid_like`, as v1 checked markers: a UUID, hyphenated or not, in any case; given
/// back as Glance writes its ids.
fn uuid_like(value: &str) -> Option<String> {
    let hex: String = value.chars().filter(|c| *c != '-').collect();
    let shaped = value.len() == 32 || crate::glance::is_image_id(value);
    if !shaped || hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let h = hex.to_ascii_lowercase();
    Some(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_uuids_in_glance_form() {
        assert_eq!(
            uuid_like("0B7E3A5C1F2D4E6A8B9C0D1E2F3A4B5C").as_deref(),
            Some("0b7e3a5c-1f2d-4e6a-8b9c-0d1e2f3a4b5c")
        );
        assert_eq!(
            uuid_like("0b7e3a5c-1f2d-4e6a-8b9c-0d1e2f3a4b5c").as_deref(),
            Some("0b7e3a5c-1f2d-4e6a-8b9c-0d1e2f3a4b5c")
        );
        for bad in [
            "",
            "x",
            "0b7e3a5c-1f2d-4e6a-8b9c-0d1e2f3a4b5",
            "0b7e3a5c1f2d4e6a8b9c0d1e2f3a4b5g",
            "--0b7e3a5c1f2d4e6a8b9c0d1e2f3a4b5c",
        ] {
            assert_eq!(uuid_like(bad), None, "{bad}");
        }
    }
}
