//! An embedded, in-memory Glance v2 image store served as an axum [`Router`].
//!
//! The gateway uses it when no real Glance is configured, and the test suite runs the
//! same tests against it and against a real Glance 33, so status codes, JSON shapes and
//! error bodies follow Glance for the subset implemented here. Deliberate differences:
//! - `X-Identity-Status: Confirmed` is not required (Glance answers 401 without it), and
//!   only the `admin` role is checked: there is no reader/member split.
//! - Image members follow Glance's rules for owners and members (a member sees a shared image
//!   whatever its member status; lists take `member_status`); admins get no special view of
//!   members, and there is no member quota.
//! - Not implemented: tasks,
//!   import methods other than web-download, stage, locations, `/tags/{tag}`, `/v2/schemas/images`, Range downloads, and
//!   the deprecated `openstack-images-v2.0-json-patch` media type (415 here).
//! - Uploads are kept in memory without a size cap; `checksum`, `os_hash_algo` and
//!   `os_hash_value` stay null (no hash crate), and `virtual_size` equals `size`.
//! - The list's `first`/`next` links keep repeated query keys; Glance collapses them.
//! - `Location` and the versions document's links are built from the `Host` header and do
//!   not include a prefix under which the router may be nested.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use crate::config::EmbeddedIdentity;
use crate::mapping::PropertyNames;
use std::fmt::{Display, Write as _};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use time::format_description::well_known::Iso8601;
use time::{macros::format_description, Date, OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// Glance's `_readonly_properties`: 403 on PATCH, and (except `id`) on create.
const READ_ONLY: &str = "created_at updated_at status checksum size virtual_size direct_url \
                         self file schema id os_hash_algo os_hash_value";
/// Glance's `_disallowed_properties`, refused first on create.
const DISALLOWED: &str = "direct_url self file schema stores";
const RESERVED: &str = "location deleted deleted_at";
const SORT_KEYS: &str = "name status container_format disk_format size id created_at updated_at";
/// Path prefixes that Glance's version negotiation maps to v2 (no cache, single store).
const V2_PREFIXES: &str = "v2 v2.0 v2.1 v2.2 v2.3 v2.4 v2.5 v2.6 v2.7 v2.9 v2.15 v2.17";
/// `GET /v2/images` parameters that are not filters.
const CONTROL_KEYS: &str = "limit marker member_status tag sort sort_key sort_dir";
/// Columns that `<column>_min`/`<column>_max` list filters apply to.
const NUMERIC: &str = "size virtual_size min_ram min_disk";
const PATCH_TYPE: &str = "application/openstack-images-v2.1-json-patch";
/// Glance's default `image_property_quota` and `image_tag_quota`.
const QUOTA: usize = 128;

fn listed(words: &str, key: &str) -> bool {
    words.split(' ').any(|w| w == key)
}

/// `GET /v2/schemas/image`, also used to validate request bodies. Base properties have no
/// `is_base`; the defaults of Glance's `etc/schema-image.json` have `"is_base": false`.
const IMAGE_SCHEMA_JSON: &str = r#"{"name": "image", "properties": {
 "id": {"type": "string", "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"},
 "name": {"type": ["null", "string"], "maxLength": 255},
 "status": {"type": "string", "readOnly": true, "enum": ["queued", "saving", "active", "killed",
   "deleted", "uploading", "importing", "pending_delete", "deactivated"]},
 "visibility": {"type": "string", "enum": ["community", "public", "private", "shared"]},
 "protected": {"type": "boolean"},
 "os_hidden": {"type": "boolean"},
 "checksum": {"type": ["null", "string"], "readOnly": true, "maxLength": 32},
 "os_hash_algo": {"type": ["null", "string"], "readOnly": true, "maxLength": 64},
 "os_hash_value": {"type": ["null", "string"], "readOnly": true, "maxLength": 128},
 "owner": {"type": ["null", "string"], "maxLength": 255},
 "size": {"type": ["null", "integer"], "readOnly": true},
 "virtual_size": {"type": ["null", "integer"], "readOnly": true},
 "container_format": {"type": ["null", "string"],
   "enum": [null, "ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed"]},
 "disk_format": {"type": ["null", "string"], "enum": [null, "ami", "ari", "aki", "vhd", "vhdx",
   "vmdk", "raw", "qcow2", "vdi", "iso", "ploop"]},
 "created_at": {"type": "string", "readOnly": true},
 "updated_at": {"type": "string", "readOnly": true},
 "tags": {"type": "array", "items": {"type": "string", "maxLength": 255}},
 "direct_url": {"type": "string", "readOnly": true},
 "min_ram": {"type": "integer"},
 "min_disk": {"type": "integer"},
 "self": {"type": "string", "readOnly": true},
 "file": {"type": "string", "readOnly": true},
 "stores": {"type": "string", "readOnly": true},
 "schema": {"type": "string", "readOnly": true},
 "locations": {"type": "array", "items": {"type": "object"}},
 "kernel_id": {"type": ["null", "string"], "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$", "is_base": false},
 "ramdisk_id": {"type": ["null", "string"], "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$", "is_base": false},
 "instance_uuid": {"type": "string", "is_base": false},
 "architecture": {"type": "string", "is_base": false},
 "os_distro": {"type": "string", "is_base": false},
 "os_version": {"type": "string", "is_base": false},
 "description": {"type": "string", "is_base": false},
 "cinder_encryption_key_id": {"type": "string", "is_base": false},
 "cinder_encryption_key_deletion_policy": {"type": "string",
   "enum": ["on_image_deletion", "do_not_delete"], "is_base": false}},
 "additionalProperties": {"type": "string"},
 "links": [{"rel": "self", "href": "{self}"}, {"rel": "enclosure", "href": "{file}"},
   {"rel": "describedby", "href": "{schema}"}]}"#;

static IMAGE_SCHEMA: LazyLock<Value> = LazyLock::new(|| serde_json::from_str(IMAGE_SCHEMA_JSON).unwrap_or_default());

/// A shared in-memory Glance v2 image store.
///
/// Deleted images stay as tombstones so that their ids remain taken, as in Glance's DB.
#[derive(Clone, Default)]
pub struct Store {
    images: Arc<Mutex<HashMap<String, Image>>>,
    identity: EmbeddedIdentity,
}

/// The project every caller acts in when the store takes no identity from headers.
pub const SINGLE_PROJECT: &str = "image-gateway";

impl Store {
    /// A store where every caller acts in [`SINGLE_PROJECT`], without admin rights.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store whose callers are told apart as `identity` says (fixed for its life).
    pub fn with_identity(identity: EmbeddedIdentity) -> Self {
        Store { identity, ..Self::default() }
    }

