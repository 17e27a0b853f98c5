//! `image-gateway explain`: what one legacy call becomes, told from the real handlers.
//!
//! The request runs through the gateway's own router (edge layer, dialect handlers, mapping
//! engine) with every upstream replaced: Glance by a [`Replay`] that records each call and
//! gives the answers supplied, in order; Keystone and the real Nova by nothing (no network).
//! What is shown around the run (the route's declaration, the query and view rules) is read
//! from the mapping file itself, so that each output field is shown with the rule that made it.
//! [`run`] is also what `image-gateway test` (`crate::golden`) runs each case with.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use http::{HeaderName, HeaderValue, Method, Request};
use serde::Serialize;
use serde_json::Value;
use tower::ServiceExt;

use crate::app::{self, App, LoadError};
use crate::config::{Config, DialectKind};
use crate::glance::replay::{Answer, AnsweredBy, RecordedCall, Replay};
use crate::layers::metrics::{Metrics, RouteLabel};
use crate::mapping::{split_path, Lookup, RouteTable};
use crate::nova::microversion;
use crate::server::{self, Lifecycle};

/// The address the request seems to come from: a local client.
const PEER: ([u8; 4], u16) = ([127, 0, 0, 1], 40000);
/// Largest dialect answer read.
const MAX_ANSWER: usize = 64 << 20;
/// Answer headers worth showing: the rest (request ids, dates) change with every call.
const SHOWN_HEADERS: &[&str] = &[
    "content-type",
    "location",
    "openstack-api-version",
    "x-openstack-nova-api-version",
    "retry-after",
    "allow",
    "www-authenticate",
];

/// Whether an answer header is worth showing: one of [`SHOWN_HEADERS`], or an image's
/// metadata as Glance v1 answers it in headers.
fn shown(name: &str) -> bool {
    SHOWN_HEADERS.contains(&name) || name.starts_with("x-image-meta-")
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("the request: {0}")]
    Request(String),
}

/// A legacy client's request.
#[derive(Clone, Debug, Default)]
pub struct ClientRequest {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ClientRequest {
    fn path(&self) -> &str {
        self.target.split_once('?').map_or(self.target.as_str(), |(path, _)| path)
    }

    fn query(&self) -> Vec<(String, String)> {
        let query = self.target.split_once('?').map_or("", |(_, q)| q);
        url::form_urlencoded::parse(query.as_bytes()).into_owned().collect()
    }

    fn http(&self) -> Result<Request<Body>, ExplainError> {
        let bad = |what: &str, e: &dyn fmt::Display| ExplainError::Request(format!("{what}: {e}"));
        let method = Method::from_bytes(self.method.as_bytes()).map_err(|e| bad("method", &e))?;
        if !self.target.starts_with('/') {
            return Err(ExplainError::Request(format!("path `{}` must start with `/`", self.target)));
        }
        let mut request = Request::builder()
            .method(method)
            .uri(&self.target)
            .body(Body::from(self.body.clone()))
            .map_err(|e| bad("path", &e))?;
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| bad("header name", &e))?;
            let value = HeaderValue::from_str(value.trim()).map_err(|e| bad("header value", &e))?;
            request.headers_mut().append(name, value);
        }
        // Every HTTP/1.1 client sends one; links are made from it.
        if !request.headers().contains_key(http::header::HOST) {
            request.headers_mut().insert(http::header::HOST, HeaderValue::from_static("localhost"));
        }
        if !self.body.is_empty() && !request.headers().contains_key(http::header::CONTENT_TYPE) {
            request.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        request.extensions_mut().insert(axum::extract::ConnectInfo(SocketAddr::from(PEER)));
        Ok(request)
    }
}

/// The dialect's answer.
#[derive(Clone, Debug, Serialize)]
pub struct DialectAnswer {
    pub status: u16,
    /// The headers worth showing ([`shown`]), lower-case, in the answer's order.
    pub headers: Vec<(String, String)>,
    /// JSON when it is, else text; `Null` when empty.
    pub body: Value,
}

