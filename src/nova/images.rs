//! The image read calls: `GET /images`, `GET /images/detail`, `GET /images/{id}`.

use axum::response::Response;
use serde::Serialize;
use serde_json::Value;

use crate::glance::ListError;
use crate::list;
use std::sync::Arc;

use crate::mapping::{QueryMap, View, ViewContext};

use super::fault::{GlanceCall, NovaError};
use super::{NovaApi, NovaCall};

/// Query parameters Nova validates as positive integers (repeats allowed, each checked).
const PAGINATION_INTEGERS: [&str; 3] = ["limit", "page_size", "offset"];
/// Pagination parameters the gateway itself sends to Glance; filters may not set them.
const GLANCE_PAGINATION: [&str; 2] = ["limit", "marker"];

/// `GET /images` and `GET /images/detail`, written page by page ([`crate::list`]).
pub async fn list(
    api: &NovaApi,
    call: &NovaCall<'_>,
    view: &Arc<View>,
    query_map: &QueryMap,
) -> Result<Response, NovaError> {
    for (key, value) in call.query.iter().filter(|(k, _)| PAGINATION_INTEGERS.contains(&k.as_str())) {
        validate_positive_integer(key, value)?;
    }
    let last = |key: &str| call.query.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    // Digits only by now; a number too large for usize means "no practical limit".
    let limit = last("limit").map(|v| v.parse::<usize>().unwrap_or(usize::MAX));
    let marker = last("marker").filter(|m| !m.is_empty());
    let filters: Vec<(String, String)> = query_map
        .translate(&call.query)
        .into_iter()
        .filter(|(k, _)| !GLANCE_PAGINATION.contains(&k.as_str()))
        .collect();
    let ticket = api.admission.try_admit(super::DIALECT)?;
    let base_properties = api.glance.base_properties(&call.glance).await?;

    // Nova adds a next link whenever the page is exactly as long as the page size it would
    // use (`limit` capped by `max_limit`), even if nothing follows.
    let max_items = limit.unwrap_or(usize::MAX).min(api.settings.max_limit);
    let next_base = next_link_base(call, query_map);
    let tail: list::Tail = Box::new(move |progress, out| {
        if max_items == 0 || progress.count != max_items {
            return;
        }
        if let Some(id) = &progress.last_id {
            let href = format!("{next_base}{}", quote_plus(id));
            out.extend_from_slice(br#","images_links":"#);
            // Writing into a Vec cannot fail.
            let _ = serde_json::to_writer(out, &[Link { rel: "next", href }]);
        }
    });
    let shape = list::Shape { view: view.clone(), links: call.links.clone(), base_properties, tail, keep: None };
    let listing = api.glance.listing(&call.glance, filters, marker, limit);
    list::respond(listing, shape, ticket).await.map_err(|e| match e {
        ListError::Upstream(e) => NovaError::from_glance(GlanceCall::List, "", e),
        ListError::Visit(e) => NovaError::Render(e),
    })
}

#[derive(Serialize)]
struct Link {
    rel: &'static str,
    href: String,
}

/// `GET /images/{id}`.
pub async fn show(api: &NovaApi, call: &NovaCall<'_>, view: &View, id: &str) -> Result<Value, NovaError> {
    let image = fetch(api, call, id).await?;
    Ok(serde_json::json!({ "image": render(api, call, view, &image).await? }))
}

/// `DELETE /images/{id}`.
pub async fn delete(api: &NovaApi, call: &NovaCall<'_>, id: &str) -> Result<(), NovaError> {
    api.glance.delete_image(&call.glance, id).await.map_err(|e| NovaError::from_glance(GlanceCall::Delete, id, e))
}

/// One image from Glance, with Glance's refusals said as Nova says them.
pub(super) async fn fetch(api: &NovaApi, call: &NovaCall<'_>, id: &str) -> Result<Value, NovaError> {
    api.glance.get_image(&call.glance, id).await.map_err(|e| NovaError::from_glance(GlanceCall::Get, id, e))
}

/// Shapes one Glance image with `view`.
pub(super) async fn render(api: &NovaApi, call: &NovaCall<'_>, view: &View, image: &Value) -> Result<Value, NovaError> {
    let base = api.glance.base_properties(&call.glance).await?;
    let ctx = ViewContext { links: &call.links, base_properties: &base };
    Ok(view.render(image, &ctx)?)
}

/// Nova ≥ 30 checks `limit`, `page_size` and `offset` against a JSON schema: digits only, ≥ 1.
fn validate_positive_integer(key: &str, value: &str) -> Result<(), NovaError> {
    let reason = if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        Some(format!("'{value}' does not match '^[0-9]*$'"))
    } else if value.bytes().all(|b| b == b'0') {
        Some(format!("{value} is less than the minimum of 1"))
    } else {
        None
    };
    match reason {
        Some(reason) => {
            Err(NovaError::BadRequest(format!("Invalid input for query parameters {key}. Value: {value}. {reason}")))
        }
        None => Ok(()),
    }
}

/// The `next` href up to the marker's value: the request's own query, sorted, without
/// parameters Nova's schema strips, then `marker=`, last (as Nova 34 writes it).
fn next_link_base(call: &NovaCall<'_>, query_map: &QueryMap) -> String {
    let mut pairs: Vec<(&str, &str)> = call
        .query
        .iter()
        .filter(|(k, _)| query_map.knows(k) || PAGINATION_INTEGERS.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    pairs.sort();
    // Python's OrderedDict(sorted(items)): one entry per key, holding its last (largest) value.
    let mut params: Vec<(&str, &str)> = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        match params.iter_mut().find(|(pk, _)| *pk == k) {
            Some(slot) => slot.1 = v,
            None => params.push((k, v)),
        }
    }
    let mut href = format!("{}/{}?", call.links.versioned, call.collection);
    for (k, v) in params {
        href.push_str(&format!("{}={}&", quote_plus(k), quote_plus(v)));
    }
    href.push_str("marker=");
    href
}

/// Python's `urllib.parse.quote_plus`.
fn quote_plus(s: &str) -> String {
    const SAFE: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'_').remove(b'.').remove(b'-').remove(b'~').remove(b' ');
    percent_encoding::utf8_percent_encode(s, SAFE).to_string().replace(' ', "+")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_integers() {
        assert!(validate_positive_integer("limit", "5").is_ok());
        assert!(validate_positive_integer("limit", "007").is_ok());
        for (value, reason) in [
            ("0", "0 is less than the minimum of 1"),
            ("-1", "'-1' does not match"),
            ("abc", "'abc' does not match"),
            ("", "'' does not match"),
        ] {
            let e = validate_positive_integer("limit", value).unwrap_err().to_string();
            assert!(e.starts_with(&format!("Invalid input for query parameters limit. Value: {value}. ")), "{e}");
            assert!(e.contains(reason), "{e}");
        }
    }

    #[test]
    fn quote_plus_matches_python() {
        assert_eq!(quote_plus("a b:c/d~e_f.g-h*"), "a+b%3Ac%2Fd~e_f.g-h%2A");
        assert_eq!(quote_plus("Ünï"), "%C3%9Cn%C3%AF");
    }
}
