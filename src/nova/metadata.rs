//! The image metadata calls: `/images/{image_id}/metadata[/{key}]`.
//!
//! Nova's metadata is Glance's custom (non-base) properties. Reads render the route's view;
//! writes validate the body as Nova's JSON schema does (before looking the image up), check
//! the `metadata_items` quota, then send Glance one JSON-patch of `add`, `replace` and
//! `remove` operations on properties only. Unlike Nova, a write never sends `move`, never
//! rewrites visibility and never touches a base property (docs/compatibility.md).

use crate::mapping::{FieldRef, PropertyNames, View, ViewContext};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::fault::{GlanceCall, NovaError, NOT_FOUND_DEFAULT};
use super::images::{fetch, render};
use super::{NovaApi, NovaCall};

/// Nova's metadata key pattern, `^[a-zA-Z0-9-_:. ]{1,255}$`.
fn valid_key(key: &str) -> bool {
    (1..=255).contains(&key.chars().count())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.' | ' '))
}

/// `GET .../metadata`.
pub async fn list(api: &NovaApi, call: &NovaCall<'_>, view: &View, id: &str) -> Result<Value, NovaError> {
    let image = fetch(api, call, id).await?;
    render(api, call, view, &image).await
}

/// `GET .../metadata/{key}`: the item of the image's metadata as the view's metadata field
/// shapes it, whatever that field is called.
pub async fn show_item(
    api: &NovaApi,
    call: &NovaCall<'_>,
    metadata: &FieldRef,
    id: &str,
    key: &str,
) -> Result<Value, NovaError> {
    let image = fetch(api, call, id).await?;
    let base = api.glance.base_properties(&call.glance).await?;
    let ctx = ViewContext { links: &call.links, base_properties: &base };
    let value = metadata
        .value(&image, &ctx)?
        .as_mut()
        .and_then(|m| m.get_mut(key))
        .map(Value::take)
        .ok_or_else(|| NovaError::NotFound(NOT_FOUND_DEFAULT.into()))?;
    Ok(json!({"meta": {key: value}}))
}

/// `POST .../metadata`: merge, answered with every property Glance holds afterwards.
pub async fn merge(api: &NovaApi, call: &NovaCall<'_>, view: &View, id: &str) -> Result<Value, NovaError> {
    let wanted = parse(call, "metadata")?;
    let current = Current::fetch(api, call, id).await?;
    let mut merged = current.props.clone();
    merged.extend(current.writable(wanted));
    check_quota(api, merged.len())?;
    let updated = patch(api, call, id, &current, &merged).await?;
    render(api, call, view, &updated).await
}

/// `PUT .../metadata`: replace all, answered with the request's own metadata.
pub async fn replace(api: &NovaApi, call: &NovaCall<'_>, id: &str) -> Result<Value, NovaError> {
    let wanted = parse(call, "metadata")?;
    let current = Current::fetch(api, call, id).await?;
    check_quota(api, wanted.len())?;
    let mut replaced = current.writable(wanted.clone());
    // Keys Nova would not touch keep their value rather than being removed.
    for key in ["kernel_id", "ramdisk_id"] {
        if let (Some(old), true) = (current.props.get(key), wanted.contains_key(key)) {
            replaced.entry(key).or_insert_with(|| old.clone());
        }
    }
    patch(api, call, id, &current, &replaced).await?;
    Ok(json!({"metadata": wanted}))
}

/// `PUT .../metadata/{key}`: set one key, answered with the request's own `meta`.
pub async fn set_item(api: &NovaApi, call: &NovaCall<'_>, id: &str, key: &str) -> Result<Value, NovaError> {
    let wanted = parse(call, "meta")?;
    // Nova checks this before it looks the image up.
    if !wanted.contains_key(key) {
        return Err(NovaError::BadRequest("Request body and URI mismatch".into()));
    }
    let current = Current::fetch(api, call, id).await?;
    let mut merged = current.props.clone();
    merged.extend(current.writable(wanted.clone()));
    check_quota(api, merged.len())?;
    patch(api, call, id, &current, &merged).await?;
    Ok(json!({"meta": wanted}))
}

/// `DELETE .../metadata/{key}`.
pub async fn delete_item(api: &NovaApi, call: &NovaCall<'_>, id: &str, key: &str) -> Result<(), NovaError> {
    let current = Current::fetch(api, call, id).await?;
    let mut remaining = current.props.clone();
    if remaining.remove(key).is_none() {
        return Err(NovaError::NotFound("Invalid metadata key".into()));
    }
    patch(api, call, id, &current, &remaining).await.map(drop)
}