/// What happened to one request.
#[derive(Debug)]
pub struct Outcome {
    /// The dialect and route that served it, as the handler labelled its answer.
    pub route: Option<RouteLabel>,
    pub calls: Vec<RecordedCall>,
    /// Answers given that no call used.
    pub unused_answers: usize,
    pub answer: DialectAnswer,
    /// All of the answer's headers, for cases that pin others.
    pub headers: http::HeaderMap,
}

impl Outcome {
    /// The call (0-based) that found no answer left: the dialect's answer after it means nothing.
    pub fn stopped_at(&self) -> Option<usize> {
        self.calls.iter().position(|c| c.answered_by == AnsweredBy::Missing)
    }
}

/// `config` with every upstream made local: Glance (also each namespace's) is the replay,
/// given by [`App::load`]'s store; links to the image service keep the configured Glance's
/// address; Keystone and the Nova passthrough are not configured.
pub fn offline(mut config: Config) -> Config {
    config.glance.public_url = config.glance.public_url.take().or(config.glance.url.take());
    for ns in config.alliance.namespaces.values_mut() {
        ns.glance_url = None;
    }
    config.keystone.url = None;
    config.nova.upstream_url = None;
    config
}

/// Runs `request` through the gateway `config` describes, Glance giving `answers`.
pub async fn run(config: &Config, request: &ClientRequest, answers: Vec<Answer>) -> Result<Outcome, ExplainError> {
    let replay = Replay::new(answers);
    let app = App::load(offline(config.clone()), Arc::new(Metrics::new()), Some(replay.router()))?;
    let router = server::router(Arc::new(app), Arc::new(Lifecycle::default()));
    let response = router.oneshot(request.http()?).await.unwrap_or_else(|e| match e {});
    let route = response.extensions().get::<RouteLabel>().cloned();
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter(|(name, _)| shown(name.as_str()))
        .map(|(name, v)| (name.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_ANSWER).await.unwrap_or_default();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    Ok(Outcome {
        route,
        calls: replay.calls(),
        unused_answers: replay.unused(),
        answer: DialectAnswer { status, headers, body },
        headers: parts.headers,
    })
}

/// A mapping file's own text, parsed as TOML only: what it says, for display.
struct MappingText {
    dialect: String,
    kind: DialectKind,
    file: String,
    raw: toml::Table,
}

impl MappingText {
    fn load(config: &Config) -> Result<Vec<MappingText>, ExplainError> {
        let mut out = Vec::new();
        for (dialect, dc) in &config.dialects {
            let (file, text) = app::mapping_source(config, dc)?;
            // It compiled in `run` (or `App::load` failed first): it is TOML.
            let raw = text.parse().unwrap_or_default();
            out.push(MappingText { dialect: dialect.clone(), kind: dc.kind, file, raw });
        }
        Ok(out)
    }

    fn routes(&self) -> impl Iterator<Item = &toml::Table> {
        self.raw.get("route").and_then(toml::Value::as_array).into_iter().flatten().filter_map(toml::Value::as_table)
    }

    fn route(&self, id: &str) -> Option<&toml::Table> {
        self.routes().find(|r| text(r, "id") == Some(id))
    }

    fn section(&self, kind: &str, name: &str) -> Option<&toml::Table> {
        self.raw.get(kind)?.get(name)?.as_table()
    }
}

fn text<'a>(table: &'a toml::Table, key: &str) -> Option<&'a str> {
    table.get(key).and_then(toml::Value::as_str)
}

/// `path = "$.size", default = 0`: a rule as the file writes it.
fn rule(value: &toml::Value) -> String {
    let inline = value.to_string();
    inline.trim().strip_prefix('{').and_then(|r| r.strip_suffix('}')).map_or(inline.clone(), |r| r.trim().to_owned())
}

/// A route as its mapping file declares it.
#[derive(Debug)]
pub struct DeclaredRoute {
    /// The `[dialects.<name>]` whose file declares it.
    pub dialect: String,
    pub id: String,
    pub method: String,
    pub path: String,
}

