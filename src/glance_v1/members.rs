//! v1's image members, through Glance v2's members API.
//!
//! v2 keeps members for `shared` images only, so making a member of a `private` image first
//! makes it `shared` (v1 had no such step: any image could have members). v2 has no
//! `can_share`: it is accepted and answered `false`. A v2 member is `pending` until it
//! accepts; v1's lists showed shared images whatever their members said (`member_status=all`),
//! and so do this dialect's.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{json, Value};

use crate::glance::UpstreamError;

use super::{GlanceV1Api, V1Call, V1Error};

/// Most shared images `GET /v1/shared-images/{member}` looks through.
const MAX_SHARED_LOOKUP: usize = 1000;

/// `GET /v1/images/{id}/members`.
pub async fn list(api: &GlanceV1Api, call: &V1Call<'_>, id: &str) -> Result<Response, V1Error> {
    let members = api.glance.list_members(&call.glance, id).await.map_err(|e| image_error(e, id))?;
    let members: Vec<Value> =
        members.iter().map(|m| json!({"member_id": m["member_id"], "can_share": false})).collect();
    Ok(axum::Json(json!({ "members": members })).into_response())
}

/// `PUT /v1/images/{id}/members`: the members become exactly those of `memberships`.
pub async fn replace(api: &GlanceV1Api, call: &V1Call<'_>, id: &str, body: Body) -> Result<Response, V1Error> {
    let body = json_body(api, call, body).await?;
    let wanted = memberships(&body)?;
    let current = api.glance.list_members(&call.glance, id).await.map_err(|e| image_error(e, id))?;
    let current: Vec<&str> = current.iter().filter_map(|m| m["member_id"].as_str()).collect();
    if wanted.iter().any(|w| !current.contains(&w.as_str())) {
        make_shared(api, call, id).await?;
    }
    for member in wanted.iter().filter(|w| !current.contains(&w.as_str())) {
        add_one(api, call, id, member).await?;
    }
    for member in current.iter().filter(|c| !wanted.iter().any(|w| w == *c)) {
        api.glance.remove_member(&call.glance, id, member).await.map_err(|e| image_error(e, id))?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /v1/images/{id}/members/{member}` (an optional `{"member": {"can_share": ...}}`).
pub async fn add(
    api: &GlanceV1Api,
    call: &V1Call<'_>,
    id: &str,
    member: &str,
    body: Body,
) -> Result<Response, V1Error> {
    let body = json_body(api, call, body).await?;
    let well_formed = match &body {
        Value::Null => true,
        Value::Object(o) => {
            o.len() == 1 && o.get("member").and_then(Value::as_object).is_some_and(|m| can_share_ok(m.get("can_share")))
        }
        _ => false,
    };
    if !well_formed {
        return Err(V1Error::BadRequest(format!("Invalid membership association: {body}")));
    }
    make_shared(api, call, id).await?;
    add_one(api, call, id, member).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /v1/images/{id}/members/{member}`.
pub async fn remove(api: &GlanceV1Api, call: &V1Call<'_>, id: &str, member: &str) -> Result<Response, V1Error> {
    api.glance.remove_member(&call.glance, id, member).await.map_err(|e| match e.status().map(|s| s.as_u16()) {
        Some(404) => V1Error::NotFound(format!("Image {id} has no member {member}")),
        _ => image_error(e, id),
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/shared-images/{member}`: the shared images the caller can see that `member` is a
/// member of. v2 has no such query: each shared image visible to the caller (at most
/// [`MAX_SHARED_LOOKUP`]) is asked whether `member` is one of its members.
pub async fn shared_images(api: &GlanceV1Api, call: &V1Call<'_>, member: &str) -> Result<Response, V1Error> {
    let filters = vec![("visibility".into(), "shared".into()), ("member_status".into(), "all".into())];
    let images = api.glance.list_images(&call.glance, filters, MAX_SHARED_LOOKUP).await?;
    let mut shared = Vec::new();
    for image in &images {
        let Some(id) = image["id"].as_str() else { continue };
        match api.glance.get_member(&call.glance, id, member).await {
            Ok(_) => shared.push(json!({"image_id": id, "can_share": false})),
            // Not a member, or not one the caller may see.
            Err(e) if matches!(e.status().map(|s| s.as_u16()), Some(403 | 404)) => {}
            Err(e) => return Err(V1Error::Upstream(e)),
        }
    }
    Ok(axum::Json(json!({ "shared_images": shared })).into_response())
}

/// The member ids of `{"memberships": [{"member_id": ..., "can_share": ...}, ...]}`.
fn memberships(body: &Value) -> Result<Vec<String>, V1Error> {
    let invalid = || V1Error::BadRequest(format!("Invalid membership association: {body}"));
    let list = body.get("memberships").and_then(Value::as_array).ok_or_else(invalid)?;
    let mut ids: Vec<String> = Vec::with_capacity(list.len());
    for entry in list {
        let entry = entry.as_object().ok_or_else(invalid)?;
        let id = entry.get("member_id").and_then(Value::as_str).filter(|id| !id.is_empty()).ok_or_else(invalid)?;
        if !can_share_ok(entry.get("can_share")) {
            return Err(invalid());
        }
        if !ids.iter().any(|known| known == id) {
            ids.push(id.to_owned());
        }
    }
    Ok(ids)
}

fn can_share_ok(value: Option<&Value>) -> bool {
    matches!(value, None | Some(Value::Bool(_)))
}

/// A `private` image becomes `shared`: the only visibility v2 keeps members for.
async fn make_shared(api: &GlanceV1Api, call: &V1Call<'_>, id: &str) -> Result<(), V1Error> {
    let image = api.glance.get_image(&call.glance, id).await.map_err(|e| image_error(e, id))?;
    if image["visibility"] == "private" {
        let ops = [json!({"op": "replace", "path": "/visibility", "value": "shared"})];
        api.glance.patch_image(&call.glance, id, &ops).await.map_err(|e| image_error(e, id))?;
    }
    Ok(())
}

/// Adds a member; one that already is stays one (v1's PUT was idempotent).
async fn add_one(api: &GlanceV1Api, call: &V1Call<'_>, id: &str, member: &str) -> Result<(), V1Error> {
    match api.glance.add_member(&call.glance, id, member).await {
        Ok(_) => Ok(()),
        Err(e) if e.status() == Some(StatusCode::CONFLICT) => Ok(()),
        Err(e) => Err(image_error(e, id)),
    }
}

async fn json_body(api: &GlanceV1Api, call: &V1Call<'_>, body: Body) -> Result<Value, V1Error> {
    let bytes = crate::body::read(call.headers, body, api.settings.body_limit).await.map_err(|e| match e {
        crate::body::BodyError::TooLarge(_) => V1Error::TooLarge(e.to_string()),
        other => V1Error::BadRequest(other.to_string()),
    })?;
    crate::body::json(call.headers, &bytes, &[]).map_err(|e| V1Error::BadRequest(e.to_string()))
}

fn image_error(e: UpstreamError, id: &str) -> V1Error {
    match e.status().map(|s| s.as_u16()) {
        Some(404) => V1Error::NotFound(format!("Image with identifier {id} not found")),
        _ => V1Error::Upstream(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memberships_are_checked() {
        let ok =
            json!({"memberships": [{"member_id": "t1", "can_share": false}, {"member_id": "t2"}, {"member_id": "t1"}]});
        assert_eq!(memberships(&ok).unwrap(), ["t1", "t2"]);
        assert!(memberships(&json!({"memberships": []})).unwrap().is_empty());
        for bad in [
            json!({}),
            json!({"memberships": {}}),
            json!({"memberships": [{"can_share": true}]}),
            json!({"memberships": [{"member_id": ""}]}),
            json!({"memberships": [{"member_id": "t", "can_share": "yes"}]}),
            json!({"memberships": ["t"]}),
        ] {
            assert!(memberships(&bad).is_err(), "{bad}");
        }
    }
}
