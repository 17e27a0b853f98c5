//! Views: how one upstream image becomes one client-side object.
//!
//! A view is an ordered list of output fields. Each field reads a value with a JSONPath, then,
//! if the value is there, maps it through a table and/or a named built-in transform. A missing
//! or null value becomes the field's `default`, or drops the field (`omit_when_missing`), or is
//! emitted as null. Built-ins exist only for what a path and a table cannot say (links, the
//! metadata split, date formats); their names are checked when the file is loaded.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use super::doc::{Members, Node, RawObject};
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

/// A set of image property names. Looked up for every key of every image listed, so hashed with
/// foldhash: the names are Glance's schema's, not an attacker's choice of keys.
pub type PropertyNames = HashSet<String, foldhash::fast::RandomState>;

/// Everything a view may need besides the image itself. Plain data: rendering does no I/O.
#[derive(Clone, Copy, Debug)]
pub struct ViewContext<'a> {
    pub links: &'a LinkBases,
    /// Glance's base (core) image properties; every other key is a custom property.
    pub base_properties: &'a PropertyNames,
}

/// A value table such as Glance status → Nova status.
#[derive(Clone, Debug)]
pub struct Table {
    pub values: indexmap::IndexMap<String, Value>,
    /// Used for a value the table does not list; without it such a value passes unchanged.
    pub default: Option<Value>,
}

impl Table {
    /// The value `value` maps to; `None`: it passes unchanged.
    fn apply(&self, value: &Node<'_>) -> Option<&Value> {
        let mapped = value.as_str().and_then(|key| self.values.get(key.as_ref()));
        mapped.or(self.default.as_ref())
    }
}

/// The built-in transforms a mapping file may name, each with its `args` checked at load.
/// They are named for what they do, not for a dialect: any mapping file may use any of them.
#[derive(Clone, Debug, PartialEq)]
pub enum Transform {
    /// Any RFC 3339 time (or a zoneless one, taken as UTC) → `YYYY-MM-DDThh:mm:ssZ` in UTC,
    /// without a fraction (oslo's `isotime`, as Nova writes times).
    UtcSeconds,
    /// The same times → `YYYY-MM-DDThh:mm:ss.ffffff` in UTC, without a zone (Python's
    /// `isoformat` of a naive UTC time, as Glance v1 wrote them).
    UtcMicroseconds,
    /// A truthy string (`1/t/true/on/y/yes`, any case, as oslo's `bool_from_string`) → `yes`,
    /// anything else → `no`. Args: `yes`, `no` (any JSON values).
    Truthy { yes: Value, no: Value },
    /// An id → the `[self, bookmark(, alternate)]` links of `<collection>/<id>`. Args:
    /// `collection`, `alternate` (whether to add the image service's link; default false).
    Links { collection: String, alternate: bool },
    /// An id → `{"id": <id>, "links": [self, bookmark]}` of `<collection>/<id>`. Args: `collection`.
    IdAndLinks { collection: String },
    /// A whole image → its custom (non-base) properties. Args: `decode_json` (keys whose
    /// string value is handed back decoded when it holds JSON), `keep_internal` (keep
    /// Glance's own `os_glance_*` bookkeeping; default false).
    CustomProperties(PropertyRule),
    /// Lowercases a string.
    Lowercase,
}

/// How [`Transform::CustomProperties`] picks and shapes an image's custom properties.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyRule {
    #[serde(default)]
    pub decode_json: Vec<String>,
    #[serde(default)]
    pub keep_internal: bool,
}

/// A transform's `args` as the mapping file gives them, before they are checked.
type Args = serde_json::Map<String, Value>;