    /// Never held across an `.await`, and handlers do not panic while holding it, so even a
    /// poisoned lock guards consistent data.
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Image>> {
        self.images.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Store {
    /// Neither the image bytes nor the lock belong in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// The image API: `/v2/...`, `/versions`, and the 300 versions document for anything else.
pub fn router(store: Store) -> Router {
    Router::new().fallback(dispatch).with_state(store)
}

#[derive(Clone)]
struct Image {
    id: String,
    name: Option<String>,
    disk_format: Option<String>,
    container_format: Option<String>,
    visibility: String,
    status: &'static str,
    protected: bool,
    min_ram: i64,
    min_disk: i64,
    owner: Option<String>,
    os_hidden: bool,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    tags: Vec<String>,
    /// Custom properties in insertion order; the schema makes their values strings.
    props: Map<String, Value>,
    data: Option<Bytes>,
    members: Vec<Member>,
}

/// One image member: a project the owner shares the image with, and what it made of that.
#[derive(Clone)]
struct Member {
    project: String,
    /// `pending`, `accepted` or `rejected`.
    status: String,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl Member {
    fn view(&self, image_id: &str) -> Value {
        json!({
            "created_at": isotime(self.created_at), "updated_at": isotime(self.updated_at),
            "image_id": image_id, "member_id": self.project, "status": self.status,
            "schema": "/v2/schemas/member",
        })
    }
}

impl Image {
    fn size(&self) -> Option<usize> {
        self.data.as_ref().map(Bytes::len)
    }

    /// The image in Glance's serializer order: custom properties first, links last.
    fn view(&self) -> Value {
        let (id, size) = (&self.id, self.size());
        let base = json!({
            "name": self.name, "disk_format": self.disk_format,
            "container_format": self.container_format, "visibility": self.visibility,
            "size": size, "virtual_size": size, "status": self.status, "checksum": null,
            "protected": self.protected, "min_ram": self.min_ram, "min_disk": self.min_disk,
            "owner": self.owner, "os_hidden": self.os_hidden, "os_hash_algo": null,
            "os_hash_value": null, "id": id, "created_at": isotime(self.created_at),
            "updated_at": isotime(self.updated_at), "tags": self.tags,
            "self": format!("/v2/images/{id}"), "file": format!("/v2/images/{id}/file"),
            "schema": "/v2/schemas/image",
        });
        let mut view = self.props.clone();
        view.extend(base.as_object().cloned().unwrap_or_default());
        Value::Object(view)
    }

    /// Sets an attribute from a schema-validated value, with the checks of Glance's
    /// domain setters; other keys are custom properties.
    fn set(&mut self, key: &str, v: Value) -> Result<()> {
        let text = v.as_str().map(str::to_owned);
        match key {
            "name" => self.name = text,
            "owner" => self.owner = text,
            "visibility" => self.visibility = text.unwrap_or_default(),
            "protected" => self.protected = v.as_bool().unwrap_or_default(),
            "os_hidden" => self.os_hidden = v.as_bool().unwrap_or_default(),
            "min_ram" | "min_disk" => {
                let Some(n) = v.as_i64().filter(|n| *n >= 0) else {
                    let msg = format!("Invalid value '{v}' for parameter '{key}': Cannot be a negative value");
                    return Err(err(400, msg));
                };
                let field = if key == "min_ram" { &mut self.min_ram } else { &mut self.min_disk };
                *field = n;
            }
            "container_format" | "disk_format" => {
                if !matches!(self.status, "queued" | "importing") {
                    let msg = format!("Attribute {key} can be only replaced for a queued image.");
                    return Err(err(403, msg));
                }
                let field = match key {
                    "disk_format" => &mut self.disk_format,
                    _ => &mut self.container_format,
                };
                *field = text;
            }
            "tags" => {
                let tags: Vec<&str> = v.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                quota("tags", tags.len())?;
                self.tags.clear();
                for tag in tags {
                    if !self.tags.iter().any(|t| t == tag) {
                        self.tags.push(tag.to_owned());
                    }
                }
            }
            _ => drop(self.props.insert(key.to_owned(), v)),
        }
        Ok(())
    }

    /// String columns, for filters and sorting; `None` when `key` is not one.
    fn text_column(&self, key: &str) -> Option<Option<&str>> {
        Some(match key {
            "id" => Some(self.id.as_str()),
            "name" => self.name.as_deref(),
            "status" => Some(self.status),
            "container_format" => self.container_format.as_deref(),
            "disk_format" => self.disk_format.as_deref(),
            "owner" => self.owner.as_deref(),
            _ => return None,
        })
    }

    fn int_column(&self, key: &str) -> Option<Option<i64>> {
        Some(match key {
            "size" | "virtual_size" => self.size().map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
            "min_ram" => Some(self.min_ram),
            "min_disk" => Some(self.min_disk),
            _ => return None,
        })
    }

    /// Orders on one sort key; `None` sorts first, like SQL NULLs.
    fn cmp_on(&self, other: &Image, key: &str) -> Ordering {
        match key {
            "size" => self.size().cmp(&other.size()),
            "created_at" => self.created_at.cmp(&other.created_at),
            "updated_at" => self.updated_at.cmp(&other.updated_at),
            _ => self.text_column(key).cmp(&other.text_column(key)),
        }
    }
}

/// The caller, from the headers Glance's context middleware reads.
struct Ctx {
    project: Option<String>,
    admin: bool,
}

impl Ctx {
    fn from_headers(headers: &HeaderMap) -> Self {
        let get = |name: &str| {
            let value = headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
            value.filter(|s| !s.is_empty())
        };
        let project = get("x-project-id").or_else(|| get("x-tenant-id")).or_else(|| get("x-tenant"));
        let roles = get("x-roles").unwrap_or_default().split(',');
        let admin = roles.map(str::trim).any(|r| r.eq_ignore_ascii_case("admin"));
        Ctx { project: project.map(str::to_owned), admin }
    }

    fn owns(&self, image: &Image) -> bool {
        self.project.is_some() && image.owner == self.project
    }

    /// Glance's `get_image` rule: a member sees a shared image whatever its member status.
    fn may_see(&self, image: &Image) -> bool {
        let open = matches!(image.visibility.as_str(), "public" | "community");
        image.status != "deleted" && (self.admin || open || self.owns(image) || self.member_of(image).is_some())
    }

    /// The caller's membership of a shared image.
    fn member_of<'a>(&self, image: &'a Image) -> Option<&'a Member> {
        let project = self.project.as_deref()?;
        (image.visibility == "shared").then(|| image.members.iter().find(|m| m.project == project)).flatten()
    }

    fn may_modify(&self, image: &Image) -> bool {
        self.admin || self.owns(image)
    }
}

/// A Glance error: webob's JSON body (`message`, `code`, `title`) plus an optional header.
#[derive(Debug)]
struct GlanceError {
    status: StatusCode,
    message: String,
    header: Option<(HeaderName, &'static str)>,
}

type Result<T> = std::result::Result<T, GlanceError>;

impl GlanceError {
    fn with(code: u16, message: String) -> Self {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        GlanceError { status, message, header: None }
    }
}

/// Glance's usual `HTTPxxx(explanation=msg)`: `msg` leads webob's body template.
fn err(code: u16, msg: impl Display) -> GlanceError {
    GlanceError::with(code, format!("{msg}<br /><br />\n\n\n"))
}

/// `HTTPxxx(msg)` makes `msg` webob's detail, after the status' generic explanation.
fn err_detail(code: u16, msg: impl Display) -> GlanceError {
    let generic = match code {
        403 => "Access was denied to this resource.",
        _ => "There was a conflict when trying to complete your request.",
    };
    GlanceError::with(code, format!("{generic}<br /><br />\n{msg}\n\n"))
}

impl IntoResponse for GlanceError {
    fn into_response(self) -> Response {
        let title = match self.status {
            StatusCode::PAYLOAD_TOO_LARGE => "Request Entity Too Large",
            s => s.canonical_reason().unwrap_or("Error"),
        };
        let code = format!("{} {title}", self.status.as_u16());
        let body = json!({"message": self.message, "code": code, "title": title});
        let mut resp = (self.status, Json(body)).into_response();
        if let Some((name, value)) = self.header {
            resp.headers_mut().insert(name, HeaderValue::from_static(value));
        }
        resp
    }
}

fn not_found(id: &str) -> GlanceError {
    err(404, format!("No image found with ID {id}"))
}

/// 413 past Glance's property or tag quota.
fn quota(what: &str, attempted: usize) -> Result<()> {
    if attempted <= QUOTA {
        return Ok(());
    }
    let msg = format!(
        "The limit has been exceeded on the number of allowed image {what}. \
         Attempted: {attempted}, Maximum: {QUOTA}"
    );
    Err(err(413, msg))
}

/// What handlers need from a request, body already read.
struct Req {
    ctx: Ctx,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
}

impl Req {
    fn header(&self, name: HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Glance builds absolute URLs from the request's host.
    fn host_url(&self) -> String {
        format!("http://{}", self.header(header::HOST).unwrap_or("localhost"))
    }

    /// The media type without parameters, as webob's `content_type`.
    fn mime(&self) -> &str {
        let ct = self.header(header::CONTENT_TYPE).unwrap_or_default();
        ct.split(';').next().unwrap_or_default().trim()
    }

    fn json_body(&self) -> Result<Value> {
        if self.body.is_empty() {
            return Err(err(400, "Body expected in request."));
        }
        let v: Value = serde_json::from_slice(&self.body).map_err(|_| err(400, "Malformed JSON in request body."))?;
        match v {
            Value::Object(_) | Value::Array(_) => Ok(v),
            _ => Err(err(400, "Unexpected body type. Expected list/dict.")),
        }
    }
}

/// One entry point, so that 404/405/300 answers and the request id are uniform.
async fn dispatch(State(store): State<Store>, req: Request) -> Response {
    let request_id = match req.headers().get("x-openstack-request-id").map(|v| v.to_str()) {
        Some(Ok(id)) if id.starts_with("req-") => id.to_owned(),
        Some(Ok(id)) if !id.is_empty() => format!("req-{id}"),
        _ => format!("req-{}", uuid::Uuid::new_v4()),
    };
    let (parts, body) = req.into_parts();
    let mut resp = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => {
            let ctx = match store.identity {
                EmbeddedIdentity::Headers => Ctx::from_headers(&parts.headers),
                EmbeddedIdentity::SingleProject => Ctx { project: Some(SINGLE_PROJECT.into()), admin: false },
            };
            let rq = Req { ctx, headers: parts.headers, uri: parts.uri, body };
            route(&store, &parts.method, &rq).unwrap_or_else(IntoResponse::into_response)
        }
        // In practice a body limit layer around the router: Glance too answers 413.
        Err(_) => err(413, "The request body is too large.").into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-openstack-request-id", v);
    }
    resp
}

fn route(store: &Store, method: &Method, rq: &Req) -> Result<Response> {
    let segments: Vec<&str> = rq.uri.path().split('/').skip(1).collect();
    let path = match segments.as_slice() {
        ["versions", ..] => return Ok(versions(&rq.host_url(), StatusCode::OK)),
        [prefix, path @ ..] if listed(V2_PREFIXES, prefix) => path,
        // Glance's version negotiation answers any other prefix (`/`, `/v1/...`) with 300.
        _ => return Ok(versions(&rq.host_url(), StatusCode::MULTIPLE_CHOICES)),
    };
    let allow = match path {
        ["schemas", "image"] => "GET",
        ["images"] => "GET, POST",
        ["images", _] => "GET, PATCH, DELETE",
        ["images", _, "file"] => "GET, PUT",
        ["images", _, "import"] => "POST",
        ["images", _, "members"] => "GET, POST",
        ["images", _, "members", _] => "GET, PUT, DELETE",
        ["images", _, "actions", "deactivate" | "reactivate"] => "POST",
        _ => return Err(err(404, "The resource could not be found.")),
    };
    if !allow.split(", ").any(|m| m == method.as_str()) {
        let message = format!("The method {method} is not allowed for this resource. <br /><br />\n");
        let header = Some((header::ALLOW, allow));
        return Err(GlanceError { header, ..GlanceError::with(405, message) });
    }
    // Glance's `body_reject` routes: every GET and DELETE but the list, and the actions.
    let reads = matches!(*method, Method::GET | Method::DELETE) && path != ["images"];
    if (reads || matches!(path, [_, _, "actions", _])) && !rq.body.is_empty() {
        return Err(err(400, "A body is not expected with this request."));
    }
    match (method.as_str(), path) {
        ("GET", ["schemas", _]) => Ok(Json(IMAGE_SCHEMA.clone()).into_response()),
        ("GET", ["images"]) => list(store, rq),
        ("POST", ["images"]) => create(store, rq),
        ("GET", ["images", id]) => {
            let images = store.lock();
            let image = images.get(*id).filter(|i| rq.ctx.may_see(i));
            Ok(Json(image.ok_or_else(|| not_found(id))?.view()).into_response())
        }
        ("PATCH", ["images", id]) => patch(store, rq, id),
        ("DELETE", ["images", id]) => delete(store, rq, id),
        ("GET", ["images", id, "file"]) => download(store, rq, id),
        ("PUT", ["images", id, "file"]) => upload(store, rq, id),
        ("POST", ["images", id, "import"]) => import(store, rq, id),
        (_, ["images", id, "members", ..]) => members(store, method, rq, id, path.get(3).copied()),
        ("POST", ["images", id, "actions", action]) => set_active(store, rq, id, *action == "reactivate"),
        _ => Err(err(404, "The resource could not be found.")),
    }
}

/// Glance's versions document: 200 for `/versions`, 300 Multiple Choices otherwise.
fn versions(host_url: &str, status: StatusCode) -> Response {
    let ids = ["2.15", "2.9", "2.17", "2.7", "2.6", "2.5", "2.4", "2.3", "2.2", "2.1", "2.0"];
    let href = format!("{host_url}/v2/");
    let version = |id: &&str| {
        let state = if *id == "2.17" { "CURRENT" } else { "SUPPORTED" };
        json!({"id": format!("v{id}"), "status": state, "links": [{"rel": "self", "href": href}]})
    };
    let list: Vec<Value> = ids.iter().map(version).collect();
    (status, Json(json!({ "versions": list }))).into_response()
}

/// The store's base properties, for callers with no Glance to ask (benchmarks, fuzzing).
pub fn base_properties() -> PropertyNames {
    super::base_properties(&IMAGE_SCHEMA).unwrap_or_default()
}

/// Decided by the same rule as a real Glance's properties, so the store and the client agree.
fn is_base(key: &str) -> bool {
    static BASE: LazyLock<PropertyNames> = LazyLock::new(base_properties);
    BASE.contains(key)
}

/// Checks `{key: value}` against the image schema, worded like Python's jsonschema.
fn check_schema(key: &str, value: &Value) -> Result<()> {
    let schema = &*IMAGE_SCHEMA;
    let property = schema["properties"].get(key).unwrap_or(&schema["additionalProperties"]);
    schema_error(property, value).map_or(Ok(()), |why| Err(schema_mismatch(why)))
}

fn schema_mismatch(why: impl Display) -> GlanceError {
    err(400, format!("Provided object does not match schema 'image': {why}"))
}

/// The JSON Schema keywords the image schema uses; its only `pattern` is the UUID one.
fn schema_error(schema: &Value, v: &Value) -> Option<String> {
    let types: Vec<&str> = match &schema["type"] {
        Value::Array(types) => types.iter().filter_map(Value::as_str).collect(),
        t => t.as_str().into_iter().collect(),
    };
    let has_type = |t: &&str| match *t {
        "string" => v.is_string(),
        "null" => v.is_null(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        _ => v.is_object(),
    };
    let (repr, text) = (py_repr(v), v.as_str().unwrap_or_default());
    if !types.is_empty() && !types.iter().any(has_type) {
        let names: Vec<String> = types.iter().map(|t| format!("'{t}'")).collect();
        return Some(format!("{repr} is not of type {}", names.join(", ")));
    }
    if schema["enum"].as_array().is_some_and(|allowed| !allowed.contains(v)) {
        return Some(format!("{repr} is not one of {}", py_repr(&schema["enum"])));
    }
    if schema["maxLength"].as_u64().is_some_and(|max| text.chars().count() as u64 > max) {
        return Some(format!("{repr} is too long"));
    }
    if let Some(pattern) = schema["pattern"].as_str().filter(|_| v.is_string() && !crate::glance::is_image_id(text)) {
        return Some(format!("{repr} does not match '{pattern}'"));
    }
    let mut items = v.as_array().into_iter().flatten();
    items.find_map(|item| schema_error(&schema["items"], item))
}

/// Python's `repr`, which Glance's messages embed.
fn py_repr(v: &Value) -> String {
    let join = |parts: Vec<String>| parts.join(", ");
    match v {
        Value::Null => "None".into(),
        Value::Bool(b) => (if *b { "True" } else { "False" }).into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Value::Array(a) => format!("[{}]", join(a.iter().map(py_repr).collect())),
        Value::Object(o) => {
            let parts = o.iter().map(|(k, v)| format!("'{k}': {}", py_repr(v))).collect();
            format!("{{{}}}", join(parts))
        }
    }
}

fn isotime(t: OffsetDateTime) -> String {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.to_offset(UtcOffset::UTC).format(format).unwrap_or_default()
}

/// oslo's `parse_isotime`: an offset or `Z`, else UTC; a bare date means midnight.
fn parse_iso(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    let s = &match s.as_bytes().get(10) {
        Some(b' ') => format!("{}T{}", &s[..10], &s[11..]),
        _ => s.to_owned(),
    };
    let iso = &Iso8601::DEFAULT;
    let naive = || PrimitiveDateTime::parse(s, iso).ok().map(PrimitiveDateTime::assume_utc);
    let date = || Date::parse(s, iso).ok().map(|d| d.midnight().assume_utc());
    OffsetDateTime::parse(s, iso).ok().or_else(naive).or_else(date)
}

fn find_mut<'a>(images: &'a mut HashMap<String, Image>, ctx: &Ctx, id: &str) -> Result<&'a mut Image> {
    images.get_mut(id).filter(|i| ctx.may_see(i)).ok_or_else(|| not_found(id))
}

fn create(store: &Store, rq: &Req) -> Result<Response> {
    let ctx = &rq.ctx;
    let mut body = match rq.json_body()? {
        Value::Object(body) => body,
        other => return Err(schema_mismatch(format!("{} is not of type 'object'", py_repr(&other)))),
    };
    let present = |list: &str| body.keys().find(|k| listed(list, k) && *k != "id").cloned();
    if let Some(key) = present(DISALLOWED) {
        return Err(err(403, format!("Attribute '{key}' is read-only.")));
    }
    for (key, value) in body.iter().filter(|(k, _)| *k == "id" || !listed(READ_ONLY, k)) {
        check_schema(key, value)?;
    }
    for key in body.keys().filter(|k| !is_base(k)) {
        if key.chars().count() > 255 {
            return Err(err(400, "Custom property should not be greater than 255 characters."));
        }
        if listed(RESERVED, key) || key.starts_with("os_glance") {
            return Err(err_detail(403, format!("Attribute '{key}' is reserved.")));
        }
    }
    let owner = match body.get("owner") {
        Some(v) => v.as_str().map(str::to_owned),
        None => ctx.project.clone(),
    };
    if !ctx.admin && owner != ctx.project {
        let shown = owner.as_deref().unwrap_or("None");
        return Err(err(403, format!("You are not permitted to create images owned by '{shown}'.")));
    }
    if body.get("visibility").is_some_and(|v| v == "public") && !ctx.admin {
        return Err(err(403, "You are not authorized to complete publicize_image action."));
    }
    if let Some(key) = present(READ_ONLY) {
        return Err(err(403, format!("Attribute '{key}' is read-only.")));
    }
    if body.contains_key("locations") {
        return Err(err(403, "Attribute 'locations' is reserved."));
    }
    let id = match body.remove("id") {
        Some(Value::String(id)) => id,
        _ => uuid::Uuid::new_v4().to_string(),
    };
    let now = OffsetDateTime::now_utc();
    let mut image = Image {
        id,
        name: None,
        disk_format: None,
        container_format: None,
        visibility: "shared".into(),
        status: "queued",
        protected: false,
        min_ram: 0,
        min_disk: 0,
        owner,
        os_hidden: false,
        created_at: now,
        updated_at: now,
        tags: Vec::new(),
        props: Map::new(),
        data: None,
        members: Vec::new(),
    };
    for (key, value) in body {
        image.set(&key, value)?;
    }
    quota("properties", image.props.len())?;
    let mut images = store.lock();
    if images.contains_key(&image.id) {
        return Err(err(409, format!("Image ID {} already exists!", image.id)));
    }
    let (view, location) = (image.view(), format!("{}/v2/images/{}", rq.host_url(), image.id));
    images.insert(image.id.clone(), image);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(view)).into_response())
}