/// Every route the configured mapping files declare, for coverage: read as TOML alone, so a
/// dialect of any kind is listed.
pub fn declared_routes(config: &Config) -> Result<Vec<DeclaredRoute>, ExplainError> {
    let mut out = Vec::new();
    for m in MappingText::load(config)? {
        for r in m.routes() {
            let field = |k| text(r, k).unwrap_or("").to_owned();
            out.push(DeclaredRoute {
                dialect: m.dialect.clone(),
                id: field("id"),
                method: field("method"),
                path: field("path"),
            });
        }
    }
    Ok(out)
}

/// The views each declared route renders: route id → view name.
pub fn route_views(config: &Config) -> Result<Vec<(String, String, Option<String>)>, ExplainError> {
    let mut out = Vec::new();
    for m in MappingText::load(config)? {
        for r in m.routes() {
            out.push((m.dialect.clone(), text(r, "id").unwrap_or("").to_owned(), text(r, "view").map(str::to_owned)));
        }
        for view in m.raw.get("view").and_then(toml::Value::as_table).into_iter().flat_map(|v| v.keys()) {
            if !m.routes().any(|r| text(r, "view") == Some(view)) {
                out.push((m.dialect.clone(), String::new(), Some(view.clone())));
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub request: String,
    pub route: RouteReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub microversion: Option<VersionReport>,
    /// Each client query parameter and the rule that translates it.
    pub query: Vec<QueryReport>,
    pub glance_calls: Vec<CallReport>,
    /// Why the run stopped before the dialect answered, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<DialectAnswer>,
    /// The view's rules, field by field.
    pub fields: Vec<FieldReport>,
    /// What runs differently here than in the gateway serving.
    pub offline: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "matched", rename_all = "snake_case")]
pub enum RouteReport {
    Route {
        dialect: String,
        file: String,
        mount: String,
        id: String,
        method: String,
        path: String,
        action: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        view: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        query_map: Option<String>,
    },
    /// No mapping route: why, and the routes closest to the path.
    None {
        #[serde(skip_serializing_if = "Option::is_none")]
        dialect: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        mount: Option<String>,
        /// What answered instead (`nova.unmatched`, `glance.passthrough`, ...).
        #[serde(skip_serializing_if = "Option::is_none")]
        answered_as: Option<String>,
        reason: String,
        nearest: Vec<String>,
    },
}

#[derive(Debug, Serialize)]
pub struct VersionReport {
    /// The version header as sent, if any.
    pub requested: Option<String>,
    pub used: String,
    /// The route's `max_version`: the last microversion Nova served it at.
    pub removed_after: Option<String>,
    pub enforce_removal: bool,
    pub decision: String,
}

#[derive(Debug, Serialize)]
pub struct QueryReport {
    pub param: String,
    pub value: String,
    /// `query.<map>.param.<name>` as written, or why it is not sent.
    pub rule: String,
}

#[derive(Debug, Serialize)]
pub struct CallReport {
    pub method: String,
    /// Path and translated query.
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    pub answered_by: String,
}

#[derive(Debug, Serialize)]
pub struct FieldReport {
    pub field: String,
    pub rule: String,
    /// The table the rule names, as the file writes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Whether the answer carries it (`None`: no answer to look at).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_answer: Option<bool>,
}

/// Explains `request` under `config`, Glance giving `answers`.
pub async fn explain(config: &Config, request: &ClientRequest, answers: Vec<Answer>) -> Result<Report, ExplainError> {
    let given = answers.len();
    let outcome = run(config, request, answers).await?;
    let mappings = MappingText::load(config)?;
    let label = outcome.route.as_ref();
    let matched = label.and_then(|l| {
        let m = mappings.iter().find(|m| m.kind.name() == l.dialect)?;
        Some((m, m.route(&l.route)?))
    });
    let mount = mount_of(config, request.path());
    let route = match matched {
        Some((m, r)) => RouteReport::Route {
            dialect: m.dialect.clone(),
            file: m.file.clone(),
            mount: mount.as_ref().map_or_else(String::new, |(_, mount, _)| mount.clone()),
            id: text(r, "id").unwrap_or("").into(),
            method: text(r, "method").unwrap_or("").into(),
            path: text(r, "path").unwrap_or("").into(),
            action: text(r, "action").unwrap_or("").into(),
            view: text(r, "view").map(Into::into),
            query_map: text(r, "query").map(Into::into),
        },
        None => unmatched(config, &mappings, request, mount.as_ref(), label),
    };
    let route_table = matched.map(|(_, r)| r);
    let microversion = match (&route, mount.as_ref()) {
        (RouteReport::Route { .. }, Some((DialectKind::Nova, _, legacy))) => {
            Some(version_report(config, request, route_table, *legacy))
        }
        _ => None,
    };
    let query = match matched {
        Some((m, r)) => query_report(m, text(r, "query"), request),
        None => Vec::new(),
    };
    let glance_calls = outcome
        .calls
        .iter()
        .map(|c| CallReport {
            method: c.method.clone(),
            url: c.target(),
            body: c.body.clone(),
            answered_by: match &c.answered_by {
                AnsweredBy::Given { index, status } => format!("upstream answer {} (status {status})", index + 1),
                AnsweredBy::BuiltInSchema => "the built-in copy of Glance's image schema".into(),
                AnsweredBy::Missing => "NO ANSWER GIVEN".into(),
            },
        })
        .collect();
    let stopped = outcome.stopped_at().map(|i| {
        format!(
            "Glance call {} has no answer ({given} given): give one more --upstream-answer to see the dialect's answer",
            i + 1
        )
    });
    let answer = stopped.is_none().then(|| outcome.answer.clone());
    let fields = match matched {
        Some((m, r)) => field_report(m, text(r, "view"), answer.as_ref()),
        None => Vec::new(),
    };
    let mut offline_notes = vec!["Glance is replayed from the answers given; nothing is sent over the network".into()];
    if config.keystone.url.is_some() {
        offline_notes.push("Keystone is not called: tokens are not validated here".into());
    }
    if config.nova.upstream_url.is_some() {
        offline_notes.push("calls the real Nova would get (nova.upstream_url) are not passed on".into());
    }
    if outcome.unused_answers > 0 {
        offline_notes.push(format!("{} upstream answer(s) were not used", outcome.unused_answers));
    }
    Ok(Report {
        request: format!("{} {}", request.method, request.target),
        route,
        microversion,
        query,
        glance_calls,
        stopped,
        answer,
        fields,
        offline: offline_notes,
    })
}

/// The dialect mount `path` is under (longest first): (kind, mount, legacy).
fn mount_of(config: &Config, path: &str) -> Option<(DialectKind, String, bool)> {
    let under = |mount: &str| path.strip_prefix(mount).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    let mut found: Option<(DialectKind, String, bool)> = None;
    for dc in config.dialects.values() {
        let mounts = dc.mounts.iter().map(|m| (m, false)).chain(dc.legacy_mounts.iter().map(|m| (m, true)));
        for (mount, legacy) in mounts {
            // Alliance's mount is a prefix of `/images`; the others' a path of their own.
            let claims = match dc.kind {
                DialectKind::Alliance => path
                    .strip_prefix(mount.as_str())
                    .is_some_and(|rest| rest == "/images" || rest.starts_with("/images/")),
                _ => under(mount),
            };
            if claims && found.as_ref().is_none_or(|(_, m, _)| mount.len() > m.len()) {
                found = Some((dc.kind, mount.clone(), legacy));
            }
        }
    }
    found
}

fn unmatched(
    config: &Config,
    mappings: &[MappingText],
    request: &ClientRequest,
    mount: Option<&(DialectKind, String, bool)>,
    label: Option<&RouteLabel>,
) -> RouteReport {
    let answered_as = label.map(|l| l.route.to_string());
    let glance_mount = &config.glance.mount;
    let path = request.path();
    let Some((kind, mount, _)) = mount else {
        let glance = path.strip_prefix(glance_mount.as_str()).is_some_and(|r| r.is_empty() || r.starts_with('/'));
        let (reason, nearest) = if glance {
            let reason = format!("the path is under glance.mount `{glance_mount}`: Glance's own API, passed through");
            (reason, Vec::new())
        } else {
            // Each dialect's routes below its first mount.
            let under_mounts = mappings.iter().map(|m| {
                let mount = config.dialects.get(&m.dialect).and_then(|d| d.mounts.first());
                (m, mount.map_or("", String::as_str))
            });
            ("the path is under no dialect's mount".into(), nearest(under_mounts, path, &request.method))
        };
        return RouteReport::None { dialect: None, mount: None, answered_as, reason, nearest };
    };
    let rest = path.strip_prefix(mount.as_str()).unwrap_or(path);
    // `/images/` is Alliance's own spelling of `/images`.
    let trimmed = match kind {
        DialectKind::Alliance => rest.strip_suffix('/').filter(|r| !r.is_empty()).unwrap_or(rest),
        _ => rest,
    };
    let reason = match split_path(trimmed) {
        None => "the path does not decode to clean segments (bad escapes, control characters, `.` or `..`)".into(),
        Some(segments) => why_unrouted(config, *kind, &request.method, &segments)
            .unwrap_or_else(|| "no route's path template matches".into()),
    };
    let m = mappings.iter().filter(|m| m.kind == *kind).map(|m| (m, mount.as_str()));
    let dialect = mappings.iter().find(|m| m.kind == *kind).map(|m| m.dialect.clone());
    let nearest = nearest(m, path, &request.method);
    let reason = match &answered_as {
        Some(answered) if answered.ends_with(".versions") => "the mount's root: Nova's version document".into(),
        _ => reason,
    };
    RouteReport::None { dialect, mount: Some(mount.clone()), answered_as, reason, nearest }
}

/// Why no route of the dialect of `kind` serves `method` on `segments` (below its mount),
/// when a route's template matches them: by the dialect's own route table (a new kind adds
/// its line).
fn why_unrouted(config: &Config, kind: DialectKind, method: &str, segments: &[String]) -> Option<String> {
    match kind {
        DialectKind::Nova => {
            let table = config_routes::<crate::nova::NovaAction>(config, kind)?;
            // Nova routes every path below a project id too.
            why(&table, method, segments).or_else(|| why(&table, method, crate::nova::split_project(segments).1))
        }
        DialectKind::Alliance => {
            why(&config_routes::<crate::alliance::AllianceAction>(config, kind)?, method, segments)
        }
        DialectKind::GlanceV1 => {
            why(&config_routes::<crate::glance_v1::GlanceV1Action>(config, kind)?, method, segments)
        }
    }
}

/// The route table of the dialect of `kind`, compiled from its file.
fn config_routes<A: crate::mapping::Action>(config: &Config, kind: DialectKind) -> Option<RouteTable<A>> {
    let dc = config.dialects.values().find(|d| d.kind == kind)?;
    let (file, text) = app::mapping_source(config, dc).ok()?;
    crate::mapping::Mapping::<A>::compile(&file, &text).ok().map(|m| m.routes)
}

/// Why `segments` finds no route for `method`, when a route's template does match them.
fn why<A>(table: &RouteTable<A>, method: &str, segments: &[String]) -> Option<String> {
    match table.lookup(method, segments) {
        Lookup::MethodNotAllowed => {
            let allowed: Vec<String> = table
                .iter()
                .filter(
                    |r| matches!(table.lookup(&r.method, segments), Lookup::Found { route, .. } if route.id == r.id),
                )
                .map(|r| r.method.clone())
                .collect();
            Some(format!("method not allowed: the path is routed for {}", allowed.join(", ")))
        }
        Lookup::Found { route, .. } => Some(format!("route `{}` matches, but the handler did not serve it", route.id)),
        Lookup::NotFound => None,
    }
}

/// The three declared routes most like `method path`, best first: each file's routes as
/// served below the mount given with it.
fn nearest<'a>(mappings: impl Iterator<Item = (&'a MappingText, &'a str)>, path: &str, method: &str) -> Vec<String> {
    let mut scored: Vec<(i64, String)> = Vec::new();
    for (m, mount) in mappings {
        let rest = path.strip_prefix(mount).unwrap_or(path);
        let asked: Vec<&str> = rest.trim_matches('/').split('/').collect();
        for r in m.routes() {
            let (id, rmethod, template) =
                (text(r, "id").unwrap_or(""), text(r, "method").unwrap_or(""), text(r, "path").unwrap_or(""));
            let parts: Vec<&str> = template.trim_matches('/').split('/').collect();
            // Compared from the end, so that a project id in front does not shift everything.
            let mut score = -2 * (asked.len() as i64 - parts.len() as i64).abs();
            for (a, p) in asked.iter().rev().zip(parts.iter().rev()) {
                score += if a == p {
                    3
                } else if p.starts_with('{') {
                    1
                } else {
                    -1
                };
            }
            if rmethod == method {
                score += 1;
            }
            scored.push((score, format!("{rmethod} {mount}{template} ({id})")));
        }
    }
    scored.sort_by_key(|s| std::cmp::Reverse(s.0));
    scored.into_iter().take(3).map(|(_, s)| s).collect()
}

fn version_report(
    config: &Config,
    request: &ClientRequest,
    route: Option<&toml::Table>,
    legacy: bool,
) -> VersionReport {
    let requested = request
        .headers
        .iter()
        .filter(|(n, _)| {
            let n = n.trim();
            n.eq_ignore_ascii_case(microversion::HEADER) || n.eq_ignore_ascii_case(microversion::LEGACY_HEADER)
        })
        .map(|(n, v)| format!("{}: {}", n.trim(), v.trim()))
        .reduce(|a, b| format!("{a}; {b}"));
    let removed_after = route.and_then(|r| text(r, "max_version")).map(str::to_owned);
    let enforce_removal = config.nova.enforce_removal;
    let max = config.max_microversion();
    let (used, decision) = if legacy {
        (microversion::MIN.to_string(), "legacy mount: runs as 2.1 and sends no version headers".to_owned())
    } else {
        let mut headers = http::HeaderMap::new();
        for (n, v) in &request.headers {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n.trim().as_bytes()), HeaderValue::from_str(v.trim())) {
                headers.append(n, v);
            }
        }
        match microversion::requested(&headers, max) {
            Ok(v) => {
                let removed = removed_after.as_deref().and_then(|r| r.parse::<crate::mapping::ApiVersion>().ok());
                let decision = match removed {
                    Some(r) if v > r && enforce_removal => {
                        format!("404: Nova removed the call after {r} and nova.enforce_removal is on")
                    }
                    Some(r) if v > r => {
                        format!("served: Nova removed the call after {r}, but nova.enforce_removal is off")
                    }
                    _ => format!("served (the gateway's maximum is {max})"),
                };
                (v.to_string(), decision)
            }
            Err(e) => ("none".into(), format!("refused: {e}")),
        }
    };
    VersionReport { requested, used, removed_after, enforce_removal, decision }
}

