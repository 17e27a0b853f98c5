"""(d) the monitoring artefacts: the alert rules (promtool check rules, promtool test rules, their
annotations and runbook anchors), the PrometheusRule copy of them, the Grafana dashboard (its
shape, and every PromQL expression in it parsed by promtool), and every metric, label and label
value both of them name, against what the built binary serves on /metrics. Then self-tests:
broken copies of those files must fail the same checks."""

import dataclasses
import json
import os
import re
import subprocess
import tempfile

import yaml

from scrape import served_metrics
from tree import StrictLoader

RULES = "deploy/prometheus/image-gateway-rules.yaml"
RULE_TESTS = "deploy/prometheus/image-gateway-rules.test.yaml"
DASHBOARD = "deploy/grafana/image-gateway-dashboard.json"
OPERATIONS = "docs/operations.md"
PROMETHEUS_RULE = "prometheusrule.yaml"
SEVERITIES = {"warning", "critical"}
# Labels Prometheus adds to every scraped series, and histograms' bucket bound.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "le"}
# Grafana's own variables a dashboard expression may use, as values promtool can parse.
GRAFANA_BUILTINS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
GRAFANA_WIDTH = 24


def run(report, tree, gateway, promtool, promtool_note):
    try:
        files = Files.read(tree.root)
    except OSError as e:
        report.fail("monitoring files", f"{type(e).__name__}: {e}")
        return
    report.check(f"alert rules shape and runbooks {RULES}", rules_shape, files)
    report.check(f"PrometheusRule {PROMETHEUS_RULE} == {RULES}", prometheus_rule_agrees, tree, files)
    report.check(f"grafana dashboard shape {DASHBOARD}", dashboard_shape, files)
    promtool_checks = [
        (f"promtool check rules {RULES}", promtool_check_rules),
        (f"promtool test rules {RULE_TESTS}", promtool_test_rules),
        (f"promtool parses every dashboard expression {DASHBOARD}", dashboard_promql),
    ]
    for name, fn in promtool_checks:
        if promtool:
            report.check(name, fn, promtool, files)
        else:
            report.skip(name, promtool_note)
    served = {}
    exercised = "the binary's /metrics, exercised"
    metrics_check = "rules and dashboard use only metrics, labels and values the binary serves"
    if not gateway:
        for name in (exercised, metrics_check):
            report.skip(name, "no built binary (target/{release,debug}/image-gateway)")
    elif report.check(exercised, exercise, gateway, tree.root, served):
        report.check(metrics_check, names_served, files, served)
    else:
        report.skip(metrics_check, "no /metrics to compare with")
    self_tests(report, tree, files, promtool, served)


@dataclasses.dataclass(frozen=True)
class Files:
    """The texts the checks read, so that self-tests can hand them broken copies."""

    rules: str
    rule_tests: str
    dashboard: str
    operations: str

    @classmethod
    def read(cls, root):
        def text(path):
            with open(os.path.join(root, path)) as f:
                return f.read()

        return cls(text(RULES), text(RULE_TESTS), text(DASHBOARD), text(OPERATIONS))

    def rule_doc(self):
        return yaml.load(self.rules, Loader=StrictLoader)

    def alert_rules(self):
        return [r for g in self.rule_doc()["groups"] for r in g["rules"]]

    def dashboard_doc(self):
        return json.loads(self.dashboard)

    def dashboard_exprs(self):
        """(where, expression) of every panel target and query variable of the dashboard."""
        doc = self.dashboard_doc()
        found = [(f"panel {p['id']} {t['refId']}", t["expr"]) for p in graph_panels(doc) for t in p["targets"]]
        for v in doc["templating"]["list"]:
            if v["type"] == "query":
                found.append((f"variable {v['name']}", grafana_query(v)))
        return found


def graph_panels(doc):
    """The dashboard's panels that draw something (rows only group them), rows' own panels included."""
    out = []
    for p in doc["panels"]:
        out += p.get("panels", []) if p["type"] == "row" else [p]
    return out


def grafana_query(variable):
    q = variable["query"]
    return q["query"] if isinstance(q, dict) else q