type Pred = Box<dyn Fn(&Image) -> bool>;

fn list(store: &Store, rq: &Req) -> Result<Response> {
    let pairs: Vec<(String, String)> = Query::try_from_uri(&rq.uri).map_err(|_| err(400, "Malformed query string."))?.0;
    // Glance pops control keys (first value) and reads filters from a dict (last value).
    let first = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let mut filters: BTreeMap<&str, &str> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    filters.retain(|k, _| !listed(CONTROL_KEYS, k));
    let visibility = filters.remove("visibility").filter(|v| !v.is_empty());
    if let Some(v) = visibility.filter(|v| !listed("community public private shared all", v)) {
        return Err(err(400, format!("Invalid visibility value: {v}")));
    }
    if filters.remove("changes-since").is_some_and(|v| !v.is_empty()) {
        return Err(err(400, "The \"changes-since\" filter is no longer available on v2."));
    }
    if let Some(s) = first("member_status").filter(|s| !listed("pending accepted rejected all", s)) {
        return Err(err(400, format!("Invalid status: {s}")));
    }
    let limit = match first("limit").map(|s| s.trim().parse::<i64>()) {
        None => 25,
        Some(Ok(n)) if n < 0 => return Err(err(400, "limit param must be positive")),
        Some(Ok(n)) => usize::try_from(n.min(1000)).unwrap_or(1000),
        Some(Err(_)) => return Err(err(400, "limit param must be an integer")),
    };
    let sort = sort_spec(&pairs)?;
    let mut preds: Vec<Pred> = Vec::new();
    for (key, default) in [("os_hidden", Some("false")), ("protected", None)] {
        let Some(raw) = filters.remove(key).or(default) else { continue };
        // Glance lowercases `os_hidden` but takes `protected` as given.
        let value = if key == "os_hidden" { raw.to_lowercase() } else { raw.to_owned() };
        if value != "true" && value != "false" {
            return Err(err(
                400,
                format!("Invalid value '{value}' for '{key}' filter. Valid values are 'true' or 'false'."),
            ));
        }
        let (wanted, hidden) = (value == "true", key == "os_hidden");
        preds.push(Box::new(move |i| (if hidden { i.os_hidden } else { i.protected }) == wanted));
    }
    filters.remove("deleted"); // Glance forces deleted=false.
    for (key, value) in filters {
        preds.push(compile_filter(key, value)?);
    }
    for (_, tag) in pairs.iter().filter(|(k, _)| k == "tag") {
        let tag = tag.trim().to_owned();
        preds.push(Box::new(move |i| i.tags.contains(&tag)));
    }

    let ctx = &rq.ctx;
    // Others' shared images are listed by the caller's member status (`accepted` unless asked).
    let member_status = first("member_status").unwrap_or("accepted");
    let listed_member = |i: &Image| {
        i.visibility != "shared"
            || ctx.admin
            || ctx.owns(i)
            || ctx.member_of(i).is_some_and(|m| member_status == "all" || m.status == member_status)
    };
    // Without a visibility filter, community images are listed only for their owner.
    let in_scope = |i: &Image| {
        listed_member(i)
            && match visibility {
                Some("all") => true,
                Some(v) => i.visibility == v,
                None => i.visibility != "community" || ctx.owns(i),
            }
    };
    let order = |a: &Image, b: &Image| {
        let mut by_key = sort.iter().map(|(k, asc)| (a.cmp_on(b, k), asc));
        let first_difference = by_key.find(|(o, _)| o.is_ne());
        first_difference.map_or(Ordering::Equal, |(o, asc)| if *asc { o } else { o.reverse() })
    };
    let images = store.lock();
    let visible = |i: &&Image| ctx.may_see(i) && in_scope(i) && preds.iter().all(|p| p(i));
    let mut hits: Vec<&Image> = images.values().filter(visible).collect();
    hits.sort_by(|a, b| order(a, b));
    if let Some(m) = first("marker") {
        let marker = images.get(m).filter(|i| ctx.may_see(i));
        let marker = marker.ok_or_else(|| err(400, format!("No image found with ID {m}")))?;
        hits.retain(|i| order(i, marker) == Ordering::Greater);
    }
    hits.truncate(limit);

    let mut kept: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    kept.retain(|(k, _)| *k != "marker");
    let link = |params: &[(&str, &str)]| {
        let encoded: Vec<String> = params.iter().map(|(k, v)| format!("{}={}", quote_plus(k), quote_plus(v))).collect();
        let query = encoded.join("&");
        if query.is_empty() {
            "/v2/images".to_owned()
        } else {
            format!("/v2/images?{query}")
        }
    };
    let views: Vec<Value> = hits.iter().map(|i| i.view()).collect();
    let mut body = json!({"images": views, "first": link(&kept), "schema": "/v2/schemas/images"});
    // Like Glance, `next` appears whenever the page is full, even if nothing follows.
    if let Some(last) = hits.last().filter(|_| hits.len() == limit) {
        kept.push(("marker", &last.id));
        body["next"] = json!(link(&kept));
    }
    Ok(Json(body).into_response())
}