impl Transform {
    /// Every transform name, for errors.
    pub const NAMES: &'static [&'static str] =
        &["utc_seconds", "utc_microseconds", "truthy", "links", "id_and_links", "custom_properties", "lowercase"];

    /// The transform `name` with its `args`; `Err` says what is wrong with either.
    pub fn compile(name: &str, args: Args) -> Result<Transform, String> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct NoArgs {}
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct TruthyArgs {
            yes: Value,
            no: Value,
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct LinksArgs {
            collection: String,
            #[serde(default)]
            alternate: bool,
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct IdArgs {
            collection: String,
        }
        fn read<T: serde::de::DeserializeOwned>(args: Args) -> Result<T, String> {
            serde_json::from_value(Value::Object(args)).map_err(|e| format!("bad args: {e}"))
        }
        fn checked_collection(collection: String) -> Result<String, String> {
            if collection.is_empty() || collection.contains(['/', '?', '#']) {
                return Err(format!("bad args: `{collection}` is not a collection name"));
            }
            Ok(collection)
        }
        Ok(match name {
            "utc_seconds" => read::<NoArgs>(args).map(|_| Transform::UtcSeconds)?,
            "utc_microseconds" => read::<NoArgs>(args).map(|_| Transform::UtcMicroseconds)?,
            "lowercase" => read::<NoArgs>(args).map(|_| Transform::Lowercase)?,
            "truthy" => {
                let TruthyArgs { yes, no } = read(args)?;
                Transform::Truthy { yes, no }
            }
            "links" => {
                let LinksArgs { collection, alternate } = read(args)?;
                Transform::Links { collection: checked_collection(collection)?, alternate }
            }
            "id_and_links" => {
                let IdArgs { collection } = read(args)?;
                Transform::IdAndLinks { collection: checked_collection(collection)? }
            }
            "custom_properties" => Transform::CustomProperties(read(args)?),
            other => return Err(format!("unknown built-in transform `{other}` (known: {})", Self::NAMES.join(", "))),
        })
    }

    /// The name a mapping file gives this transform.
    pub fn name(&self) -> &'static str {
        match self {
            Transform::UtcSeconds => "utc_seconds",
            Transform::UtcMicroseconds => "utc_microseconds",
            Transform::Truthy { .. } => "truthy",
            Transform::Links { .. } => "links",
            Transform::IdAndLinks { .. } => "id_and_links",
            Transform::CustomProperties(_) => "custom_properties",
            Transform::Lowercase => "lowercase",
        }
    }

    /// Links and property maps are not built here: they borrow the image and the context and
    /// are written out when the answer is serialized.
    fn apply<'a>(&'a self, value: Node<'a>, ctx: &ViewContext<'a>) -> Result<Out<'a>, String> {
        Ok(match self {
            Transform::UtcSeconds => {
                let raw = expect_str(&value, "a date")?;
                // Glance v2 writes its times this way already: those need no reformatting.
                if is_utc_seconds(&raw) {
                    drop(raw);
                    Out::Node(value)
                } else {
                    Out::owned(Value::String(utc_seconds(&raw)?))
                }
            }
            Transform::UtcMicroseconds => Out::owned(Value::String(utc_microseconds(&expect_str(&value, "a date")?)?)),
            Transform::Truthy { yes, no } => {
                let text = expect_str(&value, "a string")?;
                let truthy = ["1", "t", "true", "on", "y", "yes"].iter().any(|y| text.eq_ignore_ascii_case(y));
                Out::Node(Node::Tree(if truthy { yes } else { no }))
            }
            Transform::Links { collection, alternate } => Out::Links(Links {
                bases: ctx.links,
                collection,
                id: expect_doc_str(&value, "an id")?,
                alternate: *alternate,
            }),
            Transform::IdAndLinks { collection } => Out::Server(Links {
                bases: ctx.links,
                collection,
                id: expect_doc_str(&value, "an id")?,
                alternate: false,
            }),
            Transform::CustomProperties(rule) => {
                if value.members_in_doc().is_none() {
                    return Err("expected an image object".into());
                }
                Out::Properties(Properties { image: value, base: ctx.base_properties, rule })
            }
            Transform::Lowercase => Out::owned(Value::from(expect_str(&value, "a string")?.to_lowercase())),
        })
    }
}

