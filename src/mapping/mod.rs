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
//!
//! The engine knows no dialect. A dialect plugs in with an enum of its calls implementing
//! [`Action`]: [`Mapping::<A>::compile`](Mapping::compile) binds each route's `action` to the
//! compiled view, query map, request schema or view field it uses, once, and the dialect's
//! handler matches on `route.action`. Transforms are generic, with their parameters (`args`)
//! in the file ([`Transform`]).

pub mod doc;
pub mod path;
pub mod query;
pub mod request;
pub mod route;
pub mod view;

use std::collections::HashMap;
use std::sync::Arc;

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;

pub use doc::{for_each_object, Node, PageError, PageSummary, RawObject};
pub use path::PathExpr;
pub use query::{ParamRule, ParamTransform, QueryMap};
pub use request::{RequestError, RequestSchema};
pub use route::{split_path, ApiVersion, Lookup, Params, Route, RouteTable};
pub use view::{
    FieldRef, LinkBases, PropertyNames, PropertyRule, RenderError, Rendered, Table, Transform, View, ViewContext,
};

/// A mapping file that cannot be used, with where and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}: {key}: {problem}")]
pub struct MappingError {
    pub file: String,
    /// Dotted key inside the file, e.g. `view.image_detail.status.table`.
    pub key: String,
    pub problem: String,
}

/// A dialect's actions, as the `action` of a mapping file's routes names them.
///
/// This is how a dialect plugs into the engine: its module defines an enum of the calls it
/// serves and implements this trait for it. When a file is loaded, each route's action is
/// bound once ([`Action::bind`]) to the compiled parts of the route it uses (its view, query
/// map, request schema, or one field of its view), which the enum variant keeps. A request
/// then finds its route ([`RouteTable::lookup`]) and matches on `route.action`: no name is
/// looked up per request, and a route that lacks a part its action needs never loads.
pub trait Action: Sized {
    /// What a mapping file for these actions declares as its `dialect`.
    const DIALECT: &'static str;
    /// Every action name the dialect serves, for errors.
    const NAMES: &'static [&'static str];

    /// The action `name`, bound to the parts of its route it uses; [`BindError::UnknownAction`]
    /// for a name the dialect does not serve.
    fn bind(name: &str, parts: &Parts<'_>) -> Result<Self, BindError>;
}

/// Why a route's action could not be bound.
#[derive(Debug, PartialEq, Eq)]
pub enum BindError {
    /// Not one of [`Action::NAMES`].
    UnknownAction,
    /// The route lacks what the action needs: `part` is the route's key at fault (`view`,
    /// `query`, `request`).
    Needs { part: &'static str, problem: String },
}

/// The compiled parts a route names, handed to [`Action::bind`].
#[derive(Debug)]
pub struct Parts<'a> {
    action: &'a str,
    template: &'a route::Template,
    view: Option<(&'a str, &'a Arc<View>)>,
    query: Option<&'a Arc<QueryMap>>,
    request: Option<&'a Arc<RequestSchema>>,
}

impl Parts<'_> {
    /// The route's path parameter `{name}`, for an action that reads it.
    pub fn param(&self, name: &str) -> Result<Param, BindError> {
        self.template.param_index(name).map(Param).ok_or_else(|| BindError::Needs {
            part: "path",
            problem: format!("action `{}` needs the path parameter `{{{name}}}`", self.action),
        })
    }

    /// The route's view, for an action that renders images.
    pub fn view(&self) -> Result<Arc<View>, BindError> {
        self.view.map(|(_, v)| v.clone()).ok_or_else(|| self.needs("view", "a view"))
    }

    /// The first field of the route's view with transform `transform`, for an action that
    /// needs that part of an image alone (see [`FieldRef`]).
    pub fn view_field(&self, transform: &str) -> Result<FieldRef, BindError> {
        let (name, view) = self.view.ok_or_else(|| self.needs("view", "a view"))?;
        FieldRef::with_transform(view, transform).ok_or_else(|| BindError::Needs {
            part: "view",
            problem: format!("action `{}` needs a field with transform `{transform}` in view `{name}`", self.action),
        })
    }

    /// The route's query map, for an action that lists.
    pub fn query(&self) -> Result<Arc<QueryMap>, BindError> {
        self.query.cloned().ok_or_else(|| self.needs("query", "a query map"))
    }

    /// The route's request schema, for an action that reads a body.
    pub fn request(&self) -> Result<Arc<RequestSchema>, BindError> {
        self.request.cloned().ok_or_else(|| self.needs("request", "a request schema"))
    }

    fn needs(&self, part: &'static str, what: &str) -> BindError {
        BindError::Needs { part, problem: format!("action `{}` needs {what}", self.action) }
    }
}

