"""(a) deploy/kubernetes: every manifest parses, validates against the Kubernetes JSON schemas
(strict: unknown fields are errors; the Prometheus Operator's CRDs by their shape instead), the
kustomization lists what it should, and `kubectl kustomize` builds it when kubectl is there."""

import os
import shutil
import subprocess

import kubernetes_validate
import yaml

from tree import UNLISTED

K8S_VERSION = "1.32"
# The Prometheus Operator's kinds: absent from the Kubernetes schemas, checked by shape.
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}


def run(report, tree):
    for path in tree.manifest_paths():
        report.check(f"yaml {tree.rel(path)}", lambda p: f"{tree.load_manifest(p)} document(s)", path)

    for name, ds in tree.docs.items():
        for d in ds:
            if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
                report.fail(f"schema {name}", "a document without kind/apiVersion")
                continue
            if d["apiVersion"].startswith("kustomize.config.k8s.io/"):
                continue
            tree.resources.append((name, d))

    for name, d in tree.resources:
        report.check(f"schema {name} {d['kind']}/{d.get('metadata', {}).get('name')}", schema, d)

    report.check("kustomization resources", kustomization, tree)
    if shutil.which("kubectl") or shutil.which("kustomize"):
        report.check("kustomize build", kustomize_build, tree)
    else:
        report.skip("kustomize build", "neither kubectl nor kustomize installed")


def schema(d):
    api = d["apiVersion"]
    if api.startswith("monitoring.coreos.com/"):
        # A CRD: kubernetes-validate has no schema for it. Its shape (and its agreement with the
        # Service, or with deploy/prometheus) is checked by a check of its own.
        assert d["kind"] in OPERATOR_KINDS and api == "monitoring.coreos.com/v1", f"unexpected {api} {d['kind']}"
        assert isinstance(d.get("metadata", {}).get("name"), str), "metadata.name missing"
        return "CRD, not in the Kubernetes schemas: shape checked below"
    try:
        version = kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = ".".join(str(p) for p in e.path)
        raise AssertionError(f"{where}: {e.message}") from None
    except kubernetes_validate.SchemaNotFoundError as e:
        raise AssertionError(e.message) from None
    return f"Kubernetes {version}, strict"


def kustomization(tree):
    k = tree.docs.get("kustomization.yaml")
    assert k, "deploy/kubernetes/kustomization.yaml missing or empty"
    k = k[0]
    listed = k.get("resources", [])
    missing = [r for r in listed if not os.path.isfile(os.path.join(tree.k8s_dir, r))]
    assert not missing, f"listed but missing: {missing}"
    files = set(tree.docs) - {"kustomization.yaml"}
    stray = sorted(files - set(listed) - UNLISTED)
    assert not stray, f"in deploy/kubernetes but neither listed nor a documented optional file: {stray}"
    wrongly = sorted(UNLISTED & set(listed))
    assert not wrongly, f"optional files must stay out of the base: {wrongly}"
    assert "namespace" not in k, "the base must stay namespace-free"
    for n in listed:
        for d in tree.docs.get(n, []):
            assert "namespace" not in d.get("metadata", {}), f"{n}: metadata.namespace set in the base"
    return f"{len(listed)} resources listed; {', '.join(sorted(UNLISTED & files))} optional"


def kustomize_build(tree):
    kubectl = shutil.which("kubectl")
    cmd = [kubectl, "kustomize", tree.k8s_dir] if kubectl else [shutil.which("kustomize"), "build", tree.k8s_dir]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr.strip()
    built = [d for d in yaml.safe_load_all(out.stdout) if d]
    got = sorted((d["kind"], d["metadata"]["name"]) for d in built)
    want = sorted((d["kind"], d["metadata"]["name"]) for n, d in tree.resources if n not in UNLISTED)
    assert got == want, f"built {got}, expected {want}"
    for d in built:
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    return f"{len(built)} objects built and valid ({os.path.basename(cmd[0])})"