fn expect_str<'v>(value: &'v Node<'_>, what: &str) -> Result<Cow<'v, str>, String> {
    value.as_str().ok_or_else(|| format!("expected {what} string, found {}", value.to_value()))
}

fn expect_doc_str<'a>(value: &Node<'a>, what: &str) -> Result<Cow<'a, str>, String> {
    value.str_in_doc().ok_or_else(|| format!("expected {what} string, found {}", value.to_value()))
}

/// Any RFC 3339 time, or a zoneless one (Glance's database times: UTC), in UTC.
fn utc_time(raw: &str) -> Result<OffsetDateTime, String> {
    let parsed = OffsetDateTime::parse(raw, &Rfc3339).or_else(|_| {
        let naive = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]");
        PrimitiveDateTime::parse(raw, naive).map(PrimitiveDateTime::assume_utc)
    });
    Ok(parsed.map_err(|_| format!("`{raw}` is not an ISO 8601 time"))?.to_offset(UtcOffset::UTC))
}

/// A time as oslo's `isotime` writes it: `YYYY-MM-DDThh:mm:ssZ`.
pub fn utc_seconds(raw: &str) -> Result<String, String> {
    let out = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    utc_time(raw)?.format(out).map_err(|e| e.to_string())
}

/// A time as Python's `isoformat` writes a naive UTC one with its microseconds:
/// `YYYY-MM-DDThh:mm:ss.ffffff`.
pub fn utc_microseconds(raw: &str) -> Result<String, String> {
    let out = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]");
    utc_time(raw)?.format(out).map_err(|e| e.to_string())
}

/// Whether `raw` is a valid time already in the form `YYYY-MM-DDThh:mm:ssZ`.
fn is_utc_seconds(raw: &str) -> bool {
    let b = raw.as_bytes();
    let shaped = b.len() == 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':' && b[16] == b':';
    if !shaped || b[19] != b'Z' {
        return false;
    }
    let number = |at: usize, len: usize| {
        b[at..at + len].iter().try_fold(0u16, |n, d| d.is_ascii_digit().then(|| n * 10 + u16::from(d - b'0')))
    };
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) =
        (number(0, 4), number(5, 2), number(8, 2), number(11, 2), number(14, 2), number(17, 2))
    else {
        return false;
    };
    let date = u8::try_from(month)
        .ok()
        .and_then(|m| time::Month::try_from(m).ok())
        .and_then(|m| time::Date::from_calendar_date(i32::from(year), m, day as u8).ok());
    date.is_some() && hour < 24 && minute < 60 && second < 60
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

/// One image as the client will see it. It borrows from the image, the mapping and the context
/// instead of copying into a new `Value`: the answer is serialized straight from it, which
/// halves the work of reshaping a large list.
#[derive(Debug)]
pub struct Rendered<'a> {
    entries: Vec<(Cow<'a, str>, Out<'a>)>,
}

/// One output value.
#[derive(Debug)]
enum Out<'a> {
    Node(Node<'a>),
    Links(Links<'a>),
    /// `{"id": ..., "links": [...]}`.
    Server(Links<'a>),
    Properties(Properties<'a>),
}

impl Out<'_> {
    fn owned(value: Value) -> Out<'static> {
        Out::Node(Node::Owned(value))
    }
}

/// The link list of one resource.
#[derive(Clone, Debug)]
struct Links<'a> {
    bases: &'a LinkBases,
    collection: &'a str,
    id: Cow<'a, str>,
    alternate: bool,
}

/// The custom properties of an image, chosen and decoded as they are written out.
#[derive(Clone, Debug)]
struct Properties<'a> {
    /// An object whose members are the document's ([`Node::members_in_doc`]).
    image: Node<'a>,
    base: &'a PropertyNames,
    rule: &'a PropertyRule,
}