/// A path parameter of a route, found when the file is loaded ([`Parts::param`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param(usize);

impl Param {
    /// Its value in `params`, the parameters [`RouteTable::lookup`] found for the route
    /// this was bound on (they come in the route template's order).
    pub fn of(self, params: &route::Params) -> &str {
        params.get(self.0).map_or("", |(_, value)| value.as_str())
    }
}

/// A compiled mapping file of the dialect whose actions are `A`.
#[derive(Clone, Debug)]
pub struct Mapping<A> {
    pub routes: RouteTable<A>,
    // By name, for tools, tests and benchmarks: requests reach these through their route's
    // action (see [`Action`]).
    views: HashMap<String, Arc<View>>,
    queries: HashMap<String, Arc<QueryMap>>,
    requests: HashMap<String, Arc<RequestSchema>>,
}

impl<A> Mapping<A> {
    pub fn view(&self, name: &str) -> Option<&Arc<View>> {
        self.views.get(name)
    }

    pub fn request(&self, name: &str) -> Option<&Arc<RequestSchema>> {
        self.requests.get(name)
    }

    pub fn views(&self) -> impl Iterator<Item = &View> {
        self.views.values().map(|v| &**v)
    }

    pub fn queries(&self) -> impl Iterator<Item = &QueryMap> {
        self.queries.values().map(|q| &**q)
    }
}

