//! Views: how one upstream image becomes one client-side object.
//!
//! A view is an ordered list of output fields. Each field reads a value with a JSONPath, then,
//! if the value is there, maps it through a table and/or a named built-in transform. A missing
//! or null value becomes the field's `default`, or drops the field (`omit_when_missing`), or is
//! emitted as null. Built-ins exist only for what a path and a table cannot say (links, the
//! metadata split, date formats); their names are checked when the file is loaded.

use std::collections::HashSet;

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use super::path::PathExpr;

/// Where links point, decided per request by the dialect (it knows the public address and the
/// project in the URL).
#[derive(Clone, Debug, Default)]
pub struct LinkBases {
    /// e.g. `http://gw/v2.1/<project>`: base of `self` links.
    pub versioned: String,
    /// e.g. `http://gw/<project>`: base of `bookmark` links.
    pub unversioned: String,
    /// e.g. `http://glance:9292`: base of `alternate` links to the image service.
    pub image_service: String,
}

/// Everything a view may need besides the image itself. Plain data: rendering does no I/O.
#[derive(Clone, Copy, Debug)]
pub struct ViewContext<'a> {
    pub links: &'a LinkBases,
    /// Glance's base (core) image properties; every other key is a custom property.
    pub base_properties: &'a HashSet<String>,
}

/// A value table such as Glance status → Nova status.
#[derive(Clone, Debug)]
pub struct Table {
    pub values: indexmap::IndexMap<String, Value>,
    /// Used for a value the table does not list; without it such a value passes unchanged.
    pub default: Option<Value>,
}

impl Table {
    fn apply(&self, value: &Value) -> Value {
        let mapped = value.as_str().and_then(|key| self.values.get(key));
        mapped.or(self.default.as_ref()).unwrap_or(value).clone()
    }
}

/// The built-in transforms a mapping file may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// Any RFC 3339 time → `YYYY-MM-DDThh:mm:ssZ` in UTC, no fraction (Nova's `isotime`).
    NovaDate,
    /// A truthy string (`1/t/true/on/y/yes`, any case) → `AUTO`, anything else → `MANUAL`.
    AutoManual,
    /// An image id → Nova's `[self, bookmark, alternate]` links.
    NovaLinks,
    /// A server id → Nova's `{"id", "links": [self, bookmark]}`.
    NovaServer,
    /// A whole image → its custom (non-base) properties, without Glance's internal
    /// `os_glance_*` bookkeeping.
    CustomProperties,
    /// As `custom_properties`, with `block_device_mapping` and `mappings` JSON-decoded as Nova does.
    NovaMetadata,
    /// Lowercases a string.
    Lowercase,
}

impl Transform {
    pub const NAMES: &'static [(&'static str, Transform)] = &[
        ("nova_date", Transform::NovaDate),
        ("auto_manual", Transform::AutoManual),
        ("nova_links", Transform::NovaLinks),
        ("nova_server", Transform::NovaServer),
        ("custom_properties", Transform::CustomProperties),
        ("nova_metadata", Transform::NovaMetadata),
        ("lowercase", Transform::Lowercase),
    ];

    pub fn by_name(name: &str) -> Option<Transform> {
        Self::NAMES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }

    fn apply(self, value: &Value, ctx: &ViewContext<'_>) -> Result<Value, String> {
        match self {
            Transform::NovaDate => nova_date(expect_str(value, "a date")?).map(Value::String),
            Transform::AutoManual => {
                let truthy = matches!(
                    expect_str(value, "a string")?.to_ascii_lowercase().as_str(),
                    "1" | "t" | "true" | "on" | "y" | "yes"
                );
                Ok(Value::from(if truthy { "AUTO" } else { "MANUAL" }))
            }
            Transform::NovaLinks => {
                let id = expect_str(value, "an image id")?;
                let mut links = self_and_bookmark(ctx.links, "images", id);
                links.push(serde_json::json!({
                    "rel": "alternate",
                    "type": "application/vnd.openstack.image",
                    "href": format!("{}/images/{id}", ctx.links.image_service),
                }));
                Ok(Value::Array(links))
            }
            Transform::NovaServer => {
                let id = expect_str(value, "a server id")?;
                Ok(serde_json::json!({"id": id, "links": self_and_bookmark(ctx.links, "servers", id)}))
            }
            Transform::CustomProperties | Transform::NovaMetadata => {
                let image = value.as_object().ok_or("expected an image object")?;
                let nova = self == Transform::NovaMetadata;
                let props = image
                    .iter()
                    .filter(|(k, _)| {
                        !ctx.base_properties.contains(k.as_str()) && (nova || !k.starts_with("os_glance_"))
                    })
                    .map(|(k, v)| {
                        let v = match v {
                            Value::String(s) if nova && (k == "block_device_mapping" || k == "mappings") => {
                                serde_json::from_str(s).unwrap_or_else(|_| v.clone())
                            }
                            _ => v.clone(),
                        };
                        (k.clone(), v)
                    })
                    .collect();
                Ok(Value::Object(props))
            }
            Transform::Lowercase => Ok(Value::from(expect_str(value, "a string")?.to_lowercase())),
        }
    }
}