impl<'a> Properties<'a> {
    fn iter(&self) -> impl Iterator<Item = (&'a str, Node<'a>)> + '_ {
        let members = self.image.members_in_doc().unwrap_or(Members::Raw([].iter()));
        let rule = self.rule;
        members
            .filter(move |(k, _)| !self.base.contains(*k) && (rule.keep_internal || !k.starts_with("os_glance_")))
            .map(move |(k, v)| {
                if rule.decode_json.iter().any(|d| d == k) {
                    if let Some(decoded) = v.as_str().and_then(|s| serde_json::from_str(&s).ok()) {
                        return (k, Node::Owned(decoded));
                    }
                }
                (k, v)
            })
    }
}

impl View {
    /// Renders one image into a JSON value, for answers that are edited before they are sent.
    pub fn render(&self, image: &Value, ctx: &ViewContext<'_>) -> Result<Value, RenderError> {
        let rendered = self.render_ref(Node::Tree(image), ctx)?;
        serde_json::to_value(&rendered).map_err(|e| RenderError { field: SPREAD.into(), problem: e.to_string() })
    }

    /// Renders one image, borrowing from it: serialize the result to answer.
    pub fn render_ref<'a>(&'a self, image: Node<'a>, ctx: &ViewContext<'a>) -> Result<Rendered<'a>, RenderError> {
        let mut fields = Vec::with_capacity(self.fields.len());
        for field in &self.fields {
            if let Some(out) = field.out(image.clone(), ctx)? {
                fields.push((field, out));
            }
        }
        if !fields.iter().any(|(f, _)| f.name == SPREAD) {
            let entries = fields.into_iter().map(|(f, out)| (Cow::Borrowed(f.name.as_str()), out)).collect();
            return Ok(Rendered { entries });
        }
        // Spread an object's keys into the output. A key that a named field of the view
        // rendered stays that field's, and an earlier spread wins over a later one. Views are
        // short: scanning them is cheaper than hashing every key.
        let named: Vec<&str> = fields.iter().map(|(f, _)| f.name.as_str()).filter(|n| *n != SPREAD).collect();
        let several = fields.iter().filter(|(f, _)| f.name == SPREAD).count() > 1;
        let mut entries: Vec<(Cow<'a, str>, Out<'a>)> = Vec::with_capacity(fields.len() + 8);
        let add = |key: Cow<'a, str>, value: Node<'a>, entries: &mut Vec<(Cow<'a, str>, Out<'a>)>| {
            let taken = named.contains(&key.as_ref()) || several && entries.iter().any(|(k, _)| *k == key);
            if !taken {
                entries.push((key, Out::Node(value)));
            }
        };
        for (field, out) in fields {
            if field.name != SPREAD {
                entries.push((Cow::Borrowed(field.name.as_str()), out));
                continue;
            }
            match out {
                Out::Properties(props) => props.iter().for_each(|(k, v)| add(Cow::Borrowed(k), v, &mut entries)),
                Out::Node(Node::Owned(Value::Object(map))) => {
                    map.into_iter().for_each(|(k, v)| add(Cow::Owned(k), Node::Owned(v), &mut entries))
                }
                Out::Node(Node::Owned(Value::Null)) => {}
                Out::Node(Node::Raw(raw)) if raw.get().starts_with('{') => {
                    let object = RawObject::parse(raw.get())
                        .map_err(|e| RenderError { field: field.name.clone(), problem: e.to_string() })?;
                    object.into_members().for_each(|(k, v)| add(k, Node::Raw(v), &mut entries))
                }
                Out::Node(node) if node.members_in_doc().is_some() => node
                    .members_in_doc()
                    .into_iter()
                    .flatten()
                    .for_each(|(k, v)| add(Cow::Borrowed(k), v, &mut entries)),
                other => {
                    let found = serde_json::to_value(&other).unwrap_or_default();
                    let problem = format!("`*` needs an object, found {found}");
                    return Err(RenderError { field: field.name.clone(), problem });
                }
            }
        }
        Ok(Rendered { entries })
    }
}

