//! The v1 image calls, each one or a few Glance v2 calls.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;

use crate::glance::{ListError, UpstreamError};
use crate::list;
use crate::mapping::{LinkBases, RawObject, View, ViewContext};

use super::{meta, GlanceV1Api, V1Call, V1Error};

/// v1's `limit_param_default` and `api_limit_max`.
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
pub async fn list(api: &GlanceV1Api, call: &V1Call<'_>) -> Result<Response, V1Error> {
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
    if last("changes-since").is_some_and(|t| crate::mapping::parse_utc(t).is_err()) {
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
    let query_map =
        call.route.query.as_deref().and_then(|q| api.mapping.query(q)).ok_or_else(|| missing("query map"))?;
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
    let view = call.route.view.clone().ok_or_else(|| missing("view"))?;
    let ticket = api.admission.try_admit(super::DIALECT)?;
    let base_properties = api.glance.base_properties(&call.glance).await?;
    let glance_limit = if keep.is_some() { None } else { Some(limit) };
    let listing = api.glance.listing(&call.glance, filters, marker.as_deref(), glance_limit);
    let shape = list::Shape {
        mapping: api.mapping.clone(),
        view,
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
pub async fn meta(api: &GlanceV1Api, call: &V1Call<'_>) -> Result<Response, V1Error> {
    let image = fetch(api, call).await?;
    let mut response = StatusCode::OK.into_response();
    write_image_headers(api, call, &image, response.headers_mut()).await?;
    Ok(response)
}

/// `GET /v1/images/{id}`: the bytes, streamed from Glance, under the image's headers. As v1, an
/// image that is not active has none to give (404; deactivated: 403).
pub async fn download(api: &GlanceV1Api, call: &V1Call<'_>) -> Result<Response, V1Error> {
    let id = call.param("id");
    let image = fetch(api, call).await?;
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
    write_image_headers(api, call, &image, response.headers_mut()).await?;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    Ok(response)
}

/// The image's `x-image-meta-*` headers and its `ETag` (the checksum, when Glance has one).
async fn write_image_headers(
    api: &GlanceV1Api,
    call: &V1Call<'_>,
    image: &Value,
    headers: &mut HeaderMap,
) -> Result<(), V1Error> {
    meta::write_headers(&render(api, call, image).await?, headers);
    if let Some(etag) = image["checksum"].as_str().and_then(|c| HeaderValue::from_str(c).ok()) {
        headers.insert(header::ETAG, etag);
    }
    Ok(())
}

/// The image a call names, with Glance's refusals said as v1 said them.
async fn fetch(api: &GlanceV1Api, call: &V1Call<'_>) -> Result<Value, V1Error> {
    let id = call.param("id");
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
async fn render(api: &GlanceV1Api, call: &V1Call<'_>, image: &Value) -> Result<Value, V1Error> {
    let base = api.glance.base_properties(&call.glance).await?;
    let ctx = ViewContext { links: &NO_LINKS, base_properties: &base };
    Ok(view(api, call)?.render(image, &ctx)?)
}

fn view<'a>(api: &'a GlanceV1Api, call: &V1Call<'_>) -> Result<&'a View, V1Error> {
    call.route.view.as_deref().and_then(|v| api.mapping.view(v)).ok_or_else(|| missing("view"))
}

/// The mapping was validated at load; this only guards against a future action mix-up.
fn missing(what: &str) -> V1Error {
    V1Error::Render(crate::mapping::RenderError { field: "route".into(), problem: format!("route has no {what}") })
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