/// `(key, ascending)` pairs from `sort_key`/`sort_dir` or `sort=k:dir`, plus the
/// `created_at`/`id` tie-breakers Glance's DB layer appends.
fn sort_spec(pairs: &[(String, String)]) -> Result<Vec<(String, bool)>> {
    let all = |key: &'static str| pairs.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.trim());
    let key_ok = |k: &str| match listed(SORT_KEYS, k) {
        true => Ok(k.to_owned()),
        false => Err(err(
            400,
            format!("Invalid sort key: {k}. It must be one of the following: {}.", SORT_KEYS.replace(' ', ", ")),
        )),
    };
    let dir_ok = |d: &str| match d {
        "asc" | "desc" => Ok(d == "asc"),
        _ => Err(err(400, format!("Invalid sort direction: {d}"))),
    };
    let (mut keys, mut dirs) = (Vec::new(), Vec::new());
    if let Some(sort) = all("sort").next() {
        if all("sort_key").chain(all("sort_dir")).next().is_some() {
            return Err(err(400, "Old and new sorting syntax cannot be combined"));
        }
        for part in sort.split(',') {
            let (k, d) = part.split_once(':').unwrap_or((part, ""));
            keys.push(key_ok(k.trim())?);
            dirs.push(dir_ok(if d.is_empty() { "desc" } else { d.trim() })?);
        }
    } else {
        keys = all("sort_key").map(key_ok).collect::<Result<_>>()?;
        dirs = all("sort_dir").map(dir_ok).collect::<Result<_>>()?;
        if dirs.len() > 1 && dirs.len() != keys.len() {
            return Err(err(400, "Number of sort dirs does not match the number of sort keys"));
        }
    }
    if keys.is_empty() {
        keys.push("created_at".to_owned());
    }
    let default_asc = dirs.len() == 1 && dirs[0];
    dirs.resize(keys.len(), default_asc);
    for tie_breaker in ["created_at", "id"] {
        if !keys.iter().any(|k| k == tie_breaker) {
            keys.push(tie_breaker.to_owned());
            dirs.push(default_asc);
        }
    }
    Ok(keys.into_iter().zip(dirs).collect())
}

/// One list filter, after Glance's `_make_conditions_from_filters`.
fn compile_filter(key: &str, value: &str) -> Result<Pred> {
    let column = key.to_owned();
    let range = match key.rsplit_once('_') {
        Some((c, bound @ ("min" | "max"))) if listed(NUMERIC, c) => Some((c, bound)),
        _ => None,
    };
    if let Some((c, bound)) = range {
        let (c, at_least) = (c.to_owned(), bound == "min");
        let n: i64 =
            value.trim().parse().map_err(|_| err(400, "Unable to filter on a range with a non-numeric value."))?;
        let fits = move |x: i64| if at_least { x >= n } else { x <= n };
        return Ok(Box::new(move |i| i.int_column(&c).flatten().is_some_and(fits)));
    }
    let (op, operand) = split_op(value);
    match key {
        "created_at" | "updated_at" => {
            let at = parse_iso(operand).ok_or_else(|| {
                err(400, format!("Bad \"{key}\" query filter format. Use ISO 8601 DateTime notation."))
            })?;
            let test: fn(Ordering) -> bool = match op {
                "gt" => Ordering::is_gt,
                "gte" => Ordering::is_ge,
                "eq" => Ordering::is_eq,
                "neq" => Ordering::is_ne,
                "lt" => Ordering::is_lt,
                "lte" => Ordering::is_le,
                _ => return Err(err(400, "Unable to filter on a unknown operator.")),
            };
            let updated = key == "updated_at";
            Ok(Box::new(move |i| test(if updated { i.updated_at } else { i.created_at }.cmp(&at))))
        }
        "name" | "id" | "status" | "container_format" | "disk_format" => {
            let wanted = match op {
                "in" => split_in(operand),
                "eq" => vec![operand.to_owned()],
                _ => return Err(err(400, format!("Unable to filter by unknown operator '{op}'."))),
            };
            let matches = move |v: &str| wanted.iter().any(|w| w == v);
            Ok(Box::new(move |i| i.text_column(&column).flatten().is_some_and(&matches)))
        }
        _ => {
            let value = value.to_owned();
            Ok(Box::new(move |i| match (i.text_column(&column), i.int_column(&column)) {
                (Some(text), _) => text == Some(value.as_str()),
                (_, Some(int)) => value.trim().parse::<i64>().is_ok_and(|v| int == Some(v)),
                _ => i.props.get(&column).and_then(Value::as_str) == Some(value.as_str()),
            }))
        }
    }
}

/// `op:value`, or `eq` when there is no operator or the whole value is an ISO time.
fn split_op(expr: &str) -> (&str, &str) {
    match expr.split_once(':') {
        Some((op, rest)) if parse_iso(expr).is_none() => (op, rest),
        _ => ("eq", expr),
    }
}

/// The `in:` list: comma-separated, with double quotes around values containing commas
/// (Glance's checks of misplaced quotes are not reproduced).
fn split_in(value: &str) -> Vec<String> {
    let bytes = value.as_bytes();
    let unescaped_quote = |i: usize| bytes[i] == b'"' && (i == 0 || bytes[i - 1] != b'\\');
    let (mut items, mut rest) = (Vec::new(), value);
    while !rest.is_empty() {
        let (item, tail) = match rest.strip_prefix('"') {
            Some(quoted) => {
                let offset = value.len() - quoted.len();
                let end = (offset..bytes.len()).find(|&i| unescaped_quote(i)).unwrap_or(bytes.len());
                let tail = value.get(end + 1..).unwrap_or_default();
                (&value[offset..end], tail.strip_prefix(',').unwrap_or(tail))
            }
            None => rest.split_once(',').unwrap_or((rest, "")),
        };
        items.push(item.to_owned());
        rest = tail;
    }
    items
}

/// Python's `urlencode` quoting, which Glance uses for `first` and `next`.
fn quote_plus(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => drop(write!(out, "%{b:02X}")),
        }
    }
    out
}

#[derive(PartialEq)]
enum Op {
    Add,
    Remove,
    Replace,
}

struct Change {
    op: Op,
    key: String,
    value: Value,
}

/// Parses and validates a v2.1 JSON-patch body, as Glance's deserializer does before it
/// looks the image up.
fn parse_changes(rq: &Req) -> Result<Vec<Change>> {
    if !rq.mime().eq_ignore_ascii_case(PATCH_TYPE) {
        let message = format!(
            "The request media type {} is not supported by this server.<br /><br />\n\
             Image PATCH expects Content-Type one of: {PATCH_TYPE}",
            rq.header(header::CONTENT_TYPE).unwrap_or_default()
        );
        let header = Some((HeaderName::from_static("accept-patch"), PATCH_TYPE));
        return Err(GlanceError { header, ..GlanceError::with(415, message) });
    }
    let Value::Array(changes) = rq.json_body()? else {
        return Err(err(400, "Request body must be a JSON array of operation objects."));
    };
    changes.into_iter().map(parse_change).collect()
}