/// One field of a view, found when the mapping is loaded, for an action that needs that
/// field's value of an image apart from the whole answer (e.g. one metadata item): reading it
/// from the image through the field's rule, the action never depends on the field's name.
#[derive(Clone, Debug)]
pub struct FieldRef {
    view: Arc<View>,
    index: usize,
}

impl FieldRef {
    /// The first field of `view` whose transform is `transform` (a name of [`Transform::NAMES`]).
    pub fn with_transform(view: &Arc<View>, transform: &str) -> Option<FieldRef> {
        let index = view.fields.iter().position(|f| f.transform.as_ref().is_some_and(|t| t.name() == transform))?;
        Some(FieldRef { view: view.clone(), index })
    }

    /// The field's value for `image`, as the view would put it out (`None`: the view would
    /// leave the field out).
    pub fn value(&self, image: &Value, ctx: &ViewContext<'_>) -> Result<Option<Value>, RenderError> {
        let field = &self.view.fields[self.index];
        let Some(out) = field.out(Node::Tree(image), ctx)? else { return Ok(None) };
        serde_json::to_value(&out)
            .map(Some)
            .map_err(|e| RenderError { field: field.name.clone(), problem: e.to_string() })
    }
}

impl View {
    /// Renders `image` as the next element of a JSON array being written onto `out`, of which
    /// `written` elements are out already: how list answers are written, image by image.
    pub fn append_to(
        &self,
        image: Node<'_>,
        ctx: &ViewContext<'_>,
        out: &mut Vec<u8>,
        written: &mut usize,
    ) -> Result<(), RenderError> {
        let rendered = self.render_ref(image, ctx)?;
        if *written > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, &rendered)
            .map_err(|e| RenderError { field: SPREAD.into(), problem: e.to_string() })?;
        *written += 1;
        Ok(())
    }
}

impl Field {
    /// What the field puts out for `image`; `None`: nothing (missing, `omit_when_missing`).
    fn out<'a>(&'a self, image: Node<'a>, ctx: &ViewContext<'a>) -> Result<Option<Out<'a>>, RenderError> {
        let failed = |problem| RenderError { field: self.name.clone(), problem };
        Ok(Some(match self.path.eval_node(image).filter(|v| !v.is_null()) {
            // A query's matches are a new array: what is made of it cannot borrow from it.
            Some(Node::Owned(v)) => {
                let out = shape(self, Node::Tree(&v), ctx).map_err(failed)?;
                Out::owned(serde_json::to_value(&out).map_err(|e| failed(e.to_string()))?)
            }
            Some(node) => shape(self, node, ctx).map_err(failed)?,
            None => match &self.default {
                Some(default) => Out::Node(Node::Tree(default)),
                None if self.omit_when_missing => return Ok(None),
                None => Out::owned(Value::Null),
            },
        }))
    }
}

/// A present value through the field's table, then its transform.
fn shape<'a>(field: &'a Field, value: Node<'a>, ctx: &ViewContext<'a>) -> Result<Out<'a>, String> {
    let mapped = match field.table.as_ref().and_then(|table| table.apply(&value)) {
        Some(mapped) => Node::Tree(mapped),
        None => value,
    };
    match &field.transform {
        Some(t) => t.apply(mapped, ctx),
        None => Ok(Out::Node(mapped)),
    }
}

impl Serialize for Rendered<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (key, value) in &self.entries {
            map.serialize_entry(key.as_ref(), value)?;
        }
        map.end()
    }
}

impl Serialize for Out<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Out::Node(node) => node.serialize(serializer),
            Out::Links(links) => links.serialize(serializer),
            Out::Server(links) => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("id", &links.id)?;
                map.serialize_entry("links", links)?;
                map.end()
            }
            Out::Properties(props) => {
                // The count is not known without a second pass; serializers do not need it.
                let mut map = serializer.serialize_map(None)?;
                for (key, value) in props.iter() {
                    map.serialize_entry(key, &value)?;
                }
                map.end()
            }
        }
    }
}