fn expect_str<'v>(value: &'v Value, what: &str) -> Result<&'v str, String> {
    value.as_str().ok_or_else(|| format!("expected {what} string, found {value}"))
}

fn self_and_bookmark(bases: &LinkBases, collection: &str, id: &str) -> Vec<Value> {
    vec![
        serde_json::json!({"rel": "self", "href": format!("{}/{collection}/{id}", bases.versioned)}),
        serde_json::json!({"rel": "bookmark", "href": format!("{}/{collection}/{id}", bases.unversioned)}),
    ]
}

/// Formats a Glance timestamp the way Nova's `isotime` does.
pub fn nova_date(raw: &str) -> Result<String, String> {
    let bad = |_| format!("`{raw}` is not an ISO 8601 time");
    let parsed = OffsetDateTime::parse(raw, &Rfc3339).or_else(|_| {
        // Glance's database times carry no zone; they are UTC.
        let naive = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]");
        PrimitiveDateTime::parse(raw, naive).map(PrimitiveDateTime::assume_utc)
    });
    let utc = parsed.map_err(bad)?.to_offset(UtcOffset::UTC);
    let out = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    utc.format(out).map_err(|e| e.to_string())
}

/// The field name that spreads an object's keys into the output instead of nesting it.
pub const SPREAD: &str = "*";

/// One output field.
#[derive(Clone, Debug)]
pub struct Field {
    pub name: String,
    pub path: PathExpr,
    pub table: Option<Table>,
    pub transform: Option<Transform>,
    pub default: Option<Value>,
    pub omit_when_missing: bool,
}

/// A compiled view.
#[derive(Clone, Debug)]
pub struct View {
    pub fields: Vec<Field>,
}

/// A field that could not be rendered from what the upstream sent.
#[derive(Debug, thiserror::Error)]
#[error("field `{field}`: {problem}")]
pub struct RenderError {
    pub field: String,
    pub problem: String,
}