fn parse_change(raw: Value) -> Result<Change> {
    let Value::Object(mut raw) = raw else {
        return Err(err(400, "Operations must be JSON objects."));
    };
    let ops = "It must be one of the following: add, remove, replace.";
    let op = match raw.get("op").map(|op| (op, op.as_str())) {
        None => return Err(err(400, format!("Unable to find `op` in JSON Schema change. {ops}"))),
        Some((_, Some("add"))) => Op::Add,
        Some((_, Some("remove"))) => Op::Remove,
        Some((_, Some("replace"))) => Op::Replace,
        Some((op, text)) => {
            let shown = text.map_or_else(|| py_repr(op), str::to_owned);
            return Err(err(400, format!("Invalid operation: `{shown}`. {ops}")));
        }
    };
    let Some(pointer) = raw.get("path").map(|p| p.as_str().map_or_else(|| py_repr(p), str::to_owned)) else {
        return Err(err(400, "Unable to find 'path' in JSON Schema change"));
    };
    let path = decode_pointer(&pointer)?;
    let key = path.first().cloned().unwrap_or_default();
    let depth = if key == "locations" && op != Op::Replace { 2 } else { 1 };
    if path.len() != depth {
        return Err(err(400, format!("Invalid JSON pointer for this resource: '/{}'", path.join("/"))));
    }
    if listed(READ_ONLY, &key) {
        return Err(err(403, format!("Attribute '{key}' is read-only.")));
    }
    if listed(RESERVED, &key) || key.starts_with("os_glance") {
        return Err(err(403, format!("Attribute '{key}' is reserved.")));
    }
    let value = match op {
        Op::Remove => Value::Null,
        _ => {
            let name = if op == Op::Add { "add" } else { "replace" };
            let missing = format!("Operation \"{name}\" requires a member named \"value\".");
            raw.remove("value").ok_or_else(|| err(400, missing))?
        }
    };
    if op != Op::Remove && key != "locations" {
        check_schema(&key, &value)?;
    }
    Ok(Change { op, key, value })
}

/// Glance's JSON pointer, `/name` with `~0`/`~1` escapes; the depth is checked by the caller.
fn decode_pointer(pointer: &str) -> Result<Vec<String>> {
    let Some(tail) = pointer.strip_prefix('/') else {
        return Err(err(400, format!("Pointer `{pointer}` does not start with \"/\".")));
    };
    Ok(tail.split('/').map(|p| p.replace("~1", "/").replace("~0", "~").trim().to_owned()).collect())
}

fn patch(store: &Store, rq: &Req, id: &str) -> Result<Response> {
    let changes = parse_changes(rq)?;
    let mut images = store.lock();
    let stored = find_mut(&mut images, &rq.ctx, id)?;
    // Glance applies the changes in memory and saves once: a failure changes nothing.
    let mut image = stored.clone();
    for change in &changes {
        apply(&mut image, &rq.ctx, change)?;
    }
    if !changes.is_empty() {
        if image.props.keys().any(|k| !stored.props.contains_key(k)) {
            quota("properties", image.props.len())?;
        }
        image.updated_at = OffsetDateTime::now_utc();
        *stored = image.clone();
    }
    Ok(Json(image.view()).into_response())
}

/// Glance's `_do_add`/`_do_replace`/`_do_remove` for one change (`add` is an upsert).
fn apply(image: &mut Image, ctx: &Ctx, change: &Change) -> Result<()> {
    let key = change.key.as_str();
    if key == "locations" {
        return Err(err(403, "You are not authorized to complete set_image_location action."));
    }
    if key == "owner" && change.op != Op::Remove && !ctx.admin {
        return Err(err_detail(403, "Owner can't be updated by non admin."));
    }
    if key == "visibility" && change.value == "public" && !ctx.admin {
        return Err(err(403, "You are not authorized to complete publicize_image action."));
    }
    if !ctx.may_modify(image) {
        return Err(err(403, "You are not authorized to complete modify_image action."));
    }
    let missing = || err_detail(409, format!("Property {key} does not exist."));
    match change.op {
        Op::Remove if is_base(key) => Err(err_detail(403, format!("Property {key} may not be removed."))),
        Op::Remove => image.props.shift_remove(key).map(drop).ok_or_else(missing),
        Op::Replace if !is_base(key) && !image.props.contains_key(key) => Err(missing()),
        _ => image.set(key, change.value.clone()),
    }
}

