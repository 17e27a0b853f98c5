//! v1's image metadata as HTTP headers: how an image is written into `x-image-meta-*`
//! headers (HEAD and GET of an image), and what a client's headers ask for (POST and PUT),
//! checked as v1 checked them (`glance/common/utils.py` `get_image_meta_from_headers`,
//! `glance/api/v1/images.py` `validate_image_meta`).

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

use super::V1Error;

/// The core fields v1 took as `x-image-meta-<field>` (`IMAGE_META_HEADERS`); any other is a
/// "Bad header".
const CORE_FIELDS: [&str; 21] = [
    "location",
    "size",
    "is_public",
    "disk_format",
    "container_format",
    "name",
    "status",
    "copy_from",
    "uri",
    "checksum",
    "created_at",
    "updated_at",
    "deleted_at",
    "min_ram",
    "min_disk",
    "owner",
    "store",
    "id",
    "protected",
    "deleted",
    "virtual_size",
];
/// Formats that name a kernel, ramdisk or machine image: disk and container format must agree.
const AMAZON_FORMATS: [&str; 3] = ["aki", "ari", "ami"];

/// What a client's `x-image-meta-*` headers ask for.
#[derive(Debug, Default)]
pub struct Requested {
    /// Core fields with a v2 attribute of the same name and meaning, as v2 values: `name`,
    /// `disk_format`, `container_format`, `min_ram`, `min_disk`, `protected`, `owner`, `id`.
    pub fields: Map<String, Value>,
    pub is_public: Option<bool>,
    /// Custom properties, names lowercased and `-` made `_`, as v1 did.
    pub properties: Vec<(String, String)>,
    /// The size the client declares for the bytes it sends.
    pub size: Option<u64>,
    /// The MD5 the client declares for the bytes it sends.
    pub checksum: Option<String>,
    pub status: Option<String>,
    pub copy_from: Option<String>,
}

/// Reads and checks a request's `x-image-meta-*` headers. Fields v2 does not let a client set
/// and v1 let it set only as an admin (`created_at`, `updated_at`, `deleted_at`, `deleted`,
/// `virtual_size`, `store`) are checked for their type and otherwise not used.
pub fn read_headers(headers: &HeaderMap) -> Result<Requested, V1Error> {
    let mut asked = Requested::default();
    for (name, value) in headers {
        let name = name.as_str();
        let bad_header = || V1Error::BadRequest(format!("Bad header: {name}"));
        if let Some(key) = name.strip_prefix(PROPERTY_PREFIX) {
            let value = std::str::from_utf8(value.as_bytes()).map_err(|_| bad_header())?;
            let key = key.replace('-', "_");
            asked.properties.retain(|(k, _)| *k != key);
            asked.properties.push((key, value.to_owned()));
            continue;
        }
        let Some(field) = name.strip_prefix(META_PREFIX) else { continue };
        let field = field.replace('-', "_");
        if !CORE_FIELDS.contains(&field.as_str()) {
            return Err(bad_header());
        }
        let text = std::str::from_utf8(value.as_bytes()).map_err(|_| bad_header())?;
        match field.as_str() {
            "name" => {
                let length = text.chars().count();
                if length > 255 {
                    return Err(V1Error::BadRequest(format!("Image name too long: {length}")));
                }
                asked.fields.insert(field, Value::from(text));
            }
            "disk_format" | "container_format" | "owner" | "id" => drop(asked.fields.insert(field, Value::from(text))),
            "min_ram" | "min_disk" => drop(asked.fields.insert(field.clone(), Value::from(count(&field, text)?))),
            "size" => asked.size = Some(count(&field, text)?),
            "virtual_size" if text == "None" => {}
            "virtual_size" => drop(count(&field, text)?),
            "is_public" => asked.is_public = Some(bool_from_string(text)),
            "protected" => drop(asked.fields.insert(field, Value::Bool(bool_from_string(text)))),
            "checksum" if text.len() > 32 => {
                return Err(V1Error::BadRequest(format!("Invalid checksum '{text}': can't exceed 32 characters")))
            }
            "checksum" => asked.checksum = Some(text.to_owned()),
            "status" => asked.status = Some(text.to_owned()),
            "copy_from" => asked.copy_from = Some(text.to_owned()),
            "created_at" | "updated_at" | "deleted_at"
                if !text.is_empty() && crate::mapping::view::utc_microseconds(text).is_err() =>
            {
                return Err(V1Error::BadRequest(format!("Invalid time format for {field}.")));
            }
            "location" | "uri" => {
                return Err(V1Error::BadRequest(format!(
                    "{name} is not supported here: Glance v2 does not let clients set image locations; \
                     send the image data, or x-glance-api-copy-from"
                )))
            }
            // `deleted` and `store`: nothing v2 lets a client set.
            _ => {}
        }
    }
    amazon_formats(&mut asked.fields)?;
    Ok(asked)
}