impl View {
    pub fn render(&self, image: &Value, ctx: &ViewContext<'_>) -> Result<Value, RenderError> {
        let mut out = Map::with_capacity(self.fields.len());
        for field in &self.fields {
            // Values are borrowed from the image and copied once, into the output: a field
            // that reads the whole image (`$`) must not clone it to pick a few keys out.
            let value = match field.path.eval_ref(image).filter(|v| !v.is_null()) {
                Some(v) => match (&field.table, field.transform) {
                    (None, None) => v.into_owned(),
                    (Some(table), None) => table.apply(&v),
                    (table, Some(t)) => {
                        let mapped = table.as_ref().map(|table| table.apply(&v));
                        t.apply(mapped.as_ref().unwrap_or(&v), ctx)
                            .map_err(|problem| RenderError { field: field.name.clone(), problem })?
                    }
                },
                None if field.default.is_some() => field.default.clone().unwrap_or_default(),
                None if field.omit_when_missing => continue,
                None => Value::Null,
            };
            if field.name == SPREAD {
                // Spread an object's keys into the output; fields named explicitly win.
                match value {
                    Value::Object(map) => map.into_iter().for_each(|(k, v)| {
                        out.entry(k).or_insert(v);
                    }),
                    Value::Null => {}
                    other => {
                        let problem = format!("`*` needs an object, found {other}");
                        return Err(RenderError { field: field.name.clone(), problem });
                    }
                }
                continue;
            }
            out.insert(field.name.clone(), value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bases() -> LinkBases {
        LinkBases {
            versioned: "http://gw/v2.1/p1".into(),
            unversioned: "http://gw/p1".into(),
            image_service: "http://glance:9292".into(),
        }
    }

    fn apply(t: Transform, v: Value) -> Result<Value, String> {
        let base: HashSet<String> = ["id", "name"].iter().map(|s| s.to_string()).collect();
        let links = bases();
        t.apply(&v, &ViewContext { links: &links, base_properties: &base })
    }

    #[test]
    fn nova_dates_are_utc_without_fraction() {
        assert_eq!(nova_date("2024-05-01T10:20:30Z").unwrap(), "2024-05-01T10:20:30Z");
        assert_eq!(nova_date("2024-05-01T10:20:30.123456Z").unwrap(), "2024-05-01T10:20:30Z");
        assert_eq!(nova_date("2024-05-01T12:20:30+02:00").unwrap(), "2024-05-01T10:20:30Z");
        assert_eq!(nova_date("2024-05-01T10:20:30.5").unwrap(), "2024-05-01T10:20:30Z");
        assert!(nova_date("yesterday").is_err());
    }

    #[test]
    fn auto_manual_follows_oslo_truthiness() {
        for yes in ["True", "1", "t", "ON", "y", "yes"] {
            assert_eq!(apply(Transform::AutoManual, json!(yes)).unwrap(), json!("AUTO"), "{yes}");
        }
        for no in ["False", "0", "", "maybe"] {
            assert_eq!(apply(Transform::AutoManual, json!(no)).unwrap(), json!("MANUAL"), "{no}");
        }
        assert!(apply(Transform::AutoManual, json!(true)).is_err());
    }

    #[test]
    fn links_are_self_bookmark_alternate() {
        let links = apply(Transform::NovaLinks, json!("i1")).unwrap();
        assert_eq!(
            links,
            json!([
                {"rel": "self", "href": "http://gw/v2.1/p1/images/i1"},
                {"rel": "bookmark", "href": "http://gw/p1/images/i1"},
                {"rel": "alternate", "type": "application/vnd.openstack.image", "href": "http://glance:9292/images/i1"}
            ])
        );
        let server = apply(Transform::NovaServer, json!("s1")).unwrap();
        assert_eq!(server["links"][1]["href"], json!("http://gw/p1/servers/s1"));
    }

    #[test]
    fn metadata_is_every_non_base_key() {
        let image = json!({"id": "i", "name": "n", "os_distro": "x", "block_device_mapping": "[{\"a\": 1}]", "mappings": "not json", "os_glance_import_task": "t"});
        assert_eq!(
            apply(Transform::CustomProperties, image.clone()).unwrap(),
            json!({"os_distro": "x", "block_device_mapping": "[{\"a\": 1}]", "mappings": "not json"})
        );
        assert_eq!(
            apply(Transform::NovaMetadata, image).unwrap(),
            json!({"os_distro": "x", "block_device_mapping": [{"a": 1}], "mappings": "not json", "os_glance_import_task": "t"})
        );
    }

    #[test]
    fn spread_fields_merge_into_the_object_and_lose_to_named_ones() {
        let base: HashSet<String> = ["id", "name"].iter().map(|s| s.to_string()).collect();
        let links = bases();
        let ctx = ViewContext { links: &links, base_properties: &base };
        let field = |name: &str, path: &str, transform| Field {
            name: name.into(),
            path: PathExpr::parse(path).unwrap(),
            table: None,
            transform,
            default: None,
            omit_when_missing: false,
        };
        let view = View {
            fields: vec![
                field("id", "$.id", None),
                field(SPREAD, "$", Some(Transform::CustomProperties)),
                field("distro", "$.os_distro", None),
            ],
        };
        let out = view.render(&json!({"id": "i", "name": "n", "os_distro": "x", "id2": "y"}), &ctx).unwrap();
        assert_eq!(serde_json::to_string(&out).unwrap(), r#"{"id":"i","os_distro":"x","id2":"y","distro":"x"}"#);
        let bad = View { fields: vec![field(SPREAD, "$.id", None)] };
        assert!(bad.render(&json!({"id": "i"}), &ctx).is_err());
    }

    #[test]
    fn tables_map_values_with_a_default() {
        let table = Table {
            values: [("active".to_string(), json!("ACTIVE"))].into_iter().collect(),
            default: Some(json!("UNKNOWN")),
        };
        assert_eq!(table.apply(&json!("active")), json!("ACTIVE"));
        assert_eq!(table.apply(&json!("importing")), json!("UNKNOWN"));
        assert_eq!(table.apply(&json!(7)), json!("UNKNOWN"));
        let open = Table { default: None, ..table };
        assert_eq!(open.apply(&json!("importing")), json!("importing"));
    }
}