fn delete(store: &Store, rq: &Req, id: &str) -> Result<Response> {
    let mut images = store.lock();
    let missing = |_| err(404, format!("Failed to find image {id} to delete"));
    let image = find_mut(&mut images, &rq.ctx, id).map_err(missing)?;
    if !rq.ctx.may_modify(image) {
        return Err(err(403, "You are not authorized to complete delete_image action."));
    }
    if image.protected {
        return Err(err(403, format!("Image {id} is protected and cannot be deleted.")));
    }
    // The record stays so that its id stays taken, as in Glance's database; what it held goes.
    image.status = "deleted";
    image.data = None;
    image.props = Map::new();
    image.tags = Vec::new();
    image.name = None;
    image.members = Vec::new();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `/v2/images/{id}/members[/{member}]`: Glance's image members API.
fn members(store: &Store, method: &Method, rq: &Req, id: &str, member: Option<&str>) -> Result<Response> {
    let ctx = &rq.ctx;
    let mut images = store.lock();
    let image = find_mut(&mut images, ctx, id)?;
    if image.visibility != "shared" {
        return Err(err(403, "Only shared images have members."));
    }
    let manages = ctx.may_modify(image);
    let missing = |m: &str| err(404, format!("The specified member {m} could not be found"));
    let now = OffsetDateTime::now_utc();
    match (method.as_str(), member) {
        ("GET", None) => {
            let own = ctx.project.as_deref();
            let shown = image.members.iter().filter(|m| manages || Some(m.project.as_str()) == own);
            let list: Vec<Value> = shown.map(|m| m.view(id)).collect();
            Ok(Json(json!({"members": list, "schema": "/v2/schemas/members"})).into_response())
        }
        ("POST", None) => {
            let body = rq.json_body()?;
            let Some(project) = body.get("member").and_then(Value::as_str).filter(|m| !m.is_empty()) else {
                return Err(err(400, "Member to be added not specified"));
            };
            if !manages {
                return Err(err(403, "You are not permitted to create image members for the image."));
            }
            if image.members.iter().any(|m| m.project == project) {
                return Err(err(409, format!("Member {project} is duplicated for image {id}")));
            }
            let member =
                Member { project: project.to_owned(), status: "pending".into(), created_at: now, updated_at: now };
            let view = member.view(id);
            image.members.push(member);
            Ok(Json(view).into_response())
        }
        (_, Some(project)) => {
            let own = ctx.project.as_deref() == Some(project);
            let at = image.members.iter().position(|m| m.project == project).filter(|_| manages || own);
            let at = at.ok_or_else(|| missing(project))?;
            match method.as_str() {
                "GET" => Ok(Json(image.members[at].view(id)).into_response()),
                "PUT" => {
                    if !own {
                        return Err(err(403, "You are not permitted to modify 'status' on this image member."));
                    }
                    let body = rq.json_body()?;
                    let status = body.get("status").and_then(Value::as_str).unwrap_or_default();
                    if !listed("pending accepted rejected", status) {
                        return Err(err(400, format!("Invalid status: {status}")));
                    }
                    let member = &mut image.members[at];
                    member.status = status.to_owned();
                    member.updated_at = now;
                    Ok(Json(member.view(id)).into_response())
                }
                _ if !manages => Err(err(403, "You are not permitted to delete image members for the image.")),
                _ => {
                    image.members.remove(at);
                    Ok(StatusCode::NO_CONTENT.into_response())
                }
            }
        }
        _ => Err(err(404, "The resource could not be found.")),
    }
}

fn upload(store: &Store, rq: &Req, id: &str) -> Result<Response> {
    if rq.mime() != "application/octet-stream" {
        let raw = rq.header(header::CONTENT_TYPE);
        let message = format!(
            "The request media type {} is not supported by this server.<br /><br />\n\
             Invalid content type {}",
            raw.unwrap_or_default(),
            raw.map_or("None", |_| rq.mime())
        );
        return Err(GlanceError::with(415, message));
    }
    let mut images = store.lock();
    let image = find_mut(&mut images, &rq.ctx, id)?;
    if !rq.ctx.may_modify(image) {
        return Err(err(403, "You are not authorized to complete upload_image action."));
    }
    if image.status != "queued" {
        return Err(err(409, format!("Image status transition from {} to saving is not allowed", image.status)));
    }
    let formats = [("disk_format", &image.disk_format), ("container_format", &image.container_format)];
    let missing: Vec<&str> = formats.iter().filter(|(_, v)| v.is_none()).map(|(k, _)| *k).collect();
    if !missing.is_empty() {
        let noun = if missing.len() == 1 { "Property" } else { "Properties" };
        return Err(err(400, format!("{noun} {} must be set prior to saving data.", missing.join(", "))));
    }
    image.data = Some(rq.body.clone());
    image.status = "active";
    image.updated_at = OffsetDateTime::now_utc();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST .../import` with `web-download`: 202 at once, then the image goes `importing` →
/// `active` (or back to `queued` when the download fails), as in Glance.
fn import(store: &Store, rq: &Req, id: &str) -> Result<Response> {
    let body: Value = serde_json::from_slice(&rq.body).map_err(|_| err(400, "Malformed JSON in request body."))?;
    let method = &body["method"];
    if method["name"] != "web-download" {
        return Err(err(400, format!("Import method {} is not available.", method["name"])));
    }
    // Like the test Glance's import filtering: http(s) from loopback only, so the store can
    // never be made to fetch from the network on a client's behalf.
    let loopback = |u: &url::Url| matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    let uri = method["uri"].as_str().and_then(|u| url::Url::parse(u).ok());
    let uri = uri.filter(|u| matches!(u.scheme(), "http" | "https") && loopback(u));
    let uri = uri.ok_or_else(|| err(400, "URI for web-download does not pass filtering"))?;
    {
        let mut images = store.lock();
        let image = find_mut(&mut images, &rq.ctx, id)?;
        if !rq.ctx.may_modify(image) {
            return Err(err(403, "You are not authorized to complete import_image action."));
        }
        if image.status != "queued" {
            return Err(err(409, format!("Image status transition from {} to importing is not allowed", image.status)));
        }
        image.status = "importing";
    }
    let (store, id) = (store.clone(), id.to_owned());
    tokio::spawn(async move {
        let fetched = web_download(uri).await;
        if let Err(e) = &fetched {
            tracing::warn!(image = %id, error = %e, "in-memory store: web-download failed; the image is queued again");
        }
        let mut images = store.lock();
        if let Some(image) = images.get_mut(&id).filter(|i| i.status == "importing") {
            match fetched {
                Ok(data) => {
                    image.data = Some(data);
                    image.status = "active";
                }
                Err(_) => image.status = "queued",
            }
            image.updated_at = OffsetDateTime::now_utc();
        }
    });
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Largest image a web-download brings into the in-memory store.
const MAX_DOWNLOAD: usize = 512 << 20;

/// Fetches a web-download's data: within a deadline, without a proxy, at most [`MAX_DOWNLOAD`].
async fn web_download(uri: url::Url) -> std::result::Result<bytes::Bytes, String> {
    // The store may run without any other HTTP client having set up TLS.
    crate::install_crypto_provider();
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(std::time::Duration::from_secs(10))
        .read_timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    // Said without the URL, which may hold credentials or a signed query.
    let unusable = |e: reqwest::Error| e.without_url().to_string();
    let mut response = client.get(uri).send().await.and_then(|r| r.error_for_status()).map_err(unusable)?;
    let mut data = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unusable)? {
        if data.len() + chunk.len() > MAX_DOWNLOAD {
            return Err(format!("larger than {MAX_DOWNLOAD} bytes"));
        }
        data.extend_from_slice(&chunk);
    }
    Ok(data.into())
}

fn download(store: &Store, rq: &Req, id: &str) -> Result<Response> {
    let images = store.lock();
    let image = images.get(id).filter(|i| rq.ctx.may_see(i)).ok_or_else(|| not_found(id))?;
    if image.status == "deactivated" && !rq.ctx.admin {
        let msg = "The requested image has been deactivated. Image data download is forbidden.";
        return Err(err(403, msg));
    }
    match image.data.clone() {
        None => Ok(StatusCode::NO_CONTENT.into_response()),
        Some(data) => {
            let content_type = [(header::CONTENT_TYPE, "application/octet-stream")];
            Ok((content_type, Body::from(data)).into_response())
        }
    }
}

/// `POST .../actions/deactivate|reactivate`: admin only, and a no-op when already there.
fn set_active(store: &Store, rq: &Req, id: &str, reactivate: bool) -> Result<Response> {
    let (action, from, to) = match reactivate {
        true => ("reactivate", "deactivated", "active"),
        false => ("deactivate", "active", "deactivated"),
    };
    let mut images = store.lock();
    let image = find_mut(&mut images, &rq.ctx, id)?;
    if !rq.ctx.admin {
        return Err(err(403, format!("You are not authorized to complete {action} action.")));
    }
    if image.status == from {
        image.status = to;
        image.updated_at = OffsetDateTime::now_utc();
    } else if image.status != to {
        return Err(err(403, format!("Not allowed to {action} image in status '{}'", image.status)));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    type Headers<'a> = &'a [(&'a str, &'a str)];
    const P1: Headers = &[("x-project-id", "p1"), ("x-roles", "member,reader")];
    const P2: Headers = &[("x-tenant-id", "p2"), ("x-roles", "member")];
    const ADMIN: Headers = &[("x-project-id", "adm"), ("x-roles", "reader, Admin")];

    struct Reply {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    }

    impl Reply {
        fn header(&self, name: &str) -> &str {
            self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
        }

        fn json(&self) -> Value {
            serde_json::from_slice(&self.body).unwrap_or(Value::Null)
        }

        /// The specific part of a Glance error message, as the gateway extracts it.
        fn message(&self) -> String {
            let json = self.json();
            let parts = json["message"].as_str().unwrap_or_default().split("<br />");
            parts.map(str::trim).filter(|p| !p.is_empty()).last().unwrap_or_default().into()
        }
    }

    async fn send(app: &Router, method: &str, uri: &str, headers: Headers<'_>, body: &str) -> Reply {
        let mut req = Request::builder().method(method).uri(uri).header("accept", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = app.clone().oneshot(req.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
        let (parts, body) = resp.into_parts();
        Reply { status: parts.status, headers: parts.headers, body: body.collect().await.unwrap().to_bytes() }
    }

    async fn get(app: &Router, uri: &str, who: Headers<'_>) -> Reply {
        send(app, "GET", uri, who, "").await
    }

    async fn create(app: &Router, who: Headers<'_>, body: Value) -> String {
        let reply = send(app, "POST", "/v2/images", who, &body.to_string()).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.json());
        reply.json()["id"].as_str().unwrap().to_owned()
    }

    async fn patch(app: &Router, who: Headers<'_>, id: &str, ops: &str) -> Reply {
        let headers = [who, &[("content-type", PATCH_TYPE)]].concat();
        send(app, "PATCH", &format!("/v2/images/{id}"), &headers, ops).await
    }

    async fn upload(app: &Router, who: Headers<'_>, id: &str, data: &str) -> Reply {
        let headers = [who, &[("content-type", "application/octet-stream")]].concat();
        send(app, "PUT", &format!("/v2/images/{id}/file"), &headers, data).await
    }

    /// Sends each `STATUS BODY | MESSAGE` line of `table` (to image `target` for PATCH).
    async fn expect_errors(app: &Router, method: &str, target: &str, who: Headers<'_>, table: &str) {
        for line in table.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (status, rest) = line.split_once(' ').unwrap();
            let (body, message) = rest.split_once(" | ").unwrap();
            let reply = match method {
                "PATCH" => patch(app, who, target, body).await,
                _ => send(app, method, target, who, body).await,
            };
            assert_eq!((reply.status.as_str(), reply.message().as_str()), (status, message));
        }
    }

    /// Each `QUERY | MESSAGE` line of `table` must list with that 400 message.
    async fn expect_bad_queries(app: &Router, table: &str) {
        for (query, message) in table.lines().filter_map(|l| l.trim().split_once(" | ")) {
            let reply = get(app, &format!("/v2/images?{query}"), P1).await;
            assert_eq!((reply.status, reply.message()), (StatusCode::BAD_REQUEST, message.to_owned()));
        }
    }

    /// Names of the listed images, in response order.
    async fn names(app: &Router, query: &str, who: Headers<'_>) -> String {
        let list = get(app, &format!("/v2/images?{query}"), who).await.json();
        let images = list["images"].as_array().cloned().unwrap_or_default();
        images.iter().map(|i| i["name"].as_str().unwrap_or("-").to_owned()).collect::<Vec<_>>().join("|")
    }

    #[tokio::test]
    async fn versions_and_routing_errors() {
        let app = router(Store::with_identity(EmbeddedIdentity::Headers));
        let reply = send(&app, "GET", "/versions", &[("host", "g:9292")], "").await;
        let versions = reply.json()["versions"].as_array().cloned().unwrap();
        let current: Vec<&Value> = versions.iter().filter(|v| v["status"] == "CURRENT").collect();
        let links = json!([{"rel": "self", "href": "http://g:9292/v2/"}]);
        assert_eq!(
            (reply.status, current),
            (StatusCode::OK, vec![&json!({"id": "v2.17", "status": "CURRENT", "links": links})])
        );
        assert_eq!(get(&app, "/", P1).await.status, StatusCode::MULTIPLE_CHOICES);
        assert_eq!(get(&app, "/v1/images", P1).await.status, StatusCode::MULTIPLE_CHOICES);
        assert_eq!(get(&app, "/v2.1/images", P1).await.status, StatusCode::OK);
        let unknown = get(&app, "/v2/nothing", P1).await.json();
        let shape = json!({"message": "The resource could not be found.<br /><br />\n\n\n",
                           "code": "404 Not Found", "title": "Not Found"});
        assert_eq!(unknown, shape);
        let wrong = send(&app, "POST", "/v2/images/x", P1, "").await;
        assert_eq!((wrong.status, wrong.header("allow")), (StatusCode::METHOD_NOT_ALLOWED, "GET, PATCH, DELETE"));
        assert_eq!(wrong.json()["code"], "405 Method Not Allowed");
        expect_errors(&app, "GET", "/v2/images/x", P1, "400 x | A body is not expected with this request.").await;
    }

    #[tokio::test]
    async fn schema_marks_only_custom_properties_non_base() {
        let schema =
            get(&router(Store::with_identity(EmbeddedIdentity::Headers)), "/v2/schemas/image", P1).await.json();
        let props = schema["properties"].as_object().unwrap();
        let custom: Vec<&str> = props.iter().filter(|(_, p)| p["is_base"] == false).map(|(k, _)| k.as_str()).collect();
        let expected = "kernel_id ramdisk_id instance_uuid architecture os_distro os_version description \
                        cinder_encryption_key_id cinder_encryption_key_deletion_policy";
        assert_eq!((custom.join(" "), props.len()), (expected.to_owned(), 34));
        let base = base_properties();
        assert_eq!(base.len(), 34 - 9);
        assert!(base.contains("os_hash_value") && !custom.iter().any(|c| base.contains(*c)));
        assert_eq!(schema["additionalProperties"], json!({"type": "string"}));
    }

    #[tokio::test]
    async fn create_returns_a_glance_shaped_image() {
        let app = router(Store::with_identity(EmbeddedIdentity::Headers));
        let headers = [P1, &[("host", "g:9292"), ("x-openstack-request-id", "abc")]].concat();
        let body = json!({"name": "cirros", "os_distro": "cirros", "tags": ["a", "a", "b"]}).to_string();
        let reply = send(&app, "POST", "/v2/images", &headers, &body).await;
        let image = reply.json();
        let id = image["id"].as_str().unwrap();
        assert!(crate::glance::is_image_id(id));
        assert_eq!((reply.status, reply.header("x-openstack-request-id")), (StatusCode::CREATED, "req-abc"));
        assert_eq!(reply.header("location"), format!("http://g:9292/v2/images/{id}"));
        let keys: Vec<&str> = image.as_object().unwrap().keys().map(String::as_str).collect();
        let expected = "os_distro name disk_format container_format visibility size virtual_size status checksum \
                        protected min_ram min_disk owner os_hidden os_hash_algo os_hash_value id created_at \
                        updated_at tags self file schema";
        assert_eq!(keys.join(" "), expected);
        let summary = [&image["status"], &image["visibility"], &image["owner"], &image["size"], &image["tags"]];
        assert_eq!(summary, [&json!("queued"), &json!("shared"), &json!("p1"), &Value::Null, &json!(["a", "b"])]);
        let created = image["created_at"].as_str().unwrap();
        assert!(parse_iso(created).is_some() && created.len() == 20 && created.ends_with('Z'), "{created}");
        assert_eq!(get(&app, &format!("/v2/images/{id}"), P1).await.json(), image);
        let fresh = get(&app, "/v2/images", P1).await;
        assert!(
            fresh.header("x-openstack-request-id").starts_with("req-")
                && fresh.header("x-openstack-request-id") != "req-abc"
        );
        let id = create(&app, ADMIN, json!({"owner": "p2", "visibility": "public"})).await;
        let image = get(&app, &format!("/v2/images/{id}"), P1).await.json();
        assert_eq!((&image["owner"], &image["visibility"]), (&json!("p2"), &json!("public")));
    }

    #[tokio::test]
    async fn create_rejects_like_glance() {
        let app = router(Store::with_identity(EmbeddedIdentity::Headers));
        create(&app, P1, json!({"id": "3b7d3c5e-6a7b-4c1f-9e0a-1f2d3c4b5a69"})).await;
        expect_errors(&app, "POST", "/v2/images", P1, r#"
            409 {"id": "3b7d3c5e-6a7b-4c1f-9e0a-1f2d3c4b5a69"} | Image ID 3b7d3c5e-6a7b-4c1f-9e0a-1f2d3c4b5a69 already exists!
            403 {"visibility": "public"} | You are not authorized to complete publicize_image action.
            403 {"status": "active"} | Attribute 'status' is read-only.
            403 {"self": "x"} | Attribute 'self' is read-only.
            403 {"locations": []} | Attribute 'locations' is reserved.
            403 {"os_glance_x": "1"} | Attribute 'os_glance_x' is reserved.
            403 {"owner": "p2"} | You are not permitted to create images owned by 'p2'.
            400 {"foo": 5} | Provided object does not match schema 'image': 5 is not of type 'string'
            400 {"min_ram": "64"} | Provided object does not match schema 'image': '64' is not of type 'integer'
            400 {"min_disk": -1} | Invalid value '-1' for parameter 'min_disk': Cannot be a negative value
            400 {"disk_format": "x"} | Provided object does not match schema 'image': 'x' is not one of [None, 'ami', 'ari', 'aki', 'vhd', 'vhdx', 'vmdk', 'raw', 'qcow2', 'vdi', 'iso', 'ploop']
            400 {"tags": [1]} | Provided object does not match schema 'image': 1 is not of type 'string'
            400 {"id": "nope"} | Provided object does not match schema 'image': 'nope' does not match '^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$'
            400 ["x"] | Provided object does not match schema 'image': ['x'] is not of type 'object'
            400 {"a": | Malformed JSON in request body.
            400 "x" | Unexpected body type. Expected list/dict.
        "#).await;
        let long_key = json!({"k".repeat(256): "v"}).to_string();
        let long_key = send(&app, "POST", "/v2/images", P1, &long_key).await.message();
        assert_eq!(long_key, "Custom property should not be greater than 255 characters.");
        let props: Map<String, Value> = (0..=QUOTA).map(|i| (format!("k{i}"), json!("v"))).collect();
        let tags = json!({"tags": vec!["t"; QUOTA + 1]});
        for body in [json!(props), tags] {
            let too_many = send(&app, "POST", "/v2/images", P1, &body.to_string()).await;
            assert_eq!(
                (too_many.status, too_many.json()["title"].as_str()),
                (StatusCode::PAYLOAD_TOO_LARGE, Some("Request Entity Too Large"))
            );
        }
    }

    #[tokio::test]
    async fn visibility_rules_for_show_and_list() {
        let app = router(Store::with_identity(EmbeddedIdentity::Headers));
        create(&app, P1, json!({"name": "mine"})).await;
        let theirs = create(&app, P2, json!({"name": "theirs"})).await;
        let community = create(&app, P2, json!({"name": "community", "visibility": "community"})).await;
        create(&app, ADMIN, json!({"name": "public", "visibility": "public", "owner": "p2"})).await;
        let hidden = get(&app, &format!("/v2/images/{theirs}"), P1).await;
        assert_eq!(
            (hidden.status, hidden.message()),
            (StatusCode::NOT_FOUND, format!("No image found with ID {theirs}"))
        );
        for (uri, who) in [(&theirs, P2), (&theirs, ADMIN), (&community, P1)] {
            assert_eq!(get(&app, &format!("/v2/images/{uri}"), who).await.status, StatusCode::OK);
        }
        assert_eq!(get(&app, "/v2/images/not-a-uuid", P1).await.message(), "No image found with ID not-a-uuid");
        assert_eq!(names(&app, "sort=name:asc", P1).await, "mine|public");
        assert_eq!(names(&app, "sort=name:asc", P2).await, "community|public|theirs");
        assert_eq!(names(&app, "visibility=community", P1).await, "community");
        assert_eq!(names(&app, "visibility=all&sort=name:asc", ADMIN).await, "community|mine|public|theirs");
        assert_eq!(names(&app, "visibility=shared&sort=name:asc", ADMIN).await, "mine|theirs");
        expect_bad_queries(&app, "visibility=bogus | Invalid visibility value: bogus").await;
    }

    #[tokio::test]
    async fn list_filters() {
        let app = router(Store::with_identity(EmbeddedIdentity::Headers));
        let body = json!({"name": "glass, darkly", "tags": ["x", "y"], "os_distro": "ubuntu", "min_ram": 512,
                          "disk_format": "raw", "container_format": "bare"});
        let glass = create(&app, P1, body).await;
        create(&app, P1, json!({"name": "share me", "tags": ["x"], "protected": true})).await;
        create(&app, P1, json!({"name": "hidden", "os_hidden": true})).await;
        upload(&app, P1, &glass, "12345").await;
        let cases = [
            ("name=in:%22glass,%20darkly%22,share%20me", "glass, darkly|share me"),
            ("name=eq:share%20me", "share me"),
            ("status=in:active,saving", "glass, darkly"),
            ("tag=x&tag=y", "glass, darkly"),
            ("tag=x", "glass, darkly|share me"),
            ("protected=true", "share me"),
            ("os_hidden=TRUE", "hidden"),
            ("os_distro=ubuntu", "glass, darkly"),
            ("min_ram=512", "glass, darkly"),
            ("size_min=5&size_max=5", "glass, darkly"),
            ("size_min=6", ""),
            ("disk_format=raw&container_format=bare", "glass, darkly"),
            ("created_at=gte:2000-01-01T00:00:00Z", "glass, darkly|share me"),
            ("updated_at=lt:2000-01-01T00:00:00%2B02:00", ""),
            ("created_at=gt:2999-01-01", ""),
        ];
        for (query, expected) in cases {
            assert_eq!(names(&app, &format!("{query}&sort=name:asc"), P1).await, expected, "{query}");
        }
        expect_bad_queries(
            &app,
            r#"
            protected=TRUE | Invalid value 'TRUE' for 'protected' filter. Valid values are 'true' or 'false'.
            os_hidden=Maybe | Invalid value 'maybe' for 'os_hidden' filter. Valid values are 'true' or 'false'.
            updated_at=gt:yesterday | Bad "updated_at" query filter format. Use ISO 8601 DateTime notation.
            created_at=foo:2016-04-18T21:38:54Z | Unable to filter on a unknown operator.
            name=like:x | Unable to filter by unknown operator 'like'.
            changes-since=2016-04-18T21:38:54Z | The "changes-since" filter is no longer available on v2.
            size_min=big | Unable to filter on a range with a non-numeric value.
            member_status=x | Invalid status: x
        "#,
        )
        .await;
    }

    #[tokio::test]
    async fn list_paginates_with_next_and_marker() {
        let app = router(Store::with_identity(EmbeddedIdentity::Headers));
        for name in ["c", "a", "b"] {
            create(&app, P1, json!({ "name": name })).await;
        }
        let page = get(&app, "/v2/images?sort_key=name&sort_dir=asc&limit=2", P1).await.json();
        assert_eq!(
            (&page["first"], &page["schema"]),
            (&json!("/v2/images?sort_key=name&sort_dir=asc&limit=2"), &json!("/v2/schemas/images"))
        );
        let next = format!(
            "/v2/images?sort_key=name&sort_dir=asc&limit=2&marker={}",
            page["images"][1]["id"].as_str().unwrap()
        );
        assert_eq!((page["next"].as_str(), names(&app, &next[11..], P1).await), (Some(next.as_str()), "c".into()));
        assert_eq!(get(&app, &next, P1).await.json().get("next"), None);
        // A full last page still gets `next`, which leads to an empty page.
        let full = get(&app, "/v2/images?sort=name&limit=3", P1).await.json();
        assert_eq!(names(&app, &full["next"].as_str().unwrap()[11..], P1).await, "");
        assert_eq!(names(&app, "sort=name", P1).await, "c|b|a");
        let everything = get(&app, "/v2/images", P1).await.json();
        let created: Vec<&str> = (0..3).map(|i| everything["images"][i]["created_at"].as_str().unwrap()).collect();
        assert!(created.windows(2).all(|w| w[0] >= w[1]), "default sort is created_at desc");
        assert_eq!((everything["first"].as_str(), everything.get("next")), (Some("/v2/images"), None));
        let theirs = create(&app, P2, json!({})).await;
        expect_bad_queries(&app, &format!(r#"
            marker=bogus | No image found with ID bogus
            marker={theirs} | No image found with ID {theirs}
            limit=abc | limit param must be an integer
            limit=-1 | limit param must be positive
            sort_key=foo | Invalid sort key: foo. It must be one of the following: name, status, container_format, disk_format, size, id, created_at, updated_at.
            sort_dir=up | Invalid sort direction: up
            sort=name&sort_key=id | Old and new sorting syntax cannot be combined
            sort_key=name&sort_key=id&sort_key=size&sort_dir=asc&sort_dir=desc | Number of sort dirs does not match the number of sort keys
        "#)).await;
    }

    #[tokio::test]
    async fn patch_applies_v2_1_semantics() {
        let app = router(Store::with_identity(EmbeddedIdentity::Headers));
        let id = create(&app, P1, json!({"name": "old", "os_distro": "cirros"})).await;
        let as_json = [P1, &[("content-type", "application/json")]].concat();
        let wrong = send(&app, "PATCH", &format!("/v2/images/{id}"), &as_json, "[]").await;
        assert_eq!((wrong.status, wrong.header("accept-patch")), (StatusCode::UNSUPPORTED_MEDIA_TYPE, PATCH_TYPE));
        let ops = r#"[{"op": "replace", "path": "/name", "value": "new"},
            {"op": "add", "path": "/min_ram", "value": 128}, {"op": "add", "path": "/os_distro", "value": "ubuntu"},
            {"op": "add", "path": "/a~1b", "value": "slash"}, {"op": "remove", "path": "/os_distro"},
            {"op": "replace", "path": "/tags", "value": ["t"]}]"#;
        let with_charset =
            [P1, &[("content-type", "application/openstack-images-v2.1-json-patch; charset=UTF-8")]].concat();
        let reply = send(&app, "PATCH", &format!("/v2/images/{id}"), &with_charset, ops).await;
        let patched = reply.json();
        assert_eq!(reply.status, StatusCode::OK);
        let fields = [&patched["name"], &patched["min_ram"], &patched["tags"], &patched["a/b"]];
        assert_eq!(fields, [&json!("new"), &json!(128), &json!(["t"]), &json!("slash")]);
        assert_eq!(patched.get("os_distro"), None);
        expect_errors(&app, "PATCH", &id, P1, r#"
            400 {"op": "add"} | Request body must be a JSON array of operation objects.
            400 [{"op": "move", "path": "/name"}] | Invalid operation: `move`. It must be one of the following: add, remove, replace.
            409 [{"op": "replace", "path": "/nope", "value": "x"}] | Property nope does not exist.
            409 [{"op": "remove", "path": "/nope"}] | Property nope does not exist.
            403 [{"op": "remove", "path": "/name"}] | Property name may not be removed.
            403 [{"op": "replace", "path": "/status", "value": "active"}] | Attribute 'status' is read-only.
            403 [{"op": "add", "path": "/os_glance_x", "value": "1"}] | Attribute 'os_glance_x' is reserved.
            400 [{"op": "add", "path": "/foo", "value": 1}] | Provided object does not match schema 'image': 1 is not of type 'string'
            400 [{"op": "add", "path": "/a/b", "value": "1"}] | Invalid JSON pointer for this resource: '/a/b'
            400 [{"op": "add", "path": "name", "value": "1"}] | Pointer `name` does not start with "/".
            400 [{"op": "add", "path": "/name"}] | Operation "add" requires a member named "value".
            403 [{"op": "replace", "path": "/owner", "value": "p2"}] | Owner can't be updated by non admin.
            403 [{"op": "replace", "path": "/visibility", "value": "public"}] | You are not authorized to complete publicize_image action.
            409 [{"op": "replace", "path": "/name", "value": "lost"}, {"op": "remove", "path": "/x"}] | Property x does not exist.
        "#).await;
        // Nothing was saved by the failures, including the last one's valid first change.
        assert_eq!(get(&app, &format!("/v2/images/{id}"), P1).await.json(), patched);
        let add = |i: usize| json!({"op": "add", "path": format!("/k{i}"), "value": "v"});
        let too_many = json!((0..QUOTA).map(add).collect::<Vec<_>>()).to_string();
        assert_eq!(patch(&app, P1, &id, &too_many).await.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(patch(&app, P2, &id, "[]").await.status, StatusCode::NOT_FOUND);
        let give = r#"[{"op": "replace", "path": "/owner", "value": "p2"}]"#;
        assert_eq!(patch(&app, ADMIN, &id, give).await.json()["owner"], "p2");
    }

    #[tokio::test]
    async fn patch_bumps_updated_at() {
        let app = router(Store::with_identity(EmbeddedIdentity::Headers));
        let id = create(&app, P1, json!({})).await;
        let before = get(&app, &format!("/v2/images/{id}"), P1).await.json();
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let after = patch(&app, P1, &id, r#"[{"op": "add", "path": "/name", "value": "n"}]"#).await.json();
        assert_eq!(after["created_at"], before["created_at"]);
        assert_ne!(after["updated_at"], before["updated_at"]);
    }

    #[tokio::test]
    async fn delete_respects_protection_and_ownership() {
        let app = router(Store::with_identity(EmbeddedIdentity::Headers));
        let id = create(&app, P1, json!({"protected": true})).await;
        let uri = format!("/v2/images/{id}");
        expect_errors(&app, "DELETE", &uri, P1, &format!("403  | Image {id} is protected and cannot be deleted."))
            .await;
        patch(&app, P1, &id, r#"[{"op": "replace", "path": "/protected", "value": false}]"#).await;
        expect_errors(&app, "DELETE", &uri, P1, "400 {} | A body is not expected with this request.").await;
        assert_eq!(send(&app, "DELETE", &uri, P2, "").await.status, StatusCode::NOT_FOUND);
        let deleted = send(&app, "DELETE", &uri, P1, "").await;
        assert_eq!((deleted.status, deleted.body.len()), (StatusCode::NO_CONTENT, 0));
        assert_eq!((get(&app, &uri, P1).await.status, names(&app, "", P1).await), (StatusCode::NOT_FOUND, "".into()));
        expect_errors(&app, "DELETE", &uri, P1, &format!("404  | Failed to find image {id} to delete")).await;
        let reuse = send(&app, "POST", "/v2/images", P1, &json!({ "id": id }).to_string()).await;
        assert_eq!(reuse.status, StatusCode::CONFLICT);
        let public = create(&app, ADMIN, json!({"visibility": "public"})).await;
        let not_mine = "403  | You are not authorized to complete delete_image action.";
        expect_errors(&app, "DELETE", &format!("/v2/images/{public}"), P1, not_mine).await;
    }

    #[tokio::test]
    async fn upload_download_and_deactivation() {
        let app = router(Store::with_identity(EmbeddedIdentity::Headers));
        let id = create(&app, P1, json!({"disk_format": "raw"})).await;
        let (file, show) = (format!("/v2/images/{id}/file"), format!("/v2/images/{id}"));
        assert_eq!(get(&app, &file, P1).await.status, StatusCode::NO_CONTENT);
        let missing = upload(&app, P1, &id, "data").await;
        assert_eq!(missing.message(), "Property container_format must be set prior to saving data.");
        let as_json = [P1, &[("content-type", "application/json")]].concat();
        let wrong_type = send(&app, "PUT", &file, &as_json, "x").await;
        assert_eq!(
            (wrong_type.status, wrong_type.message()),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "Invalid content type application/json".into())
        );
        patch(&app, P1, &id, r#"[{"op": "add", "path": "/container_format", "value": "bare"}]"#).await;
        let deactivate = format!("/v2/images/{id}/actions/deactivate");
        expect_errors(&app, "POST", &deactivate, ADMIN, "403  | Not allowed to deactivate image in status 'queued'")
            .await;
        assert_eq!(upload(&app, P2, &id, "data").await.status, StatusCode::NOT_FOUND);
        assert_eq!(upload(&app, P1, &id, "data").await.status, StatusCode::NO_CONTENT);
        let active = get(&app, &show, P1).await.json();
        assert_eq!(
            [&active["status"], &active["size"], &active["virtual_size"]],
            [&json!("active"), &json!(4), &json!(4)]
        );
        let data = get(&app, &file, P1).await;
        assert_eq!(
            (data.status, &data.body[..], data.header("content-type")),
            (StatusCode::OK, &b"data"[..], "application/octet-stream")
        );
        let again = upload(&app, P1, &id, "more").await.message();
        assert_eq!(again, "Image status transition from active to saving is not allowed");
        let late = patch(&app, P1, &id, r#"[{"op": "replace", "path": "/disk_format", "value": "qcow2"}]"#).await;
        assert_eq!(
            (late.status, late.message()),
            (StatusCode::FORBIDDEN, "Attribute disk_format can be only replaced for a queued image.".into())
        );

        expect_errors(&app, "POST", &deactivate, P1, "403  | You are not authorized to complete deactivate action.")
            .await;
        assert_eq!(send(&app, "POST", &deactivate, ADMIN, "").await.status, StatusCode::NO_CONTENT);
        assert_eq!(get(&app, &show, P1).await.json()["status"], "deactivated");
        assert_eq!(
            (get(&app, &file, P1).await.status, get(&app, &file, ADMIN).await.status),
            (StatusCode::FORBIDDEN, StatusCode::OK)
        );
        let reactivate = format!("/v2/images/{id}/actions/reactivate");
        assert_eq!(send(&app, "POST", &reactivate, ADMIN, "").await.status, StatusCode::NO_CONTENT);
        assert_eq!(get(&app, &file, P1).await.body, "data");
    }

    #[test]
    fn helpers_follow_python_semantics() {
        assert_eq!(split_in(r#""a,b",c,,"d\"e""#), ["a,b", "c", "", r#"d\"e"#]);
        assert_eq!(quote_plus("in:a b/é"), "in%3Aa+b%2F%C3%A9");
        assert_eq!(split_op("2016-04-18T21:38:54+01:00"), ("eq", "2016-04-18T21:38:54+01:00"));
        assert_eq!(split_op("gte:2016-04-18T21:38:54Z"), ("gte", "2016-04-18T21:38:54Z"));
        for t in ["2016-04-18T21:38:54+01:00", "2016-04-18T20:38:54", "2016-04-18 20:38:54Z"] {
            assert_eq!(parse_iso(t).map(isotime).as_deref(), Some("2016-04-18T20:38:54Z"), "{t}");
        }
        assert_eq!(py_repr(&json!([null, true, "it's", {"k": 1}])), r"[None, True, 'it\'s', {'k': 1}]");
        assert_eq!(decode_pointer("/a~1b~0").unwrap(), ["a/b~"]);
    }
}