impl Serialize for Links<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(if self.alternate { 3 } else { 2 }))?;
        seq.serialize_element(&Link { rel: "self", kind: None, base: &self.bases.versioned, to: self })?;
        seq.serialize_element(&Link { rel: "bookmark", kind: None, base: &self.bases.unversioned, to: self })?;
        if self.alternate {
            let kind = Some("application/vnd.openstack.image");
            seq.serialize_element(&Link { rel: "alternate", kind, base: &self.bases.image_service, to: self })?;
        }
        seq.end()
    }
}

/// One `{"rel", ["type",] "href"}` object; the href is written without being built first.
struct Link<'a> {
    rel: &'static str,
    kind: Option<&'static str>,
    base: &'a str,
    to: &'a Links<'a>,
}

impl Serialize for Link<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2 + usize::from(self.kind.is_some())))?;
        map.serialize_entry("rel", self.rel)?;
        if let Some(kind) = self.kind {
            map.serialize_entry("type", kind)?;
        }
        map.serialize_entry("href", &Href(self))?;
        map.end()
    }
}

struct Href<'a>(&'a Link<'a>);

impl Serialize for Href<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for Href<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let link = self.0;
        write!(f, "{}/{}/{}", link.base, link.to.collection, link.to.id)
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
        let base: PropertyNames = ["id", "name"].iter().map(|s| s.to_string()).collect();
        let links = bases();
        let out = t.apply(Node::Tree(&v), &ViewContext { links: &links, base_properties: &base })?;
        Ok(serde_json::to_value(&out).expect("a rendered value is JSON"))
    }

    fn compiled(name: &str, args: Value) -> Result<Transform, String> {
        Transform::compile(name, args.as_object().cloned().unwrap_or_default())
    }

    #[test]
    fn utc_seconds_drop_the_fraction() {
        assert_eq!(utc_seconds("2024-05-01T10:20:30Z").unwrap(), "2024-05-01T10:20:30Z");
        assert_eq!(utc_seconds("2024-05-01T10:20:30.123456Z").unwrap(), "2024-05-01T10:20:30Z");
        assert_eq!(utc_seconds("2024-05-01T12:20:30+02:00").unwrap(), "2024-05-01T10:20:30Z");
        assert_eq!(utc_seconds("2024-05-01T10:20:30.5").unwrap(), "2024-05-01T10:20:30Z");
        assert!(utc_seconds("yesterday").is_err());
        // Times already in this form are kept as they are, if they are times at all.
        for ok in ["2024-05-01T10:20:30Z", "2024-02-29T23:59:59Z", "0001-01-01T00:00:00Z"] {
            assert!(is_utc_seconds(ok), "{ok}");
            assert_eq!(utc_seconds(ok).unwrap(), ok);
        }
        for other in ["2023-02-29T10:20:30Z", "2024-13-01T10:20:30Z", "2024-05-01T24:00:00Z", "2024-05-01 10:20:30Z"] {
            assert!(!is_utc_seconds(other), "{other}");
        }
        assert!(utc_seconds("2023-02-29T10:20:30Z").is_err());
        assert!(apply(Transform::UtcSeconds, json!("2023-02-29T10:20:30Z")).is_err());
        assert_eq!(apply(Transform::UtcSeconds, json!("2024-05-01T10:20:30Z")).unwrap(), json!("2024-05-01T10:20:30Z"));
    }

    /// Glance v1's form, e.g. `2016-05-10T21:35:15.000000` in its api-ref.
    #[test]
    fn utc_microseconds_have_six_digits_and_no_zone() {
        assert_eq!(utc_microseconds("2016-05-10T21:35:15Z").unwrap(), "2016-05-10T21:35:15.000000");
        assert_eq!(utc_microseconds("2016-05-10T23:35:15.5+02:00").unwrap(), "2016-05-10T21:35:15.500000");
        assert_eq!(utc_microseconds("2016-05-10T21:35:15.123456").unwrap(), "2016-05-10T21:35:15.123456");
        assert!(apply(Transform::UtcMicroseconds, json!("2023-02-29T10:20:30Z")).is_err());
    }

    #[test]
    fn truthy_follows_oslo_truthiness() {
        let t = compiled("truthy", json!({"yes": "AUTO", "no": "MANUAL"})).unwrap();
        for yes in ["True", "1", "t", "ON", "y", "yes"] {
            assert_eq!(apply(t.clone(), json!(yes)).unwrap(), json!("AUTO"), "{yes}");
        }
        for no in ["False", "0", "", "maybe"] {
            assert_eq!(apply(t.clone(), json!(no)).unwrap(), json!("MANUAL"), "{no}");
        }
        assert!(apply(t, json!(true)).is_err());
    }

    #[test]
    fn links_are_self_bookmark_and_maybe_alternate() {
        let links = apply(compiled("links", json!({"collection": "images", "alternate": true})).unwrap(), json!("i1"));
        assert_eq!(
            links.unwrap(),
            json!([
                {"rel": "self", "href": "http://gw/v2.1/p1/images/i1"},
                {"rel": "bookmark", "href": "http://gw/p1/images/i1"},
                {"rel": "alternate", "type": "application/vnd.openstack.image", "href": "http://glance:9292/images/i1"}
            ])
        );
        let plain = apply(compiled("links", json!({"collection": "flavors"})).unwrap(), json!("f")).unwrap();
        assert_eq!(plain.as_array().map(Vec::len), Some(2));
        let server = apply(compiled("id_and_links", json!({"collection": "servers"})).unwrap(), json!("s1")).unwrap();
        assert_eq!(server["id"], json!("s1"));
        assert_eq!(server["links"][1]["href"], json!("http://gw/p1/servers/s1"));
    }

    /// Arguments are checked when the file is loaded, each problem named.
    #[test]
    fn transform_args_are_checked() {
        let err = |name, args| compiled(name, args).unwrap_err();
        assert!(err("links", json!({})).contains("missing field `collection`"));
        assert!(err("links", json!({"collection": "a/b"})).contains("not a collection name"));
        assert!(err("links", json!({"collection": "images", "alt": true})).contains("unknown field `alt`"));
        assert!(err("utc_seconds", json!({"x": 1})).contains("unknown field `x`"));
        assert!(err("truthy", json!({"yes": 1})).contains("missing field `no`"));
        assert!(err("custom_properties", json!({"decode_json": "mappings"})).contains("bad args"));
        assert!(err("shout", json!({})).starts_with("unknown built-in transform `shout`"));
        for name in Transform::NAMES {
            if let Ok(t) = compiled(name, json!({})) {
                assert_eq!(t.name(), *name);
            }
        }
    }

    #[test]
    fn custom_properties_are_every_non_base_key() {
        let image = json!({"id": "i", "name": "n", "os_distro": "x", "block_device_mapping": "[{\"a\": 1}]", "mappings": "not json", "os_glance_import_task": "t"});
        assert_eq!(
            apply(compiled("custom_properties", json!({})).unwrap(), image.clone()).unwrap(),
            json!({"os_distro": "x", "block_device_mapping": "[{\"a\": 1}]", "mappings": "not json"})
        );
        let decoded = json!({"decode_json": ["block_device_mapping", "mappings"], "keep_internal": true});
        assert_eq!(
            apply(compiled("custom_properties", decoded).unwrap(), image).unwrap(),
            json!({"os_distro": "x", "block_device_mapping": [{"a": 1}], "mappings": "not json", "os_glance_import_task": "t"})
        );
    }

    #[test]
    fn a_field_ref_reads_its_field_from_the_image() {
        let base: PropertyNames = ["id", "name"].iter().map(|s| s.to_string()).collect();
        let links = bases();
        let ctx = ViewContext { links: &links, base_properties: &base };
        let field = |name: &str, path: &str, transform| Field {
            name: name.into(),
            path: PathExpr::parse(path).unwrap(),
            table: None,
            transform,
            default: None,
            omit_when_missing: true,
        };
        let rule = PropertyRule { decode_json: vec!["m".into()], keep_internal: false };
        let view = Arc::new(View {
            fields: vec![
                field("ident", "$.id", None),
                field("meta_data", "$", Some(Transform::CustomProperties(rule))),
            ],
        });
        let props = FieldRef::with_transform(&view, "custom_properties").unwrap();
        let image = json!({"id": "i", "name": "n", "m": "[1]", "k": "v"});
        assert_eq!(props.value(&image, &ctx).unwrap(), Some(json!({"m": [1], "k": "v"})));
        assert!(FieldRef::with_transform(&view, "links").is_none());
    }

    #[test]
    fn spread_fields_merge_into_the_object_and_lose_to_named_ones() {
        let base: PropertyNames = ["id", "name"].iter().map(|s| s.to_string()).collect();
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
                field(SPREAD, "$", Some(Transform::CustomProperties(PropertyRule::default()))),
                field("distro", "$.os_distro", None),
            ],
        };
        let out = view.render(&json!({"id": "i", "name": "n", "os_distro": "x", "id2": "y"}), &ctx).unwrap();
        assert_eq!(serde_json::to_string(&out).unwrap(), r#"{"id":"i","os_distro":"x","id2":"y","distro":"x"}"#);
        // A named field keeps its key, wherever it stands; one that was omitted leaves it to the spread.
        let mut clash = field("os_distro", "$.name", None);
        let view = View {
            fields: vec![field(SPREAD, "$", Some(Transform::CustomProperties(PropertyRule::default()))), clash.clone()],
        };
        let out = view.render(&json!({"id": "i", "name": "n", "os_distro": "x"}), &ctx).unwrap();
        assert_eq!(serde_json::to_string(&out).unwrap(), r#"{"os_distro":"n"}"#);
        clash.path = PathExpr::parse("$.missing").unwrap();
        clash.omit_when_missing = true;
        let view = View {
            fields: vec![field(SPREAD, "$", Some(Transform::CustomProperties(PropertyRule::default()))), clash],
        };
        let out = view.render(&json!({"id": "i", "os_distro": "x"}), &ctx).unwrap();
        assert_eq!(out, json!({"os_distro": "x"}));
        // Two spreads: the first one's keys stay; a query's matches are an array, not an object.
        let view = View { fields: vec![field(SPREAD, "$.p[0]", None), field(SPREAD, "$.p[1]", None)] };
        let out = view.render(&json!({"p": [{"a": 1}, {"a": 2, "b": 3}]}), &ctx).unwrap();
        assert_eq!(out, json!({"a": 1, "b": 3}));
        let query = View { fields: vec![field(SPREAD, "$.p[*]", None)] };
        let err = query.render(&json!({"p": [{"a": 1}]}), &ctx).unwrap_err();
        assert!(err.problem.contains(r#"found [{"a":1}]"#), "{err}");
        let bad = View { fields: vec![field(SPREAD, "$.id", None)] };
        assert!(bad.render(&json!({"id": "i"}), &ctx).is_err());
    }

    #[test]
    fn tables_map_values_with_a_default() {
        let table = Table {
            values: [("active".to_string(), json!("ACTIVE"))].into_iter().collect(),
            default: Some(json!("UNKNOWN")),
        };
        let apply = |table: &Table, v: Value| table.apply(&Node::Owned(v)).cloned();
        assert_eq!(apply(&table, json!("active")), Some(json!("ACTIVE")));
        assert_eq!(apply(&table, json!("importing")), Some(json!("UNKNOWN")));
        assert_eq!(apply(&table, json!(7)), Some(json!("UNKNOWN")));
        let raw = RawObject::parse(r#"{"s": "active"}"#).unwrap();
        assert_eq!(table.apply(&Node::Object(&raw).get("s").unwrap()), Some(&json!("ACTIVE")));
        let open = Table { default: None, ..table };
        assert_eq!(apply(&open, json!("importing")), None, "unlisted values pass unchanged");
    }
}