def github_anchor(heading):
    """The fragment GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


# --- the alert rules ------------------------------------------------------------------------


def rules_shape(files):
    doc = files.rule_doc()
    anchors = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", files.operations, re.M)}
    rules = files.alert_rules()
    assert rules, "no rules"
    for r in rules:
        name = r.get("alert")
        assert name and "record" not in r, f"not an alert rule: {r}"
        assert r.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity not one of {sorted(SEVERITIES)}"
        notes = r.get("annotations", {})
        missing = [k for k in ("summary", "description", "runbook") if not notes.get(k)]
        assert not missing, f"{name}: no {missing}"
        path, _, anchor = notes["runbook"].partition("#")
        assert path == OPERATIONS and anchor in anchors, (
            f"{name}: runbook {notes['runbook']} is no heading of {OPERATIONS}"
        )
    return f"{len(rules)} alerts in {len(doc['groups'])} group(s), each with a runbook heading in {OPERATIONS}"


def promtool(promtool_bin, *args, cwd):
    """Runs promtool in `cwd` (file arguments relative to it, so that its messages name files
    alone); returns its output, or fails with it."""
    out = subprocess.run([promtool_bin, *args], capture_output=True, text=True, timeout=120, cwd=cwd)
    assert out.returncode == 0, (out.stdout + out.stderr).strip()
    return out.stdout.strip()


def promtool_check_rules(promtool_bin, files):
    with tempfile.TemporaryDirectory() as tmp:
        write(tmp, os.path.basename(RULES), files.rules)
        out = promtool(promtool_bin, "check", "rules", os.path.basename(RULES), cwd=tmp)
    return " ".join(out.split()) + f" ({version(promtool_bin)})"


def promtool_test_rules(promtool_bin, files):
    with tempfile.TemporaryDirectory() as tmp:
        write(tmp, os.path.basename(RULES), files.rules)
        write(tmp, os.path.basename(RULE_TESTS), files.rule_tests)
        promtool(promtool_bin, "test", "rules", os.path.basename(RULE_TESTS), cwd=tmp)
    cases = yaml.safe_load(files.rule_tests)["tests"]
    return f"{len(cases)} cases, {sum(len(c['alert_rule_test']) for c in cases)} evaluations"


def version(promtool_bin):
    out = subprocess.run([promtool_bin, "--version"], capture_output=True, text=True)
    return (out.stdout + out.stderr).splitlines()[0]


def write(directory, name, text):
    with open(os.path.join(directory, name), "w") as f:
        f.write(text)


def prometheus_rule_agrees(tree, files):
    docs = tree.docs.get(PROMETHEUS_RULE)
    assert docs, f"deploy/kubernetes/{PROMETHEUS_RULE} missing or empty"
    pr = docs[0]
    assert (pr.get("apiVersion"), pr.get("kind")) == ("monitoring.coreos.com/v1", "PrometheusRule"), (
        "not a PrometheusRule"
    )
    assert pr.get("spec") == files.rule_doc(), f"its spec differs from {RULES}: regenerate it as its header says"
    # A Prometheus selects ServiceMonitors and rules by label (often the same `release:`): one
    # edited without the other would be scraped without alerts, or alert on nothing.
    labels = pr["metadata"].get("labels", {})
    monitor = tree.one("ServiceMonitor")["metadata"].get("labels", {})
    assert labels == monitor, f"labels {labels} differ from the ServiceMonitor's {monitor}"
    return f"spec is {RULES}; labels are the ServiceMonitor's"


# --- the dashboard --------------------------------------------------------------------------


def dashboard_shape(files):
    doc = files.dashboard_doc()
    for key in ("uid", "title", "schemaVersion", "panels", "templating"):
        assert key in doc, f"no {key}"
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    ds = variables.get("datasource")
    assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus", "no Prometheus datasource variable"
    ids = [p["id"] for p in doc["panels"]] + [p["id"] for p in graph_panels(doc) if p not in doc["panels"]]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    assert not dup, f"panel ids used twice: {dup}"
    panels = graph_panels(doc)
    wanted_ds = "${datasource}"
    for p in panels:
        where = f"panel {p['id']} ({p.get('title')})"
        assert p.get("type") and p.get("title"), f"{where}: no type or title"
        pos = p["gridPos"]
        assert 0 <= pos["x"] and pos["w"] > 0 and pos["x"] + pos["w"] <= GRAFANA_WIDTH and pos["h"] > 0, (
            f"{where}: gridPos {pos}"
        )
        assert p.get("datasource", {}).get("uid") == wanted_ds, f"{where}: datasource is not {wanted_ds}"
        targets = p.get("targets", [])
        assert targets, f"{where}: no targets"
        refs = [t.get("refId") for t in targets]
        assert len(set(refs)) == len(refs) and all(refs), f"{where}: refIds {refs}"
        for t in targets:
            assert t.get("expr", "").strip(), f"{where} {t.get('refId')}: no expr"
            assert t.get("datasource", {}).get("uid", wanted_ds) == wanted_ds, (
                f"{where} {t['refId']}: another datasource"
            )
    for where, expr in files.dashboard_exprs():
        used = set(re.findall(r"\$\{?(\w+)", expr))
        unknown = sorted(used - set(variables) - set(GRAFANA_BUILTINS))
        assert not unknown, f"{where}: undefined variables {unknown}"
    return f"{len(panels)} panels with targets, unique ids, variables {', '.join(variables)}"


def promql_of(expr):
    """A dashboard expression with Grafana's variables replaced by values PromQL accepts."""
    expr = re.sub(r"\$\{?(__\w+)\}?", lambda m: GRAFANA_BUILTINS.get(m.group(1), m.group(0)), expr)
    return re.sub(r"\$\{?\w+\}?", ".+", expr)  # a dashboard variable, always inside =~"..."


