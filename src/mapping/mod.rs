//! The mapping engine: declarative dialect descriptions, compiled once and then applied to
//! requests and upstream answers.
//!
//! This module is pure (no I/O, no async runtime) so that it can be unit-tested, fuzzed and
//! benchmarked alone. Reading files is the caller's business; [`Mapping::compile`] takes text.
//!
//! A mapping file has four sections:
//! - `[[route]]`: method, path template, the dialect action that serves it, the view it renders,
//!   the query map it uses and the last microversion at which the original API served it;
//! - `[query.<name>]`: client query parameters → upstream filters;
//! - `[view.<name>]`: output field → JSONPath into the upstream image, with tables and built-ins;
//! - `[table.<name>]`: value tables (`values` and an optional `default`).
//!
//! See `mappings/nova.toml` for a complete, commented example.

pub mod doc;
pub mod path;
pub mod query;
pub mod request;
pub mod route;
pub mod view;

use std::collections::HashMap;

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;

pub use doc::{for_each_object, Node, PageError, PageSummary, RawObject};
pub use path::PathExpr;
pub use query::{ParamRule, ParamTransform, QueryMap};
pub use request::{RequestError, RequestSchema};
pub use route::{split_path, ApiVersion, Lookup, Route, RouteTable};
pub use view::{parse_utc, LinkBases, PropertyNames, RenderError, Rendered, Table, Transform, View, ViewContext};

/// A mapping file that cannot be used, with where and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}: {key}: {problem}")]
pub struct MappingError {
    pub file: String,
    /// Dotted key inside the file, e.g. `view.image_detail.status.table`.
    pub key: String,
    pub problem: String,
}

/// What a dialect's action needs from the routes that name it.
#[derive(Clone, Copy, Debug)]
pub struct ActionSpec {
    pub name: &'static str,
    pub needs_view: bool,
    pub needs_query: bool,
    pub needs_request: bool,
}

/// A compiled mapping file.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub dialect: String,
    pub routes: RouteTable,
    views: HashMap<String, View>,
    queries: HashMap<String, QueryMap>,
    requests: HashMap<String, RequestSchema>,
}

impl Mapping {
    pub fn view(&self, name: &str) -> Option<&View> {
        self.views.get(name)
    }

    pub fn query(&self, name: &str) -> Option<&QueryMap> {
        self.queries.get(name)
    }

    pub fn request(&self, name: &str) -> Option<&RequestSchema> {
        self.requests.get(name)
    }

