//! v1's image metadata as HTTP headers: how an image is written into `x-image-meta-*`
//! headers (HEAD and GET of an image).

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

pub const META_PREFIX: &str = "x-image-meta-";
pub const PROPERTY_PREFIX: &str = "x-image-meta-property-";

/// Writes an image, as its view rendered it, as headers: each field `f` becomes
/// `x-image-meta-f`, and each key `k` of a field holding an object (v1's `properties`)
/// `x-image-meta-property-k`, names lowercased. Null values are left out and the rest written
/// as Python's `str` writes them (`True`, `False`, digits), as Glance v1 did. A name or value
/// no header can carry (a property key with a space, a value with a line break) is left out.
pub fn write_headers(image: &Value, headers: &mut HeaderMap) {
    let Some(fields) = image.as_object() else { return };
    for (field, value) in fields {
        match value {
            Value::Object(properties) => {
                for (key, value) in properties {
                    insert(headers, PROPERTY_PREFIX, key, value);
                }
            }
            value => insert(headers, META_PREFIX, field, value),
        }
    }
}

fn insert(headers: &mut HeaderMap, prefix: &str, key: &str, value: &Value) {
    let text = match value {
        Value::Null => return,
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let name = HeaderName::from_bytes(format!("{prefix}{}", key.to_lowercase()).as_bytes());
    // UTF-8 text goes out as its bytes, as Glance v1 sent it.
    let value = HeaderValue::from_bytes(text.as_bytes());
    match (name, value) {
        (Ok(name), Ok(value)) => drop(headers.insert(name, value)),
        _ => tracing::debug!(key, "image metadata that no header can carry left out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn images_become_python_shaped_headers() {
        let mut headers = HeaderMap::new();
        let image = json!({
            "id": "i", "name": "Ünï", "is_public": false, "protected": true, "size": 0,
            "checksum": null, "Min_Ram": 5,
            "properties": {"os_distro": "cirros", "Kernel_ID": "k", "bad key": "x", "nl": "a\nb", "none": null}
        });
        write_headers(&image, &mut headers);
        let get = |name: &str| headers.get(name).map(|v| String::from_utf8(v.as_bytes().to_vec()).unwrap());
        assert_eq!(get("x-image-meta-id").as_deref(), Some("i"));
        assert_eq!(get("x-image-meta-name").as_deref(), Some("Ünï"));
        assert_eq!(get("x-image-meta-is_public").as_deref(), Some("False"));
        assert_eq!(get("x-image-meta-protected").as_deref(), Some("True"));
        assert_eq!(get("x-image-meta-size").as_deref(), Some("0"));
        assert_eq!(get("x-image-meta-min_ram").as_deref(), Some("5"));
        assert_eq!(get("x-image-meta-checksum"), None);
        assert_eq!(get("x-image-meta-property-os_distro").as_deref(), Some("cirros"));
        assert_eq!(get("x-image-meta-property-kernel_id").as_deref(), Some("k"));
        assert_eq!(headers.len(), 8, "{headers:?}");
    }
}