/// An image as a write finds it.
struct Current {
    image: Value,
    /// Its custom properties exactly as Glance holds them (strings, undecoded).
    props: Map<String, Value>,
    base: Arc<PropertyNames>,
}

impl Current {
    async fn fetch(api: &NovaApi, call: &NovaCall<'_>, id: &str) -> Result<Current, NovaError> {
        let image = fetch(api, call, id).await?;
        let base = api.glance.base_properties(&call.glance).await?;
        let props = image
            .as_object()
            .map(|o| {
                o.iter().filter(|(k, _)| !base.contains(k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
            })
            .unwrap_or_default();
        Ok(Current { image, props, base })
    }

    /// The part of a metadata body that may reach Glance. Nova drops base attributes
    /// (`name`, `min_ram`, ...) and a `kernel_id` or `ramdisk_id` of `""` or `none`; the
    /// gateway does the same, so a metadata call can never change an image's core attributes.
    fn writable(&self, wanted: Map<String, Value>) -> Map<String, Value> {
        wanted
            .into_iter()
            .filter(|(k, v)| {
                let unset = matches!(k.as_str(), "kernel_id" | "ramdisk_id")
                    && v.as_str().is_some_and(|s| s.is_empty() || s.eq_ignore_ascii_case("none"));
                !self.base.contains(k.as_str()) && !unset
            })
            .collect()
    }
}

fn check_quota(api: &NovaApi, count: usize) -> Result<(), NovaError> {
    match api.settings.metadata_items {
        Some(limit) if count > limit => Err(NovaError::Forbidden("Image metadata limit exceeded".into())),
        _ => Ok(()),
    }
}

/// Sends Glance the operations that turn `current` into `wanted`, or nothing if they agree.
async fn patch(
    api: &NovaApi,
    call: &NovaCall<'_>,
    id: &str,
    current: &Current,
    wanted: &Map<String, Value>,
) -> Result<Value, NovaError> {
    let ops = patch_ops(&current.props, wanted);
    if ops.is_empty() {
        return Ok(current.image.clone());
    }
    api.glance.patch_image(&call.glance, id, &ops).await.map_err(|e| NovaError::from_glance(GlanceCall::Patch, id, e))
}

/// JSON-patch operations from one property set to another: `remove` for keys that go,
/// `add` for new keys, `replace` for changed values. Never `move`, which Glance refuses.
fn patch_ops(current: &Map<String, Value>, wanted: &Map<String, Value>) -> Vec<Value> {
    let pointer = |key: &str| format!("/{}", key.replace('~', "~0").replace('/', "~1"));
    let removals =
        current.keys().filter(|k| !wanted.contains_key(*k)).map(|k| json!({"op": "remove", "path": pointer(k)}));
    let upserts = wanted.iter().filter_map(|(k, v)| match current.get(k) {
        Some(old) if old == v => None,
        Some(_) => Some(json!({"op": "replace", "path": pointer(k), "value": v})),
        None => Some(json!({"op": "add", "path": pointer(k), "value": v})),
    });
    removals.chain(upserts).collect()
}

/// Parses and validates a metadata body (`{"metadata": {...}}` or `{"meta": {k: v}}`) the way
/// Nova's schema does, with Nova's messages.
fn parse(call: &NovaCall<'_>, root: &str) -> Result<Map<String, Value>, NovaError> {
    validate(call.body.clone(), root, call.legacy).map_err(NovaError::BadRequest)
}

fn validate(body: Value, root: &str, legacy: bool) -> Result<Map<String, Value>, String> {
    let Value::Object(mut top) = body else {
        return Err(format!("{} is not of type 'object'", py_repr(&body)));
    };
    let Some(metadata) = top.remove(root) else {
        return Err(format!("'{root}' is a required property"));
    };
    // The legacy v2 root drops unknown top-level keys instead of refusing them.
    if !legacy {
        if let Some(extra) = top.keys().next() {
            return Err(format!("Additional properties are not allowed ('{extra}' was unexpected)"));
        }
    }
    let field_error = |field: &str, value: &Value, problem: String| {
        format!("Invalid input for field/attribute {field}. Value: {}. {problem}", py_str(value))
    };
    let Value::Object(items) = metadata else {
        return Err(field_error(root, &metadata, format!("{} is not of type 'object'", py_repr(&metadata))));
    };
    let whole = Value::Object(items.clone());
    if let Some(bad) = items.keys().find(|k| !valid_key(k)) {
        let problem =
            format!("{} does not match any of the regexes: '^[a-zA-Z0-9-_:. ]{{1,255}}$'", py_repr(&json!(bad)));
        return Err(field_error(root, &whole, problem));
    }
    for (key, value) in &items {
        match value {
            Value::String(s) if s.chars().count() > 255 => {
                return Err(field_error(key, value, format!("{} is too long", py_repr(value))))
            }
            Value::String(_) => {}
            other => return Err(field_error(key, other, format!("{} is not of type 'string'", py_repr(other)))),
        }
    }
    if root == "meta" && items.len() != 1 {
        let problem = if items.is_empty() {
            "{} should be non-empty".to_owned()
        } else {
            format!("{} has too many properties", py_repr(&whole))
        };
        return Err(field_error(root, &whole, problem));
    }
    Ok(items)
}

/// Python's `repr` of the value a JSON document decodes to, as jsonschema quotes it.
fn py_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
            let mut out = String::from(quote);
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == quote => {
                        out.push('\\');
                        out.push(c);
                    }
                    c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push(quote);
            out
        }
        Value::Array(items) => format!("[{}]", items.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter().map(|(k, v)| format!("{}: {}", py_repr(&json!(k)), py_repr(v))).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Python's `str`: like `repr`, but a string is printed bare.
fn py_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => py_repr(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn patches_use_add_replace_remove_only() {
        let current = map(json!({"a": "1", "b": "2", "c": "3"}));
        let wanted = map(json!({"b": "2", "c": "x", "d": "1"}));
        assert_eq!(
            patch_ops(&current, &wanted),
            vec![
                json!({"op": "remove", "path": "/a"}),
                json!({"op": "replace", "path": "/c", "value": "x"}),
                json!({"op": "add", "path": "/d", "value": "1"}),
            ]
        );
        // A renamed key with the same value is remove + add, never `move`.
        let ops = patch_ops(&map(json!({"a": "1"})), &map(json!({"b": "1"})));
        assert!(ops.iter().all(|op| op["op"] != "move"));
        assert!(patch_ops(&current, &current).is_empty());
    }

    #[test]
    fn bodies_are_validated_with_nova_messages() {
        let v = |body: Value, root| validate(body, root, false).unwrap_err();
        assert_eq!(v(Value::Null, "metadata"), "None is not of type 'object'");
        assert_eq!(v(json!({}), "metadata"), "'metadata' is a required property");
        assert_eq!(
            v(json!({"metadata": {}, "extra": 1}), "metadata"),
            "Additional properties are not allowed ('extra' was unexpected)"
        );
        assert_eq!(
            v(json!({"metadata": "x"}), "metadata"),
            "Invalid input for field/attribute metadata. Value: x. 'x' is not of type 'object'"
        );
        assert_eq!(
            v(json!({"metadata": {"k": 1}}), "metadata"),
            "Invalid input for field/attribute k. Value: 1. 1 is not of type 'string'"
        );
        assert_eq!(
            v(json!({"metadata": {"k": null}}), "metadata"),
            "Invalid input for field/attribute k. Value: None. None is not of type 'string'"
        );
        assert_eq!(
            v(json!({"metadata": {"a/b": "v"}}), "metadata"),
            "Invalid input for field/attribute metadata. Value: {'a/b': 'v'}. 'a/b' does not match any of the regexes: '^[a-zA-Z0-9-_:. ]{1,255}$'"
        );
        assert!(v(json!({"meta": {"a": "1", "b": "2"}}), "meta").ends_with("has too many properties"));
        assert!(v(json!({"metadata": {"k": "x".repeat(256)}}), "metadata").ends_with("is too long"));
        // The legacy root strips unknown top-level keys.
        assert_eq!(validate(json!({"metadata": {}, "extra": 1}), "metadata", true), Ok(Map::new()));
    }

    #[test]
    fn keys_follow_novas_pattern() {
        for good in ["a", "A-b_c:d.e f", &"k".repeat(255)] {
            assert!(valid_key(good), "{good}");
        }
        for bad in ["", "a/b", "ü", &"k".repeat(256), "a\tb"] {
            assert!(!valid_key(bad), "{bad}");
        }
    }

    #[test]
    fn python_reprs() {
        assert_eq!(py_repr(&json!({"a": [1, true, null], "b": "it's"})), r#"{'a': [1, True, None], 'b': "it's"}"#);
        assert_eq!(py_str(&json!("x")), "x");
    }
}