    /// Parses and checks a mapping file. `file` only names it in errors; `dialect` is the
    /// dialect the file must declare and `actions` the handlers that dialect implements.
    pub fn compile(file: &str, text: &str, dialect: &str, actions: &[ActionSpec]) -> Result<Mapping, MappingError> {
        let err = |key: &str, problem: String| MappingError { file: file.to_owned(), key: key.to_owned(), problem };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let key = e.span().map_or_else(String::new, |span| line_of(text, span.start));
            err(&key, e.message().to_owned())
        })?;
        if raw.dialect != dialect {
            return Err(err("dialect", format!("expected `{dialect}`, found `{}`", raw.dialect)));
        }

        let mut tables = HashMap::new();
        for (name, t) in raw.table {
            tables.insert(name, Table { values: t.values, default: t.default });
        }

        let mut views = HashMap::new();
        for (view_name, fields) in raw.view {
            let mut compiled = Vec::with_capacity(fields.len());
            for (field_name, f) in fields {
                let key = format!("view.{view_name}.{field_name}");
                let path = PathExpr::parse(&f.path)
                    .map_err(|p| err(&format!("{key}.path"), format!("bad JSONPath `{}`: {p}", f.path)))?;
                let table = f
                    .table
                    .map(|t| {
                        tables
                            .get(&t)
                            .cloned()
                            .ok_or_else(|| err(&format!("{key}.table"), format!("no table named `{t}`")))
                    })
                    .transpose()?;
                let transform = f
                    .transform
                    .map(|t| {
                        Transform::by_name(&t).ok_or_else(|| {
                            err(&format!("{key}.transform"), unknown("built-in transform", &t, Transform::NAMES))
                        })
                    })
                    .transpose()?;
                compiled.push(view::Field {
                    name: field_name,
                    path,
                    table,
                    transform,
                    default: f.default,
                    omit_when_missing: f.omit_when_missing,
                });
            }
            views.insert(view_name, View { fields: compiled });
        }

        let mut queries = HashMap::new();
        for (name, q) in raw.query {
            let rule = |key: String, r: RawParam| -> Result<ParamRule, MappingError> {
                let transform = r
                    .transform
                    .map(|t| {
                        ParamTransform::by_name(&t).ok_or_else(|| {
                            err(&format!("{key}.transform"), unknown("query transform", &t, ParamTransform::NAMES))
                        })
                    })
                    .transpose()?;
                Ok(ParamRule { upstream: r.upstream, value_prefix: r.value_prefix, transform })
            };
            let mut map = QueryMap::default();
            for (param, r) in q.param {
                let compiled = rule(format!("query.{name}.param.{param}"), r)?;
                map.params.insert(param, compiled);
            }
            for (prefix, r) in q.prefix {
                let compiled = rule(format!("query.{name}.prefix.{prefix}"), r)?;
                map.prefixes.push((prefix, compiled));
            }
            queries.insert(name, map);
        }

        let requests: HashMap<String, RequestSchema> = raw
            .request
            .into_iter()
            .map(|(name, r)| (name, RequestSchema { root: r.root, fields: r.fields, read_only: r.read_only }))
            .collect();

        let mut routes = RouteTable::default();
        for (i, r) in raw.route.into_iter().enumerate() {
            let key = format!("route[{i}]");
            let spec = actions.iter().find(|a| a.name == r.action).ok_or_else(|| {
                err(
                    &format!("{key}.action"),
                    unknown("action", &r.action, &actions.iter().map(|a| (a.name, ())).collect::<Vec<_>>()),
                )
            })?;
            let template = r.path.parse().map_err(|p| err(&format!("{key}.path"), p))?;
            if !r.method.bytes().all(|b| b.is_ascii_uppercase()) || r.method.is_empty() {
                return Err(err(&format!("{key}.method"), format!("`{}` is not an upper-case HTTP method", r.method)));
            }
            match (&r.view, spec.needs_view) {
                (Some(v), _) if !views.contains_key(v) => {
                    return Err(err(&format!("{key}.view"), format!("no view named `{v}`")))
                }
                (None, true) => {
                    return Err(err(
                        &format!("{key}.view"),
                        format!("action `{}` renders images and needs a view", r.action),
                    ))
                }
                _ => {}
            }
            match (&r.query, spec.needs_query) {
                (Some(q), _) if !queries.contains_key(q) => {
                    return Err(err(&format!("{key}.query"), format!("no query map named `{q}`")))
                }
                (None, true) => {
                    return Err(err(
                        &format!("{key}.query"),
                        format!("action `{}` lists images and needs a query map", r.action),
                    ))
                }
                _ => {}
            }
            match (&r.request, spec.needs_request) {
                (Some(q), _) if !requests.contains_key(q) => {
                    return Err(err(&format!("{key}.request"), format!("no request schema named `{q}`")))
                }
                (None, true) => {
                    return Err(err(
                        &format!("{key}.request"),
                        format!("action `{}` reads a body and needs a request schema", r.action),
                    ))
                }
                _ => {}
            }
            let max_version = r
                .max_version
                .map(|v| {
                    v.parse()
                        .map_err(|()| err(&format!("{key}.max_version"), format!("`{v}` is not a MAJOR.MINOR version")))
                })
                .transpose()?;
            routes
                .insert(Route {
                    id: r.id.into(),
                    method: r.method,
                    template,
                    action: r.action,
                    view: r.view.map(Into::into),
                    query: r.query,
                    request: r.request,
                    max_version,
                })
                .map_err(|p| err(&key, p))?;
        }

        Ok(Mapping { dialect: raw.dialect, routes, views, queries, requests })
    }
}

fn unknown<T>(what: &str, name: &str, known: &[(&str, T)]) -> String {
    let names: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
    format!("unknown {what} `{name}` (known: {})", names.join(", "))
}