/// v1's `int()` of a count, at least 0.
fn count(key: &str, text: &str) -> Result<u64, V1Error> {
    let invalid = |why: String| V1Error::BadRequest(format!("Invalid value '{text}' for parameter '{key}': {why}"));
    match text.trim().parse::<i64>() {
        Ok(n) => u64::try_from(n).map_err(|_| invalid("Cannot be a negative value.".into())),
        Err(_) => Err(invalid(format!("Cannot convert image {key} '{text}' to an integer."))),
    }
}

/// oslo's `bool_from_string`, not strict: anything but a true word is false.
pub fn bool_from_string(text: &str) -> bool {
    ["1", "t", "true", "on", "y", "yes"].iter().any(|yes| text.trim().eq_ignore_ascii_case(yes))
}

/// v1's rule for kernel, ramdisk and machine images: one format given names the other, and two
/// given must agree.
fn amazon_formats(fields: &mut Map<String, Value>) -> Result<(), V1Error> {
    let disk = fields.get("disk_format").and_then(Value::as_str).map(str::to_owned);
    let container = fields.get("container_format").and_then(Value::as_str).map(str::to_owned);
    let amazon = |f: &Option<String>| f.as_deref().is_some_and(|f| AMAZON_FORMATS.contains(&f));
    if !amazon(&disk) && !amazon(&container) {
        return Ok(());
    }
    match (disk, container) {
        (None, Some(c)) => drop(fields.insert("disk_format".into(), Value::from(c))),
        (Some(d), None) => drop(fields.insert("container_format".into(), Value::from(d))),
        (Some(d), Some(c)) if d != c => {
            return Err(V1Error::BadRequest(
                "Invalid mix of disk and container formats. When setting a disk or container format to one of \
                 'aki', 'ari', or 'ami', the container and disk formats must match."
                    .into(),
            ))
        }
        _ => {}
    }
    Ok(())
}

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

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap())).collect()
    }

    fn refused(pairs: &[(&str, &str)]) -> String {
        match read_headers(&headers(pairs)) {
            Err(V1Error::BadRequest(m)) => m,
            other => panic!("{pairs:?}: {other:?}"),
        }
    }

    #[test]
    fn request_headers_become_v2_fields_and_properties() {
        let asked = read_headers(&headers(&[
            ("x-image-meta-name", "cirros"),
            ("x-image-meta-disk-format", "qcow2"),
            ("x-image-meta-container_format", "bare"),
            ("x-image-meta-min_ram", " 64"),
            ("x-image-meta-is_public", "True"),
            ("x-image-meta-protected", "no"),
            ("x-image-meta-size", "1024"),
            ("x-image-meta-checksum", "d41d8cd98f00b204e9800998ecf8427e"),
            ("x-image-meta-property-OS-Distro", "cirros"),
            ("x-image-meta-property-empty", ""),
            ("x-image-meta-deleted", "False"),
            ("x-image-meta-virtual_size", "None"),
            ("x-glance-registry-purge-props", "false"),
            ("content-type", "application/octet-stream"),
        ]))
        .unwrap();
        assert_eq!(
            Value::Object(asked.fields),
            json!({"name": "cirros", "disk_format": "qcow2", "container_format": "bare", "min_ram": 64, "protected": false})
        );
        assert_eq!(asked.is_public, Some(true));
        assert_eq!(asked.size, Some(1024));
        assert_eq!(asked.checksum.as_deref(), Some("d41d8cd98f00b204e9800998ecf8427e"));
        assert_eq!(
            asked.properties,
            [("os_distro".to_owned(), "cirros".to_owned()), ("empty".to_owned(), String::new())]
        );
    }

    #[test]
    fn bad_headers_are_refused_as_v1_refused_them() {
        assert_eq!(refused(&[("x-image-meta-colour", "red")]), "Bad header: x-image-meta-colour");
        assert_eq!(
            refused(&[("x-image-meta-size", "big")]),
            "Invalid value 'big' for parameter 'size': Cannot convert image size 'big' to an integer."
        );
        assert_eq!(
            refused(&[("x-image-meta-min_disk", "-1")]),
            "Invalid value '-1' for parameter 'min_disk': Cannot be a negative value."
        );
        assert!(refused(&[("x-image-meta-virtual_size", "x")]).contains("'virtual_size'"));
        assert_eq!(refused(&[("x-image-meta-name", &"n".repeat(256))]), "Image name too long: 256");
        assert!(refused(&[("x-image-meta-checksum", &"0".repeat(33))]).contains("can't exceed 32 characters"));
        assert_eq!(refused(&[("x-image-meta-created_at", "never")]), "Invalid time format for created_at.");
        assert!(refused(&[("x-image-meta-location", "http://x/y")]).contains("not supported"));
        assert!(refused(&[("x-image-meta-disk_format", "aki"), ("x-image-meta-container_format", "bare")])
            .starts_with("Invalid mix of disk and container formats."));
    }

    #[test]
    fn one_amazon_format_names_the_other() {
        let asked = read_headers(&headers(&[("x-image-meta-container_format", "ari")])).unwrap();
        assert_eq!(asked.fields["disk_format"], "ari");
    }

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
