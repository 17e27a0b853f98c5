//! The Alliance image calls, each one or two Glance v2 calls.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};

use crate::glance::ListError;
use crate::list;
use std::sync::Arc;

use crate::mapping::{LinkBases, QueryMap, RequestSchema, View, ViewContext};

use super::error::GlanceCall;
use super::{AllianceAction, AllianceApi, AllianceCall, AllianceError};

/// Glance pagination parameters the gateway sets itself; filters may not.
const GLANCE_PAGINATION: [&str; 2] = ["limit", "marker"];
/// Glance's longest image name.
const MAX_NAME: usize = 255;
/// Stored on the image so that later reads can echo it, as the seed's list does.
const COPY_FROM: &str = "copy_from";
/// Alliance bodies carry no links.
static NO_LINKS: LinkBases =
    LinkBases { versioned: String::new(), unversioned: String::new(), image_service: String::new() };

pub async fn run(api: &AllianceApi, call: &AllianceCall<'_>) -> Result<Response, AllianceError> {
    match &call.route.action {
        AllianceAction::ListImages { view, query } => list(api, call, view, query).await,
        AllianceAction::ShowImage { view, image } => {
            let image = resolve(call, call.param(*image)).await?;
            render(call, view, &image).await.map(ok)
        }
        AllianceAction::CreateImage { view, request } => create(call, view, request).await,
        AllianceAction::UpdateImage { view, request, image } => {
            update(call, view, request, call.param(*image)).await.map(ok)
        }
        AllianceAction::DeleteImage { image } => {
            let image = resolve(call, call.param(*image)).await?;
            let id = image["id"].as_str().unwrap_or_default();
            call.namespace.glance.delete_image(&call.glance, id).await?;
            // The seed answers a delete 200 with no body.
            Ok(StatusCode::OK.into_response())
        }
    }
}

fn ok(body: impl Serialize) -> Response {
    axum::Json(body).into_response()
}

/// `GET /images`: every page Glance has, or up to `limit`.
async fn list(
    api: &AllianceApi,
    call: &AllianceCall<'_>,
    view: &Arc<View>,
    query_map: &QueryMap,
) -> Result<Response, AllianceError> {
    let last = |key: &str| call.query.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let limit = match last("limit") {
        Some(v) => Some(v.parse::<usize>().ok().filter(|l| *l > 0).ok_or_else(|| {
            AllianceError::BadRequest(format!("limit must be a whole number of at least 1, not `{v}`"))
        })?),
        None => None,
    };
    let filters: Vec<_> = query_map
        .translate(&call.query)
        .into_iter()
        .filter(|(k, _)| !GLANCE_PAGINATION.contains(&k.as_str()))
        .collect();
    let marker = last("marker").filter(|m| !m.is_empty());
    let ticket = api.admission.try_admit(super::DIALECT)?;
    let glance = &call.namespace.glance;
    let shape = list::Shape {
        view: view.clone(),
        links: NO_LINKS.clone(),
        base_properties: glance.base_properties(&call.glance).await?,
        tail: Box::new(|_, _| {}),
        keep: None,
    };
    let listing = glance.listing(&call.glance, filters, marker, limit);
    list::respond(listing, shape, ticket).await.map_err(|e| match e {
        ListError::Upstream(e) => AllianceError::Upstream(e),
        ListError::Visit(e) => AllianceError::Render(e),
    })
}

/// `POST /images`: create, then start the import of `copy_from`. An import that cannot start
/// takes the new image with it, so nothing half-made stays behind.
async fn create(call: &AllianceCall<'_>, view: &View, schema: &RequestSchema) -> Result<Response, AllianceError> {
    let mut fields = schema.parse(&call.body)?;
    // What the seed's clients get back from a create without one.
    fields.entry("visibility").or_insert_with(|| json!("private"));
    let glance = &call.namespace.glance;
    let image = glance.create_image(&call.glance, &Value::Object(fields.clone())).await?;
    let id = image["id"].as_str().unwrap_or_default().to_owned();
    let image = match fields.get(COPY_FROM).and_then(Value::as_str) {
        Some(uri) => match glance.import_web_download(&call.glance, &id, uri).await {
            Ok(()) => glance.get_image(&call.glance, &id).await?,
            Err(e) => {
                if let Err(cleanup) = glance.delete_image(&call.glance, &id).await {
                    tracing::error!(image = %id, error = %cleanup, "could not delete an image whose import failed");
                }
                return Err(AllianceError::from_glance(GlanceCall::Import(uri), e));
            }
        },
        None => image,
    };
    let mut response = (StatusCode::CREATED, axum::Json(render(call, view, &image).await?)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("{}/{id}", call.images_url)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// The fields Glance fixes once an image leaves `queued`.
const FORMATS: [&str; 2] = ["disk_format", "container_format"];

/// `PATCH` or `PUT /images/{id or name}`: one `replace` per field that changes.
async fn update(
    call: &AllianceCall<'_>,
    view: &View,
    schema: &RequestSchema,
    id_or_name: &str,
) -> Result<Value, AllianceError> {
    let fields = schema.parse(&call.body)?;
    if fields.contains_key(COPY_FROM) {
        return Err(AllianceError::BadRequest("copy_from can only be given when the image is created".into()));
    }
    let image = resolve(call, id_or_name).await?;
    let id = image["id"].as_str().unwrap_or_default().to_owned();
    // Glance changes the formats of a queued image only (403 once it has data, even to the
    // same value); the seed's own update names them on an imported image and expects the rest
    // applied (docs/alliance.md). So unchanged fields, and the formats of an image past
    // `queued`, are left out: they stay as they are.
    let formats_fixed = image["status"] != "queued";
    let ops: Vec<Value> = fields
        .iter()
        .filter(|(k, v)| image.get(k.as_str()) != Some(v))
        .filter(|(k, _)| !(formats_fixed && FORMATS.contains(&k.as_str())))
        .map(|(k, v)| json!({"op": "replace", "path": format!("/{k}"), "value": v}))
        .collect();
    let updated =
        if ops.is_empty() { image } else { call.namespace.glance.patch_image(&call.glance, &id, &ops).await? };
    render(call, view, &updated).await
}

/// An image by id, or by name among the environment's own images.
async fn resolve(call: &AllianceCall<'_>, id_or_name: &str) -> Result<Value, AllianceError> {
    let glance = &call.namespace.glance;
    if crate::glance::is_image_id(id_or_name) {
        let by_id = GlanceCall::GetById(id_or_name);
        return glance.get_image(&call.glance, id_or_name).await.map_err(|e| AllianceError::from_glance(by_id, e));
    }
    // Glance names are at most 255 characters: a longer one names nothing, and is not asked for.
    if id_or_name.chars().count() > MAX_NAME {
        return Err(AllianceError::NotFound(format!("No image named {id_or_name}")));
    }
    let filters = [("name".to_owned(), format!("eq:{id_or_name}")), ("owner".to_owned(), call.environment.clone())];
    let mut found = glance.list_images(&call.glance, filters.to_vec(), 2).await?;
    match found.len() {
        0 => Err(AllianceError::NotFound(format!("No image named {id_or_name}"))),
        1 => Ok(found.remove(0)),
        _ => Err(AllianceError::Conflict(format!("Several images are named {id_or_name}: use the image id"))),
    }
}

async fn render(call: &AllianceCall<'_>, view: &View, image: &Value) -> Result<Value, AllianceError> {
    let base = call.namespace.glance.base_properties(&call.glance).await?;
    let ctx = ViewContext { links: &NO_LINKS, base_properties: &base };
    Ok(view.render(image, &ctx)?)
}
