//! Request bodies: which fields a client may send, of which type, and under which upstream
//! name. A body that does not fit is refused with the field and the reason before anything
//! reaches the upstream.

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The JSON type a field must have.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    String,
    Integer,
    Boolean,
    StringArray,
    /// An absolute `http` or `https` URL.
    Url,
}

/// The rules for one field.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    #[serde(rename = "type")]
    pub ty: FieldType,
    /// Upstream attribute name; the field's own name when absent.
    pub upstream: Option<String>,
    #[serde(default)]
    pub nullable: bool,
    /// Smallest integer allowed.
    pub min: Option<i64>,
    /// Longest string allowed, in characters.
    pub max_length: Option<usize>,
    /// The only strings allowed.
    pub one_of: Option<Vec<String>>,
}

/// A compiled request-body schema.
#[derive(Clone, Debug)]
pub struct RequestSchema {
    /// The key the object sits under, e.g. `image` in `{"image": {...}}`.
    pub root: String,
    pub fields: IndexMap<String, FieldRule>,
    /// Attributes a client may see but never set; named in their own error.
    pub read_only: Vec<String>,
}

/// Why a body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("the body must be a JSON object with an object under `{0}`")]
    Shape(String),
    #[error("`{0}` is read-only")]
    ReadOnly(String),
    #[error("`{0}` is not a known field")]
    Unknown(String),
    #[error("`{field}` {problem}")]
    Invalid { field: String, problem: String },
}

impl RequestSchema {
    /// Checks a body and returns its fields under their upstream names, in body order.
    pub fn parse(&self, body: &Value) -> Result<Map<String, Value>, RequestError> {
        let shape = || RequestError::Shape(self.root.clone());
        let top = body.as_object().ok_or_else(shape)?;
        if let Some(extra) = top.keys().find(|k| **k != self.root) {
            return Err(RequestError::Unknown(extra.clone()));
        }
        let object = top.get(&self.root).and_then(Value::as_object).ok_or_else(shape)?;
        let mut out = Map::with_capacity(object.len());
        for (name, value) in object {
            if self.read_only.contains(name) {
                return Err(RequestError::ReadOnly(name.clone()));
            }
            let rule = self.fields.get(name).ok_or_else(|| RequestError::Unknown(name.clone()))?;
            rule.check(value).map_err(|problem| RequestError::Invalid { field: name.clone(), problem })?;
            out.insert(rule.upstream.clone().unwrap_or_else(|| name.clone()), value.clone());
        }
        Ok(out)
    }
}

impl FieldRule {
    fn check(&self, value: &Value) -> Result<(), String> {
        if value.is_null() {
            return if self.nullable { Ok(()) } else { Err("may not be null".into()) };
        }
        match (self.ty, value) {
            (FieldType::String | FieldType::Url, Value::String(s)) => self.check_str(s),
            (FieldType::Integer, Value::Number(n)) => match (n.as_i64(), self.min) {
                (Some(i), Some(min)) if i < min => Err(format!("must be at least {min}, not {i}")),
                (Some(_), _) => Ok(()),
                (None, _) => Err(format!("must be a whole number, not {n}")),
            },
            (FieldType::Boolean, Value::Bool(_)) => Ok(()),
            (FieldType::StringArray, Value::Array(items)) => items.iter().try_for_each(|item| match item {
                Value::String(s) => self.check_str(s),
                other => Err(format!("must hold only strings, not {other}")),
            }),
            (ty, other) => Err(format!("must be {}, not {other}", ty.described())),
        }
    }

    fn check_str(&self, s: &str) -> Result<(), String> {
        if let Some(max) = self.max_length.filter(|max| s.chars().count() > *max) {
            return Err(format!("must be at most {max} characters long"));
        }
        if let Some(allowed) = self.one_of.as_ref().filter(|allowed| !allowed.iter().any(|a| a == s)) {
            return Err(format!("must be one of {}, not \"{s}\"", allowed.join(", ")));
        }
        if self.ty == FieldType::Url {
            let ok = url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
            if !ok {
                return Err(format!("must be an absolute http(s) URL, not \"{s}\""));
            }
        }
        Ok(())
    }
}

impl FieldType {
    fn described(self) -> &'static str {
        match self {
            FieldType::String => "a string",
            FieldType::Integer => "a whole number",
            FieldType::Boolean => "true or false",
            FieldType::StringArray => "a list of strings",
            FieldType::Url => "a URL string",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> RequestSchema {
        let rule = |ty, extra: Value| -> FieldRule {
            let mut v = extra;
            v["type"] = serde_json::to_value(ty).unwrap();
            serde_json::from_value(v).unwrap()
        };
        let mut fields = IndexMap::new();
        fields.insert("name".to_string(), rule("string", json!({"nullable": true, "max_length": 5})));
        fields.insert("min_ram".to_string(), rule("integer", json!({"min": 0})));
        fields.insert("public".to_string(), rule("boolean", json!({"upstream": "is_public"})));
        fields.insert("tags".to_string(), rule("string_array", json!({})));
        fields.insert("copy_from".to_string(), rule("url", json!({})));
        fields.insert("visibility".to_string(), rule("string", json!({"one_of": ["public", "private"]})));
        RequestSchema { root: "image".into(), fields, read_only: vec!["id".into()] }
    }

    #[test]
    fn good_bodies_map_to_upstream_names() {
        let body = json!({"image": {"name": null, "min_ram": 0, "public": true, "tags": ["a"], "copy_from": "https://x/y.img"}});
        let out = schema().parse(&body).unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"name": null, "min_ram": 0, "is_public": true, "tags": ["a"], "copy_from": "https://x/y.img"})
        );
    }

    #[test]
    fn bad_bodies_say_which_field_and_why() {
        let s = schema();
        let err = |body: Value| s.parse(&body).unwrap_err().to_string();
        assert_eq!(err(json!([])), "the body must be a JSON object with an object under `image`");
        assert_eq!(err(json!({"image": 1})), "the body must be a JSON object with an object under `image`");
        assert_eq!(err(json!({"image": {}, "x": 1})), "`x` is not a known field");
        assert_eq!(err(json!({"image": {"id": "1"}})), "`id` is read-only");
        assert_eq!(err(json!({"image": {"size": 1}})), "`size` is not a known field");
        assert_eq!(err(json!({"image": {"min_ram": "64"}})), "`min_ram` must be a whole number, not \"64\"");
        assert_eq!(err(json!({"image": {"min_ram": -1}})), "`min_ram` must be at least 0, not -1");
        assert_eq!(err(json!({"image": {"min_ram": 1.5}})), "`min_ram` must be a whole number, not 1.5");
        assert_eq!(err(json!({"image": {"min_ram": null}})), "`min_ram` may not be null");
        assert_eq!(err(json!({"image": {"name": "toolong"}})), "`name` must be at most 5 characters long");
        assert_eq!(err(json!({"image": {"tags": ["a", 1]}})), "`tags` must hold only strings, not 1");
        assert!(err(json!({"image": {"copy_from": "file:///etc/passwd"}})).contains("absolute http(s) URL"));
        assert!(err(json!({"image": {"visibility": "all"}})).contains("must be one of public, private"));
        assert_eq!(err(json!({"image": {"public": "yes"}})), "`public` must be true or false, not \"yes\"");
    }
}