def dashboard_promql(promtool_bin, files):
    """promtool parses each expression, given to it as a recording rule (label_values() is
    Grafana's, not PromQL: its selector is what is parsed)."""
    rules = []
    for where, expr in files.dashboard_exprs():
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", expr, re.S)
        rules.append(
            {"record": "dashboard:" + re.sub(r"\W+", "_", where), "expr": promql_of(m.group(1) if m else expr)}
        )
    with tempfile.TemporaryDirectory() as tmp:
        write(tmp, "dashboard-exprs.yaml", yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
        promtool(promtool_bin, "check", "rules", "dashboard-exprs.yaml", cwd=tmp)
    return f"{len(rules)} expressions"


# --- against the binary's /metrics ----------------------------------------------------------


def exercise(gateway, root, served):
    """Fills `served` from the binary's /metrics (scrape.py)."""
    served.update(served_metrics(gateway, root))
    return f"{len(served)} sample names from two runs (embedded store; TLS and a Glance that never answers)"


def exprs_of(files):
    return [(r["alert"], r["expr"]) for r in files.alert_rules()] + files.dashboard_exprs()


def names_served(files, served):
    """Every image_gateway_* name, every label (grouped by, matched on) and every label value
    matched exactly in the rules and the dashboard, is one the binary served. `served` maps
    each sample name to {label: {values}}."""
    labels = {}
    for by_label in served.values():
        for k, vs in by_label.items():
            labels.setdefault(k, set()).update(vs)
    problems, names = [], set()
    for where, expr in exprs_of(files):
        for name in re.findall(r"\bimage_gateway_\w+", expr):
            names.add(name)
            if name not in served:
                problems.append(f"{where}: metric {name} not served")
        for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
            for label in filter(None, (s.strip() for s in group.split(","))):
                if label not in labels and label not in TARGET_LABELS:
                    problems.append(f"{where}: label {label} on no served series")
        for label, op, value in re.findall(r"\b(\w+)\s*(=~|!~|!=|=)\s*\"([^\"]*)\"", expr):
            if label in TARGET_LABELS:
                continue
            if label not in labels:
                problems.append(f"{where}: label {label} on no served series")
            elif op in ("=", "!=") and value not in labels[label]:
                problems.append(f'{where}: {label}="{value}" never served (served: {sorted(labels[label])})')
    assert not problems, "; ".join(problems)
    return f"{len(names)} metric names, their labels and values, in {len(exprs_of(files))} expressions"


# --- self-tests: broken copies must fail ----------------------------------------------------


# (what is broken, the check that must fail, the file, a text in it, what replaces that text)
SELF_TESTS = [
    ("a renamed metric in the rules", "metrics", "rules", "image_gateway_upstream_up)", "image_gateway_up)"),
    ("a renamed metric in the dashboard", "metrics", "dashboard", "_connections_open{", "_open_connections{"),
    ("a misspelt label in the dashboard", "metrics", "dashboard", "sum by (reason)", "sum by (reasons)"),
    ("a label value never served", "metrics", "rules", 'result="failure"}[15m]) > 0', 'result="failed"}[15m]) > 0'),
    ("a rule without a runbook heading", "shape", "rules", "#imagegatewayhighlatency", "#imagegatewayslow"),
    ("a duplicate panel id", "dashboard", "dashboard", '"id": 3,', '"id": 2,'),
    ("an undefined dashboard variable", "dashboard", "dashboard", '=~\\"$instance\\"', '=~\\"$node\\"'),
    ("a rule that does not parse", "promtool", "rules", "(image_gateway_upstream_up)", "(image_gateway_upstream_up"),
    ("a threshold the rule tests contradict", "promtool test", "rules", ") > 0.05\n", ") > 0.5\n"),
    (
        "a dashboard expression that does not parse",
        "promtool dashboard",
        "dashboard",
        "status) (rate(",
        "status) rate((",
    ),
    ("a PrometheusRule that drifted", "PrometheusRule", "rules", "for: 2m", "for: 3m"),
]


def self_tests(report, tree, files, promtool_bin, served):
    """Each case breaks one thing in a copy of the files and expects the check that guards it
    to fail; a case whose check needs what this machine lacks is skipped."""
    checks = {
        "metrics": lambda f: names_served(f, served),
        "shape": rules_shape,
        "dashboard": dashboard_shape,
        "promtool": lambda f: promtool_check_rules(promtool_bin, f),
        "promtool test": lambda f: promtool_test_rules(promtool_bin, f),
        "promtool dashboard": lambda f: dashboard_promql(promtool_bin, f),
        "PrometheusRule": lambda f: prometheus_rule_agrees(tree, f),
    }
    for what, kind, field, old, new in SELF_TESTS:
        name = f"self-test: {what} fails the {kind} check"
        if kind.startswith("promtool") and not promtool_bin:
            report.skip(name, "no promtool")
        elif kind == "metrics" and not served:
            report.skip(name, "no /metrics of a built binary")
        else:
            report.check(name, caught, checks[kind], files, field, old, new)


def caught(check, files, field, old, new):
    """Passes when `check` fails on a copy of `files` whose `field` has `old` replaced by `new`."""
    text = getattr(files, field)
    assert old in text, f"the self-test's anchor {old!r} is gone from {field}: update the self-test"
    try:
        check(dataclasses.replace(files, **{field: text.replace(old, new, 1)}))
    except AssertionError as e:
        return "caught: " + " ".join(str(e).split())[:200]
    raise AssertionError("the broken copy passed")