fn line_of(text: &str, offset: usize) -> String {
    let line = text[..offset.min(text.len())].matches('\n').count() + 1;
    format!("line {line}")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    dialect: String,
    #[serde(default)]
    route: Vec<RawRoute>,
    #[serde(default)]
    view: IndexMap<String, IndexMap<String, RawField>>,
    #[serde(default)]
    table: IndexMap<String, RawTable>,
    #[serde(default)]
    query: IndexMap<String, RawQuery>,
    #[serde(default)]
    request: IndexMap<String, RawRequest>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    root: String,
    fields: IndexMap<String, request::FieldRule>,
    #[serde(default)]
    read_only: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    id: String,
    method: String,
    path: String,
    action: String,
    view: Option<String>,
    query: Option<String>,
    request: Option<String>,
    max_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    path: String,
    table: Option<String>,
    transform: Option<String>,
    default: Option<Value>,
    #[serde(default)]
    omit_when_missing: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    values: IndexMap<String, Value>,
    default: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuery {
    #[serde(default)]
    param: IndexMap<String, RawParam>,
    #[serde(default)]
    prefix: IndexMap<String, RawParam>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParam {
    upstream: String,
    #[serde(default)]
    value_prefix: String,
    transform: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ACTIONS: &[ActionSpec] = &[
        ActionSpec { name: "list", needs_view: true, needs_query: true, needs_request: false },
        ActionSpec { name: "show", needs_view: true, needs_query: false, needs_request: false },
    ];

    const GOOD: &str = r#"
dialect = "demo"

[[route]]
id = "demo.list"
method = "GET"
path = "/things"
action = "list"
view = "thing"
query = "filters"

[[route]]
id = "demo.show"
method = "GET"
path = "/things/{id}"
action = "show"
view = "thing"
max_version = "2.35"

[query.filters]
param.state = { upstream = "status", transform = "lowercase" }

[table.state]
values = { active = "ACTIVE" }
default = "UNKNOWN"

[view.thing]
ident = { path = "$.id" }
state = { path = "$.status", table = "state" }
size = { path = "$.size", default = 0 }
owner = { path = "$.owner", omit_when_missing = true }
"#;

    fn compile(text: &str) -> Result<Mapping, MappingError> {
        Mapping::compile("demo.toml", text, "demo", ACTIONS)
    }

    #[test]
    fn a_good_file_compiles_and_renders_in_file_order() {
        let m = compile(GOOD).unwrap();
        let base = PropertyNames::default();
        let links = LinkBases::default();
        let ctx = ViewContext { links: &links, base_properties: &base };
        let out = m.view("thing").unwrap().render(&json!({"id": "a", "status": "queued", "size": null}), &ctx).unwrap();
        assert_eq!(serde_json::to_string(&out).unwrap(), r#"{"ident":"a","state":"UNKNOWN","size":0}"#);
        let q = m.query("filters").unwrap().translate(&[("state".into(), "X".into())]);
        assert_eq!(q, vec![("status".to_string(), "x".to_string())]);
    }

    /// Each broken variant of GOOD must be refused, naming the key at fault.
    #[test]
    fn errors_name_the_key_and_the_problem() {
        let cases = [
            (
                "path = \"$.status\", table = \"state\"",
                "path = \"$.status[\", table = \"state\"",
                "view.thing.state.path",
                "bad JSONPath",
            ),
            ("table = \"state\"", "table = \"nope\"", "view.thing.state.table", "no table named `nope`"),
            (
                "path = \"$.id\" }",
                "path = \"$.id\", transform = \"shout\" }",
                "view.thing.ident.transform",
                "unknown built-in transform `shout`",
            ),
            ("action = \"show\"", "action = \"destroy\"", "route[1].action", "unknown action `destroy`"),
            ("path = \"/things/{id}\"", "path = \"/things/{name}\"\nquery = \"filters\"", "route[1].query", ""),
            ("max_version = \"2.35\"", "max_version = \"2.035\"", "route[1].max_version", "not a MAJOR.MINOR"),
            (
                "transform = \"lowercase\"",
                "transform = \"upper\"",
                "query.filters.param.state.transform",
                "unknown query transform",
            ),
            ("view = \"thing\"\nquery", "view = \"thang\"\nquery", "route[0].view", "no view named `thang`"),
        ];
        for (from, to, key, problem) in cases {
            let text = GOOD.replacen(from, to, 1);
            assert_ne!(text, GOOD, "case {key} did not change the file");
            match compile(&text) {
                Err(e) => {
                    assert_eq!(e.key, key, "{e}");
                    assert!(e.problem.contains(problem), "{e}");
                    assert!(e.to_string().starts_with("demo.toml: "), "{e}");
                }
                // The `{name}` variant compiles (a query map may be attached to any route).
                Ok(_) if problem.is_empty() => {}
                Ok(_) => panic!("case {key} compiled"),
            }
        }
    }

    #[test]
    fn overlapping_routes_are_refused() {
        let text = format!("{GOOD}\n[[route]]\nid = \"demo.show2\"\nmethod = \"GET\"\npath = \"/things/{{other}}\"\naction = \"show\"\nview = \"thing\"\n");
        let e = compile(&text).unwrap_err();
        assert_eq!(e.key, "route[2]");
        assert!(e.problem.contains("overlaps route `demo.show`"), "{e}");
    }

    #[test]
    fn unknown_keys_and_wrong_dialect_are_refused() {
        let e = compile(&GOOD.replace("omit_when_missing", "omit_if_missing")).unwrap_err();
        assert!(e.problem.contains("unknown field `omit_if_missing`"), "{e}");
        assert!(e.key.starts_with("line "), "{e}");
        let e = compile(&GOOD.replace("dialect = \"demo\"", "dialect = \"nova\"")).unwrap_err();
        assert_eq!(e.key, "dialect");
    }

    #[test]
    fn actions_that_render_need_a_view() {
        let text = GOOD.replacen("view = \"thing\"\nmax_version", "max_version", 1);
        let e = compile(&text).unwrap_err();
        assert_eq!((e.key.as_str(), e.problem.contains("needs a view")), ("route[1].view", true));
    }
}