impl<A: Action> Mapping<A> {
    /// Parses and checks a mapping file. `file` only names it in errors; the file must declare
    /// `A`'s dialect and name only `A`'s actions.
    pub fn compile(file: &str, text: &str) -> Result<Mapping<A>, MappingError> {
        let err = |key: &str, problem: String| MappingError { file: file.to_owned(), key: key.to_owned(), problem };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let key = e.span().map_or_else(String::new, |span| line_of(text, span.start));
            err(&key, e.message().to_owned())
        })?;
        if raw.dialect != A::DIALECT {
            return Err(err("dialect", format!("expected `{}`, found `{}`", A::DIALECT, raw.dialect)));
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
                let transform = match (f.transform, f.args) {
                    (Some(t), args) => Some(
                        Transform::compile(&t, args.unwrap_or_default())
                            .map_err(|problem| err(&format!("{key}.transform"), problem))?,
                    ),
                    (None, Some(_)) => return Err(err(&format!("{key}.args"), "args without a transform".into())),
                    (None, None) => None,
                };
                compiled.push(view::Field {
                    name: field_name,
                    path,
                    table,
                    transform,
                    default: f.default,
                    omit_when_missing: f.omit_when_missing,
                });
            }
            views.insert(view_name, Arc::new(View { fields: compiled }));
        }

        let mut queries = HashMap::new();
        for (name, q) in raw.query {
            let rule = |key: String, r: RawParam| -> Result<ParamRule, MappingError> {
                let transform = r
                    .transform
                    .map(|t| {
                        ParamTransform::by_name(&t).ok_or_else(|| {
                            let names: Vec<&str> = ParamTransform::NAMES.iter().map(|(n, _)| *n).collect();
                            err(&format!("{key}.transform"), unknown("query transform", &t, &names))
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
            queries.insert(name, Arc::new(map));
        }

        let requests: HashMap<String, Arc<RequestSchema>> = raw
            .request
            .into_iter()
            .map(|(name, r)| (name, Arc::new(RequestSchema { root: r.root, fields: r.fields, read_only: r.read_only })))
            .collect();

        let mut routes = RouteTable::default();
        for (i, r) in raw.route.into_iter().enumerate() {
            let key = format!("route[{i}]");
            let template = r.path.parse().map_err(|p| err(&format!("{key}.path"), p))?;
            if !r.method.bytes().all(|b| b.is_ascii_uppercase()) || r.method.is_empty() {
                return Err(err(&format!("{key}.method"), format!("`{}` is not an upper-case HTTP method", r.method)));
            }
            // A part the route names must exist, whether or not its action uses it.
            let view = match &r.view {
                Some(v) => Some((
                    v.as_str(),
                    views.get(v).ok_or_else(|| err(&format!("{key}.view"), format!("no view named `{v}`")))?,
                )),
                None => None,
            };
            let query = match &r.query {
                Some(q) => Some(
                    queries.get(q).ok_or_else(|| err(&format!("{key}.query"), format!("no query map named `{q}`")))?,
                ),
                None => None,
            };
            let request = match &r.request {
                Some(q) => Some(
                    requests
                        .get(q)
                        .ok_or_else(|| err(&format!("{key}.request"), format!("no request schema named `{q}`")))?,
                ),
                None => None,
            };
            let parts = Parts { action: &r.action, template: &template, view, query, request };
            let action = A::bind(&r.action, &parts).map_err(|e| match e {
                BindError::UnknownAction => err(&format!("{key}.action"), unknown("action", &r.action, A::NAMES)),
                BindError::Needs { part, problem } => err(&format!("{key}.{part}"), problem),
            })?;
            let max_version = r
                .max_version
                .map(|v| {
                    v.parse()
                        .map_err(|()| err(&format!("{key}.max_version"), format!("`{v}` is not a MAJOR.MINOR version")))
                })
                .transpose()?;
            routes
                .insert(Route { id: r.id.into(), method: r.method, template, action, max_version })
                .map_err(|p| err(&key, p))?;
        }

        Ok(Mapping { routes, views, queries, requests })
    }
}

fn unknown(what: &str, name: &str, known: &[&str]) -> String {
    format!("unknown {what} `{name}` (known: {})", known.join(", "))
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
    /// The transform's arguments, checked by the transform when the file is loaded.
    args: Option<serde_json::Map<String, Value>>,
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

    /// A dialect of two actions, bound as a real dialect binds its own.
    #[derive(Debug)]
    enum Demo {
        List { view: Arc<View>, query: Arc<QueryMap> },
        Show { view: Arc<View>, id: Param },
        Props { props: FieldRef },
    }

    impl Action for Demo {
        const DIALECT: &'static str = "demo";
        const NAMES: &'static [&'static str] = &["list", "show", "props"];

        fn bind(name: &str, parts: &Parts<'_>) -> Result<Self, BindError> {
            Ok(match name {
                "list" => Demo::List { view: parts.view()?, query: parts.query()? },
                "show" => Demo::Show { view: parts.view()?, id: parts.param("id")? },
                "props" => Demo::Props { props: parts.view_field("custom_properties")? },
                _ => return Err(BindError::UnknownAction),
            })
        }
    }

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

    fn compile(text: &str) -> Result<Mapping<Demo>, MappingError> {
        Mapping::compile("demo.toml", text)
    }

    /// Routes come out with their actions bound to the compiled parts they name.
    #[test]
    fn a_good_file_compiles_and_renders_in_file_order() {
        let m = compile(GOOD).unwrap();
        let base = PropertyNames::default();
        let links = LinkBases::default();
        let ctx = ViewContext { links: &links, base_properties: &base };
        let Lookup::Found { route, .. } = m.routes.lookup("GET", &split_path("/things").unwrap()) else {
            panic!("no list route")
        };
        let Demo::List { view, query } = &route.action else { panic!("{:?}", route.action) };
        let out = view.render(&json!({"id": "a", "status": "queued", "size": null}), &ctx).unwrap();
        assert_eq!(serde_json::to_string(&out).unwrap(), r#"{"ident":"a","state":"UNKNOWN","size":0}"#);
        let q = query.translate(&[("state".into(), "X".into())]);
        assert_eq!(q, vec![("status".to_string(), "x".to_string())]);
        let Lookup::Found { route, params } = m.routes.lookup("GET", &split_path("/things/7").unwrap()) else {
            panic!("no show route")
        };
        let Demo::Show { view: shown, id } = &route.action else { panic!("{:?}", route.action) };
        assert!(Arc::ptr_eq(view, shown), "views are compiled once and shared");
        assert_eq!(id.of(&params), "7");
    }

    #[test]
    fn transforms_take_checked_args() {
        let text = GOOD.replace(
            "ident = { path = \"$.id\" }",
            "ident = { path = \"$.id\", transform = \"links\", args = { collection = \"things\" } }",
        );
        compile(&text).unwrap();
        let e = compile(&text.replace("collection = ", "kind = ")).unwrap_err();
        assert_eq!(e.key, "view.thing.ident.transform");
        assert!(e.problem.contains("unknown field `kind`"), "{e}");
        let e = compile(&GOOD.replace("size = { path = \"$.size\",", "size = { path = \"$.size\", args = {},"))
            .unwrap_err();
        assert_eq!((e.key.as_str(), e.problem.as_str()), ("view.thing.size.args", "args without a transform"));
    }

    #[test]
    fn an_action_may_bind_one_field_of_its_view() {
        let route = "[[route]]\nid = \"demo.props\"\nmethod = \"GET\"\npath = \"/things/{id}/props\"\naction = \"props\"\nview = \"thing\"\n";
        let e = compile(&format!("{GOOD}\n{route}")).unwrap_err();
        assert_eq!(e.key, "route[2].view");
        assert!(e.problem.contains("needs a field with transform `custom_properties` in view `thing`"), "{e}");
        let with_props = GOOD.replace(
            "[view.thing]\n",
            "[view.thing]\nmeta_data = { path = \"$\", transform = \"custom_properties\" }\n",
        );
        let m = compile(&format!("{with_props}\n{route}")).unwrap();
        let Lookup::Found { route, .. } = m.routes.lookup("GET", &split_path("/things/7/props").unwrap()) else {
            panic!("no props route")
        };
        let Demo::Props { props } = &route.action else { panic!("{:?}", route.action) };
        let base: PropertyNames = ["id"].iter().map(|s| s.to_string()).collect();
        let ctx = ViewContext { links: &LinkBases::default(), base_properties: &base };
        assert_eq!(props.value(&json!({"id": "7", "k": "v"}), &ctx).unwrap(), Some(json!({"k": "v"})));
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
            (
                "path = \"/things/{id}\"",
                "path = \"/things/{name}\"",
                "route[1].path",
                "action `show` needs the path parameter `{id}`",
            ),
            ("path = \"/things/{id}\"", "path = \"/things/{id}\"\nquery = \"filters\"", "route[1].query", ""),
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
                // A query map may be attached to any route: that variant compiles.
                Ok(_) if problem.is_empty() => {}
                Ok(_) => panic!("case {key} compiled"),
            }
        }
    }

    #[test]
    fn overlapping_routes_are_refused() {
        let text = format!("{GOOD}\n[[route]]\nid = \"demo.show2\"\nmethod = \"GET\"\npath = \"/things/{{id}}\"\naction = \"show\"\nview = \"thing\"\n");
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