fn query_report(m: &MappingText, map: Option<&str>, request: &ClientRequest) -> Vec<QueryReport> {
    let query = request.query();
    let Some(name) = map else {
        return query
            .into_iter()
            .map(|(param, value)| QueryReport { param, value, rule: "not read: the route has no query map".into() })
            .collect();
    };
    let section = m.section("query", name);
    let lookup = |kind: &str, key: &str| section.and_then(|s| s.get(kind)).and_then(|k| k.get(key)).map(rule);
    query
        .into_iter()
        .map(|(param, value)| {
            let rule = match lookup("param", &param) {
                Some(r) => format!("query.{name}.param.{param} = {{ {r} }}"),
                None => {
                    let prefixes = section.and_then(|s| s.get("prefix")).and_then(toml::Value::as_table);
                    let prefix = prefixes.and_then(|p| p.iter().find(|(k, _)| param.starts_with(k.as_str())));
                    match prefix {
                        Some((p, r)) => format!("query.{name}.prefix.{p} = {{ {} }}", rule(r)),
                        None => format!("not in query.{name}: paging or not sent to Glance"),
                    }
                }
            };
            QueryReport { param, value, rule }
        })
        .collect()
}

fn field_report(m: &MappingText, view: Option<&str>, answer: Option<&DialectAnswer>) -> Vec<FieldReport> {
    let Some(fields) = view.and_then(|v| m.section("view", v)) else { return Vec::new() };
    // The first rendered object: a list's first image, the image, or the answer itself.
    // An answer without a JSON object (a 204, an answer in headers) says nothing either way.
    let object = answer.and_then(|a| {
        let body = &a.body;
        let first = body.get("images").and_then(|i| i.get(0)).or_else(|| body.get("image")).unwrap_or(body);
        first.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>())
    });
    fields
        .iter()
        .map(|(field, r)| FieldReport {
            field: field.clone(),
            rule: rule(r),
            table: r
                .get("table")
                .and_then(toml::Value::as_str)
                .and_then(|t| Some(format!("table.{t} = {{ {} }}", rule(m.raw.get("table")?.get(t)?)))),
            in_answer: object.as_ref().filter(|_| field != "*").map(|keys| keys.contains(field)),
        })
        .collect()
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Request: {}", self.request)?;
        match &self.route {
            RouteReport::Route { dialect, file, mount, id, method, path, action, view, query_map } => {
                writeln!(f, "Route:   {id} ({dialect} dialect, {file})")?;
                writeln!(f, "         {method} {mount}{path} → action {action}")?;
                if let Some(view) = view {
                    writeln!(f, "         view {view}")?;
                }
                if let Some(q) = query_map {
                    writeln!(f, "         query map {q}")?;
                }
            }
            RouteReport::None { dialect, mount, answered_as, reason, nearest } => {
                let under = match (dialect, mount) {
                    (Some(d), Some(m)) => format!(" under the {d} mount `{m}`"),
                    _ => String::new(),
                };
                writeln!(f, "Route:   NONE{under}: {reason}")?;
                if let Some(a) = answered_as {
                    writeln!(f, "         answered as {a}")?;
                }
                for n in nearest {
                    writeln!(f, "         nearest: {n}")?;
                }
            }
        }
        if let Some(v) = &self.microversion {
            writeln!(f, "Microversion:")?;
            writeln!(f, "  requested: {}", v.requested.as_deref().unwrap_or("(no header: 2.1)"))?;
            writeln!(f, "  used:      {}", v.used)?;
            let removed = v.removed_after.as_deref().unwrap_or("never");
            writeln!(f, "  removed after: {removed}; nova.enforce_removal = {}", v.enforce_removal)?;
            writeln!(f, "  decision:  {}", v.decision)?;
        }
        if !self.query.is_empty() {
            writeln!(f, "Query:")?;
            for q in &self.query {
                writeln!(f, "  {}={} → {}", q.param, q.value, q.rule)?;
            }
        }
        writeln!(f, "Glance calls:")?;
        if self.glance_calls.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for (i, c) in self.glance_calls.iter().enumerate() {
            writeln!(f, "  {}. {} {}", i + 1, c.method, c.url)?;
            if let Some(body) = &c.body {
                writeln!(f, "     body: {}", compact(body))?;
            }
            writeln!(f, "     answered by {}", c.answered_by)?;
        }
        if let Some(stopped) = &self.stopped {
            writeln!(f, "Stopped: {stopped}")?;
        }
        if let Some(a) = &self.answer {
            writeln!(f, "Answer:  {}", a.status)?;
            for (name, value) in &a.headers {
                writeln!(f, "  {name}: {value}")?;
            }
            if !a.body.is_null() {
                let pretty = match &a.body {
                    Value::String(text) => text.clone(),
                    json => serde_json::to_string_pretty(json).unwrap_or_default(),
                };
                let mut out = String::new();
                for line in pretty.lines() {
                    let _ = writeln!(out, "  {line}");
                }
                f.write_str(&out)?;
            }
        }
        if !self.fields.is_empty() {
            writeln!(f, "Fields (output field ← rule):")?;
            let width = self.fields.iter().map(|r| r.field.len()).max().unwrap_or(0);
            for r in &self.fields {
                let mark = match r.in_answer {
                    Some(false) => "  (not in the answer)",
                    _ => "",
                };
                writeln!(f, "  {:width$} ← {}{mark}", r.field, r.rule)?;
                if let Some(table) = &r.table {
                    writeln!(f, "  {:width$}   {table}", "")?;
                }
            }
        }
        for note in &self.offline {
            writeln!(f, "Note:    {note}")?;
        }
        Ok(())
    }
}

fn compact(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
