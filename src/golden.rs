//! `image-gateway test`: golden cases that pin what the mapping files make of legacy calls.
//!
//! A case (`<dir>/<dialect>/<case>.toml`) is a legacy request, the answers Glance gives it (in
//! order, optionally with the call each answers), and the dialect's expected answer (status,
//! the headers it names, body). Each runs through the real gateway with the replayed Glance
//! ([`crate::explain::run`]), under the configuration given, with `<dir>/config.toml` read as
//! if appended to it (what the cases assume, such as an Alliance namespace). A failure prints
//! a unified diff of the expected and the actual answer as pretty JSON. The cases under a
//! directory named after a dialect the configuration serves nowhere (`mounts = []`) are skipped.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::config::{Config, ConfigError};
use crate::explain::{self, ClientRequest, ExplainError};
use crate::glance::replay::{Answer, AnsweredBy};

/// The settings file of a case directory.
pub const OVERLAY: &str = "config.toml";
/// Lines of context around each change in a diff.
const CONTEXT: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum GoldenError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Explain(#[from] ExplainError),
    #[error("{path}: {problem}")]
    Case { path: PathBuf, problem: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    /// What the case pins, shown when it fails.
    description: Option<String>,
    request: CaseRequest,
    #[serde(default)]
    glance: Vec<CaseAnswer>,
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseRequest {
    method: String,
    /// Path and query.
    path: String,
    #[serde(default)]
    headers: IndexMap<String, String>,
    body: Option<toml::Value>,
    json: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseAnswer {
    #[serde(default = "ok")]
    status: u16,
    body: Option<toml::Value>,
    json: Option<String>,
    /// The call this answers, when the case pins it.
    call: Option<ExpectedCall>,
}

fn ok() -> u16 {
    200
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedCall {
    method: String,
    path: String,
    #[serde(default)]
    query: IndexMap<String, String>,
    /// The body sent, when the case pins it (a PATCH's operations, say).
    body: Option<toml::Value>,
    json: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    status: u16,
    /// Only the headers named are compared.
    #[serde(default)]
    headers: IndexMap<String, String>,
    body: Option<toml::Value>,
    json: Option<String>,
}

/// A body given either as TOML (`body`) or as JSON text (`json`, which can say `null`).
fn body(key: &str, toml: Option<toml::Value>, json: Option<String>) -> Result<Value, String> {
    match (toml, json) {
        (Some(_), Some(_)) => Err(format!("{key}: give `body` or `json`, not both")),
        (Some(t), None) => serde_json::to_value(t).map_err(|e| format!("{key}.body: {e}")),
        (None, Some(j)) => serde_json::from_str(&j).map_err(|e| format!("{key}.json: not JSON: {e}")),
        (None, None) => Ok(Value::Null),
    }
}

/// What one case made of the files.
#[derive(Debug)]
pub struct CaseResult {
    /// The case file, relative to the directory.
    pub name: String,
    pub description: Option<String>,
    /// The route that served it.
    pub route: Option<String>,
    /// Why it failed: a diff, or what went wrong.
    pub failure: Option<String>,
}

#[derive(Debug, Default)]
pub struct Summary {
    pub cases: Vec<CaseResult>,
    /// `dialect: route-id (METHOD path)` of each declared route no case reached.
    pub uncovered_routes: Vec<String>,
    /// `dialect: view` of each view no case rendered through its route.
    pub uncovered_views: Vec<String>,
    /// Directories of cases for a dialect the configuration serves nowhere: not run.
    pub skipped: Vec<String>,
}

impl Summary {
    pub fn failures(&self) -> impl Iterator<Item = &CaseResult> {
        self.cases.iter().filter(|c| c.failure.is_some())
    }
}

/// Where the cases are by default: `<mappings_dir>/tests`, else `mappings/tests`.
pub fn default_dir(config: &Config) -> PathBuf {
    config.mappings_dir.as_deref().unwrap_or(Path::new("mappings")).join("tests")
}

/// Runs every case under `dir` with the configuration at `config_path` (and `dir`'s overlay).
pub async fn run_dir(config_path: &Path, explicit: bool, dir: &Path) -> Result<Summary, GoldenError> {
    let overlay = dir.join(OVERLAY);
    let config = Config::load_with(config_path, explicit, overlay.is_file().then_some(overlay.as_path()))?;
    let mut files = Vec::new();
    collect(dir, dir, &mut files).map_err(|e| GoldenError::Case { path: dir.to_owned(), problem: e.to_string() })?;
    files.sort();
    let mut summary = Summary::default();
    // `<dir>/<dialect>/...`: a dialect the configuration does not serve has nothing to test.
    let served = |first: &str| {
        let mounted = |d: &crate::config::DialectConfig| !d.mounts.is_empty() || !d.legacy_mounts.is_empty();
        config.dialects.iter().any(|(name, d)| (name == first || d.kind.name() == first) && mounted(d))
    };
    for file in files {
        let relative = file.strip_prefix(dir).unwrap_or(&file);
        let name = relative.display().to_string();
        let mut parts = relative.components();
        if let (Some(first), Some(_)) = (parts.next(), parts.next()) {
            let first = first.as_os_str().to_string_lossy();
            if !served(&first) {
                if !summary.skipped.iter().any(|s| *s == first) {
                    summary.skipped.push(first.into_owned());
                }
                continue;
            }
        }
        let result = run_case(&config, &file).await;
        summary.cases.push(match result {
            Ok((description, route, failure)) => CaseResult { name, description, route, failure },
            Err(GoldenError::Case { problem, .. }) => {
                CaseResult { name, description: None, route: None, failure: Some(problem) }
            }
            Err(e) => return Err(e),
        });
    }
    let covered: HashSet<&str> = summary.cases.iter().filter_map(|c| c.route.as_deref()).collect();
    for r in explain::declared_routes(&config)?.iter().filter(|r| !covered.contains(r.id.as_str())) {
        summary.uncovered_routes.push(format!("{}: {} ({} {})", r.dialect, r.id, r.method, r.path));
    }
    let views = explain::route_views(&config)?;
    let mut seen = HashSet::new();
    for (dialect, _, view) in &views {
        let Some(view) = view else { continue };
        let rendered =
            views.iter().any(|(d, id, v)| d == dialect && v.as_ref() == Some(view) && covered.contains(id.as_str()));
        if !rendered && seen.insert((dialect, view)) {
            summary.uncovered_views.push(format!("{dialect}: {view}"));
        }
    }
    Ok(summary)
}

/// The case files under `dir`: every `.toml` but the overlay at the top.
fn collect(top: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(top, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "toml") && path != top.join(OVERLAY) {
            out.push(path);
        }
    }
    Ok(())
}

/// What one case says of itself, the route that served it, and its failure if it failed.
type Ran = (Option<String>, Option<String>, Option<String>);

/// Runs one case.
async fn run_case(config: &Config, file: &Path) -> Result<Ran, GoldenError> {
    let problem = |problem: String| GoldenError::Case { path: file.to_owned(), problem };
    let text = std::fs::read_to_string(file).map_err(|e| problem(e.to_string()))?;
    let case: CaseFile = toml::from_str(&text).map_err(|e| problem(e.to_string()))?;
    let request_body = body("request", case.request.body, case.request.json).map_err(problem)?;
    let request = ClientRequest {
        method: case.request.method,
        target: case.request.path,
        headers: case.request.headers.into_iter().collect(),
        body: if request_body.is_null() { Vec::new() } else { request_body.to_string().into_bytes() },
    };
    let pinned = case.glance.iter().filter(|a| a.call.is_some()).count();
    if pinned != 0 && pinned != case.glance.len() {
        return Err(problem("pin the `call` of every [[glance]] answer or of none".into()));
    }
    let mut answers = Vec::new();
    let mut expected_calls = Vec::new();
    for (i, a) in case.glance.into_iter().enumerate() {
        let key = format!("glance[{i}]");
        let status = http::StatusCode::from_u16(a.status).map_err(|e| problem(format!("{key}.status: {e}")))?;
        answers.push(Answer { status, body: body(&key, a.body, a.json).map_err(problem)? });
        if let Some(c) = a.call {
            let mut call = json!({"method": c.method, "path": c.path, "query": c.query});
            let sent = body(&format!("{key}.call"), c.body, c.json).map_err(problem)?;
            if !sent.is_null() {
                call["body"] = sent;
            }
            expected_calls.push(call);
        }
    }
    let given = answers.len();
    let expected_body = body("expect", case.expect.body, case.expect.json).map_err(problem)?;
    let outcome = match explain::run(config, &request, answers).await {
        Ok(outcome) => outcome,
        Err(ExplainError::Request(e)) => return Err(problem(e)),
        Err(e) => return Err(e.into()),
    };
    let route = outcome.route.as_ref().map(|l| l.route.to_string());
    let calls: Vec<_> = outcome.calls.iter().filter(|c| c.answered_by != AnsweredBy::BuiltInSchema).collect();
    let mut failures = Vec::new();
    if let Some(i) = outcome.stopped_at() {
        let c = &outcome.calls[i];
        failures.push(format!(
            "the gateway called Glance once more than the case answers ({given} given): {} {}",
            c.method,
            c.target()
        ));
    }
    if outcome.unused_answers > 0 {
        failures.push(format!("the case gives {given} Glance answers; the gateway used {}", calls.len()));
    }
    let header = |name: &str| {
        let values: Vec<&str> =
            outcome.headers.get_all(name).iter().map(|v| v.to_str().unwrap_or("(not text)")).collect();
        if values.is_empty() {
            Value::Null
        } else {
            Value::String(values.join(", "))
        }
    };
    let mut expected = Map::new();
    let mut got = Map::new();
    expected.insert("status".into(), case.expect.status.into());
    got.insert("status".into(), outcome.answer.status.into());
    if !case.expect.headers.is_empty() {
        let names = case.expect.headers.keys().map(|n| n.to_ascii_lowercase());
        got.insert("headers".into(), names.clone().map(|n| (n.clone(), header(&n))).collect());
        let values = case.expect.headers.values().map(|v| Value::String(v.clone()));
        expected.insert("headers".into(), names.zip(values).collect());
    }
    if pinned != 0 {
        let made = calls.iter().enumerate().map(|(i, c)| {
            let query: Map<String, Value> = c.query.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
            let mut call = json!({"method": c.method, "path": c.path, "query": query});
            // The body only where the case pins one.
            if expected_calls.get(i).is_some_and(|e| e.get("body").is_some()) {
                call["body"] = c.body.clone().unwrap_or(Value::Null);
            }
            call
        });
        got.insert("glance_calls".into(), made.collect());
        expected.insert("glance_calls".into(), expected_calls.into());
    }
    expected.insert("body".into(), expected_body);
    got.insert("body".into(), outcome.answer.body.clone());
    let (expected, got) = (Value::Object(expected), Value::Object(got));
    if expected != got {
        let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
        failures.push(unified_diff(&pretty(&expected), &pretty(&got)));
    }
    Ok((case.description, route, (!failures.is_empty()).then(|| failures.join("\n"))))
}

/// A unified diff of two texts by lines (`-` expected, `+` got), changes with some context.
pub fn unified_diff(expected: &str, got: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), got.lines().collect());
    // Longest common subsequence, from the ends: lcs[i][j] is for a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    // Each line as (kind, text, line in a, line in b).
    let mut lines = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            lines.push((' ', a[i], i, j));
            (i, j) = (i + 1, j + 1);
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] > lcs[i + 1][j]) {
            lines.push(('+', b[j], i, j));
            j += 1;
        } else {
            lines.push(('-', a[i], i, j));
            i += 1;
        }
    }
    let changed: Vec<usize> = (0..lines.len()).filter(|&k| lines[k].0 != ' ').collect();
    let mut out = String::from("--- expected\n+++ got\n");
    let mut k = 0;
    while k < changed.len() {
        let start = changed[k].saturating_sub(CONTEXT);
        let mut end = changed[k] + CONTEXT + 1;
        while k + 1 < changed.len() && changed[k + 1] <= end + CONTEXT {
            k += 1;
            end = changed[k] + CONTEXT + 1;
        }
        let end = end.min(lines.len());
        let hunk = &lines[start..end];
        let count = |kind: char| hunk.iter().filter(|l| l.0 == ' ' || l.0 == kind).count();
        let (a0, b0) = (hunk[0].2, hunk[0].3);
        let _ = writeln!(out, "@@ -{},{} +{},{} @@", a0 + 1, count('-'), b0 + 1, count('+'));
        for (kind, text, ..) in hunk {
            let _ = writeln!(out, "{kind}{text}");
        }
        k += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_show_changes_in_context() {
        let a = "{\n  \"a\": 1,\n  \"b\": 2,\n  \"c\": 3\n}";
        let b = "{\n  \"a\": 1,\n  \"B\": 2,\n  \"c\": 3\n}";
        let diff = unified_diff(a, b);
        assert_eq!(
            diff,
            "--- expected\n+++ got\n@@ -1,5 +1,5 @@\n {\n   \"a\": 1,\n-  \"b\": 2,\n+  \"B\": 2,\n   \"c\": 3\n }\n"
        );
        assert_eq!(unified_diff(a, a), "--- expected\n+++ got\n");
    }

    /// The shipped cases pass against the shipped files, and every route of the Nova and
    /// Alliance mappings has one (another dialect's routes may still lack cases).
    #[tokio::test]
    async fn every_shipped_route_has_a_passing_case() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut config = tempfile::NamedTempFile::new().unwrap();
        let text = std::fs::read_to_string(root.join("config/gateway.toml")).unwrap();
        let absolute = format!("mappings_dir = \"{}\"", root.join("mappings").display());
        std::io::Write::write_all(&mut config, text.replace("mappings_dir = \"mappings\"", &absolute).as_bytes())
            .unwrap();
        let summary = run_dir(config.path(), true, &root.join("mappings/tests")).await.unwrap();
        if let Some(case) = summary.failures().next() {
            panic!("{}: {}", case.name, case.failure.as_deref().unwrap_or(""));
        }
        assert!(summary.cases.len() >= 16, "{:?}", summary.cases);
        let shipped = |line: &&String| line.starts_with("nova:") || line.starts_with("alliance:");
        let uncovered: Vec<&String> = summary.uncovered_routes.iter().filter(shipped).collect();
        assert!(uncovered.is_empty(), "routes without a case: {uncovered:?}");
        let views: Vec<&String> = summary.uncovered_views.iter().filter(shipped).collect();
        assert!(views.is_empty(), "views without a case: {views:?}");
    }
}
