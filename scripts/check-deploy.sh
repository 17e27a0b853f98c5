#!/usr/bin/env bash
# Checks the deployment artefacts in deploy/ offline, without a cluster or a Docker engine:
#
#   (a) every manifest in deploy/kubernetes against the Kubernetes 1.32 JSON schemas, strict
#       (unknown fields are errors); the ServiceMonitor (a CRD, absent from those schemas) by
#       its shape instead; the kustomization's resource list; `kubectl kustomize` if present;
#   (b) that the Dockerfile, the manifests, the ConfigMaps and the nginx example agree with
#       each other (port, probe paths, config and mappings paths, drain and grace periods, ...),
#       and, when a built image-gateway binary is there, that the binary accepts the
#       ConfigMaps' configuration and mapping files with the Deployment's environment;
#   (c) the nginx example with `nginx -t` (Debian's nginx binary is fetched with
#       `apt-get download` into target/ when nginx is not installed: nothing is started).
#
# One line per check, then `deploy: N passed, M failed` (`, K skipped` when some could not
# run); exits non-zero when any check failed.
#
# Python packages (scripts/check-deploy-requirements.txt) go to target/deploy-venv, installed
# once and again only when that file changes. Environment:
#   CHECK_DEPLOY_ROOT   the tree to check (default: this repository); for trying broken copies
#   IMAGE_GATEWAY_BIN   the binary for the configuration check (default: target/release or
#                       target/debug image-gateway of this repository, when built)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
root="$(cd "${CHECK_DEPLOY_ROOT:-$repo}" && pwd)"
requirements="$repo/scripts/check-deploy-requirements.txt"
venv="$repo/target/deploy-venv"
tools="$repo/target/deploy-tools"
python="${PYTHON:-python3}"

# --- the Python environment, idempotent: a stamp records what it was built from -------------
want="$(cat "$requirements" <("$python" -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$venv/.stamp" 2>/dev/null)" != "$want" ] || [ ! -x "$venv/bin/python" ]; then
  echo "setting up $venv" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
  echo "$want" > "$venv/.stamp"
fi

# --- nginx for (c): the installed one, or Debian's binary unpacked under target/ --------------
nginx_bin="$(command -v nginx || true)"
nginx_note=""
if [ -z "$nginx_bin" ] && [ -x "$tools/nginx/usr/sbin/nginx" ]; then
  nginx_bin="$tools/nginx/usr/sbin/nginx"
fi
if [ -z "$nginx_bin" ]; then
  if command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then
    dl="$(mktemp -d)"
    fetch_nginx() { (cd "$dl" && apt-get download nginx >/dev/null 2>&1); }
    # A machine whose package lists were never fetched needs `apt-get update` first.
    if fetch_nginx || { [ "$(id -u)" = 0 ] && apt-get update >/dev/null 2>&1 && fetch_nginx; }; then
      rm -rf "$tools/nginx"
      mkdir -p "$tools/nginx"
      dpkg-deb -x "$dl"/nginx_*.deb "$tools/nginx"
      nginx_bin="$tools/nginx/usr/sbin/nginx"
    else
      nginx_note="apt-get download nginx failed"
    fi
    rm -rf "$dl"
  else
    nginx_note="no nginx and no apt-get to fetch it"
  fi
fi

# --- the image-gateway binary for the configuration check, if one was built ----------------
gateway_bin="${IMAGE_GATEWAY_BIN:-}"
if [ -z "$gateway_bin" ]; then
  for candidate in "$repo/target/release/image-gateway" "$repo/target/debug/image-gateway"; do
    if [ -x "$candidate" ]; then gateway_bin="$candidate"; break; fi
  done
fi

export CHECK_ROOT="$root" CHECK_NGINX="$nginx_bin" CHECK_NGINX_NOTE="$nginx_note" CHECK_GATEWAY_BIN="$gateway_bin"
exec "$venv/bin/python" - <<'PY'
import copy
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

import dockerfile
import kubernetes_validate
import yaml

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

ROOT = os.environ["CHECK_ROOT"]
K8S_VERSION = "1.32"
K8S_DIR = os.path.join(ROOT, "deploy/kubernetes")
DOCKERFILE = os.path.join(ROOT, "deploy/Dockerfile")
NGINX_CONF = os.path.join(ROOT, "deploy/nginx/image-gateway.conf")
# In deploy/kubernetes but deliberately not in the kustomization (see kustomization.yaml).
UNLISTED = {"secret.example.yaml", "servicemonitor.yaml"}
# Names the manifests use for the gateway's pieces.
CONFIG_CM, MAPPINGS_CM, CONFIG_KEY = "image-gateway-config", "image-gateway-mappings", "gateway.toml"
# The gateway's built-in defaults (src/config.rs) for keys a configuration may leave out.
DEFAULT_DRAIN, DEFAULT_GRACE = 5.0, 25.0

passed = failed = skipped = 0


def ok(name, detail=""):
    global passed
    passed += 1
    print(f"ok    {name}" + (f": {detail}" if detail else ""))


def fail(name, detail):
    global failed
    failed += 1
    detail = " | ".join(line.strip() for line in str(detail).splitlines() if line.strip())
    print(f"FAIL  {name}: {detail[:600]}")


def skip(name, detail):
    global skipped
    skipped += 1
    print(f"skip  {name}: {detail}")


def check(name, fn):
    """Runs fn(); it returns a detail string (pass) or raises AssertionError (fail)."""
    try:
        ok(name, fn() or "")
    except AssertionError as e:
        fail(name, str(e) or "assertion failed")
    except Exception as e:  # a missing file or key is a failure of that check, not a crash
        fail(name, f"{type(e).__name__}: {e}")


def rel(path):
    return os.path.relpath(path, ROOT)


class StrictLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; Kubernetes manifests must not have any."""


def _no_duplicates(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)

# ---------------------------------------------------------------------------------------------
# (a) manifests: parse, schema, kustomization
# ---------------------------------------------------------------------------------------------
docs = {}  # file name -> [documents]
for path in sorted(glob.glob(os.path.join(K8S_DIR, "*.yaml")) + glob.glob(os.path.join(K8S_DIR, "*.yml"))):
    name = os.path.basename(path)
    try:
        with open(path) as f:
            docs[name] = [d for d in yaml.load_all(f, Loader=StrictLoader) if d is not None]
        ok(f"yaml {rel(path)}", f"{len(docs[name])} document(s)")
    except Exception as e:
        fail(f"yaml {rel(path)}", str(e).replace("\n", " "))

resources = []  # (file, doc) of every Kubernetes object, listed or not
for name, ds in docs.items():
    for d in ds:
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            fail(f"schema {name}", "a document without kind/apiVersion")
            continue
        if d["apiVersion"].startswith("kustomize.config.k8s.io/"):
            continue
        resources.append((name, d))


def schema_check(name, d):
    def run():
        api = d["apiVersion"]
        if api.startswith("monitoring.coreos.com/"):
            # A CRD: kubernetes-validate has no schema for it. Its shape (and its agreement with
            # the Service) is checked under "servicemonitor" below.
            assert d["kind"] == "ServiceMonitor" and api == "monitoring.coreos.com/v1", f"unexpected {api} {d['kind']}"
            assert isinstance(d.get("metadata", {}).get("name"), str), "metadata.name missing"
            return "CRD, not in the Kubernetes schemas: shape checked below"
        try:
            version = kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            raise AssertionError(f"{where}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            raise AssertionError(e.message)
        return f"Kubernetes {version}, strict"

    check(f"schema {name} {d['kind']}/{d.get('metadata', {}).get('name')}", run)


for name, d in resources:
    schema_check(name, d)


def objects(kind, only_listed=False):
    return [d for n, d in resources if d["kind"] == kind and (not only_listed or n not in UNLISTED)]


def one(kind, name=None):
    found = [d for d in objects(kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}{' ' + name if name else ''}, found {len(found)}"
    return found[0]


def kustomization():
    k = docs.get("kustomization.yaml")
    assert k, "deploy/kubernetes/kustomization.yaml missing or empty"
    k = k[0]
    listed = k.get("resources", [])
    missing = [r for r in listed if not os.path.isfile(os.path.join(K8S_DIR, r))]
    assert not missing, f"listed but missing: {missing}"
    files = set(docs) - {"kustomization.yaml"}
    stray = sorted(files - set(listed) - UNLISTED)
    assert not stray, f"in deploy/kubernetes but neither listed nor a documented optional file: {stray}"
    wrongly = sorted(UNLISTED & set(listed))
    assert not wrongly, f"optional files must stay out of the base: {wrongly}"
    assert "namespace" not in k, "the base must stay namespace-free"
    for n in listed:
        for d in docs.get(n, []):
            assert "namespace" not in d.get("metadata", {}), f"{n}: metadata.namespace set in the base"
    return f"{len(listed)} resources listed; {', '.join(sorted(UNLISTED & files))} optional"


check("kustomization resources", kustomization)


def kustomize_build():
    kubectl = shutil.which("kubectl")
    kustomize = shutil.which("kustomize")
    cmd = [kubectl, "kustomize", K8S_DIR] if kubectl else [kustomize, "build", K8S_DIR]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr.strip()
    built = [d for d in yaml.safe_load_all(out.stdout) if d]
    got = sorted((d["kind"], d["metadata"]["name"]) for d in built)
    want = sorted((d["kind"], d["metadata"]["name"]) for n, d in resources if n not in UNLISTED)
    assert got == want, f"built {got}, expected {want}"
    for d in built:
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    return f"{len(built)} objects built and valid ({os.path.basename(cmd[0])})"


if shutil.which("kubectl") or shutil.which("kustomize"):
    check("kustomize build", kustomize_build)
else:
    skip("kustomize build", "neither kubectl nor kustomize installed")

# ---------------------------------------------------------------------------------------------
# (b) consistency
# ---------------------------------------------------------------------------------------------


def parse_dockerfile():
    cmds = dockerfile.parse_file(DOCKERFILE)
    args, stages = {}, []
    for c in cmds:
        if c.cmd.upper() == "ARG" and not stages:
            for v in c.value:
                k, _, default = v.partition("=")
                args[k] = default
        if c.cmd.upper() == "FROM":
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), c.value[0])
            alias = c.value[2] if len(c.value) >= 3 and c.value[1].upper() == "AS" else None
            stages.append({"image": image, "alias": alias, "cmds": []})
        elif stages:
            stages[-1]["cmds"].append(c)
    return stages


stages = None
try:
    stages = parse_dockerfile()
    ok(f"dockerfile parses {rel(DOCKERFILE)}", f"{len(stages)} stages (BuildKit's parser)")
except Exception as e:
    fail(f"dockerfile parses {rel(DOCKERFILE)}", str(e))


def final_stage():
    assert stages, "the Dockerfile did not parse"
    return stages[-1]


def df_last(cmd, stage=None):
    stage = stage or final_stage()
    found = [c for c in stage["cmds"] if c.cmd.upper() == cmd]
    return found[-1] if found else None


def df_env():
    env = {}
    for c in final_stage()["cmds"]:
        if c.cmd.upper() == "ENV":
            for i in range(0, len(c.value) - 1, 2):
                env[c.value[i]] = c.value[i + 1]
    return env


def df_copy_dest(src):
    """Where the final stage copies `src` (a path in the build context) to."""
    for c in final_stage()["cmds"]:
        if c.cmd.upper() == "COPY" and not any(f.startswith("--from") for f in c.flags):
            if any(s.rstrip("/") == src.rstrip("/") for s in c.value[:-1]):
                return c.value[-1]
    raise AssertionError(f"the final stage does not COPY {src}")


def deployment():
    return one("Deployment")


def pod_spec():
    return deployment()["spec"]["template"]["spec"]


def container():
    cs = pod_spec()["containers"]
    assert len(cs) == 1, f"expected one container, found {len(cs)}"
    return cs[0]


def container_env():
    return {e["name"]: e.get("value") for e in container().get("env", []) if "value" in e}


def container_port(port):
    """A probe's or Service's port (number or name) as a container port number."""
    if isinstance(port, int):
        return port
    for p in container().get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    raise AssertionError(f"no container port named {port!r}")


def gateway_toml_text():
    cm = one("ConfigMap", CONFIG_CM)
    assert CONFIG_KEY in cm.get("data", {}), f"ConfigMap {CONFIG_CM} has no {CONFIG_KEY}"
    return cm["data"][CONFIG_KEY]


def gateway_toml():
    return tomllib.loads(gateway_toml_text())


def port_of(addr, where):
    m = re.fullmatch(r"(\[[^\]]+\]|[^:]+):(\d+)", str(addr))
    assert m, f"{where}: {addr!r} is not host:port"
    return m.group(1), int(m.group(2))


def mount_of_configmap(cm_name):
    """(mountPath, subPath) of the container's mount of a ConfigMap volume."""
    vols = [v["name"] for v in pod_spec().get("volumes", []) if v.get("configMap", {}).get("name") == cm_name]
    assert vols, f"no volume from ConfigMap {cm_name}"
    mounts = [m for m in container().get("volumeMounts", []) if m["name"] in vols]
    assert len(mounts) == 1, f"expected one mount of ConfigMap {cm_name}, found {len(mounts)}"
    return mounts[0]["mountPath"], mounts[0].get("subPath")


def c_port():
    sources = {}
    expose = df_last("EXPOSE")
    assert expose, "the Dockerfile has no EXPOSE"
    sources["Dockerfile EXPOSE"] = int(expose.value[0].split("/")[0])
    if "IMAGE_GATEWAY_LISTEN" in df_env():
        sources["Dockerfile ENV IMAGE_GATEWAY_LISTEN"] = port_of(df_env()["IMAGE_GATEWAY_LISTEN"], "Dockerfile")[1]
    ports = container().get("ports", [])
    assert len(ports) == 1, f"expected one container port, found {len(ports)}"
    sources["containerPort"] = ports[0]["containerPort"]
    svc = one("Service")
    assert len(svc["spec"]["ports"]) == 1, "expected one Service port"
    sources["Service targetPort"] = container_port(svc["spec"]["ports"][0]["targetPort"])
    if "IMAGE_GATEWAY_LISTEN" in container_env():
        sources["Deployment env IMAGE_GATEWAY_LISTEN"] = port_of(container_env()["IMAGE_GATEWAY_LISTEN"], "env")[1]
    if "listen" in gateway_toml():
        sources["ConfigMap listen"] = port_of(gateway_toml()["listen"], "ConfigMap")[1]
    ann = deployment()["spec"]["template"]["metadata"].get("annotations", {})
    if "prometheus.io/port" in ann:
        sources["prometheus.io/port"] = int(ann["prometheus.io/port"])
    assert len(set(sources.values())) == 1, f"ports differ: {sources}"
    return f"{sources['containerPort']} in {len(sources)} places"


def c_listen_host():
    addrs = {}
    if "IMAGE_GATEWAY_LISTEN" in df_env():
        addrs["Dockerfile ENV"] = df_env()["IMAGE_GATEWAY_LISTEN"]
    if "IMAGE_GATEWAY_LISTEN" in container_env():
        addrs["Deployment env"] = container_env()["IMAGE_GATEWAY_LISTEN"]
    if "listen" in gateway_toml():
        addrs["ConfigMap listen"] = gateway_toml()["listen"]
    assert addrs, "no listen address anywhere: the default 127.0.0.1 is unreachable in a pod"
    bad = {k: v for k, v in addrs.items() if port_of(v, k)[0] not in ("0.0.0.0", "[::]")}
    assert not bad, f"not all interfaces (unreachable from outside the container): {bad}"
    return ", ".join(f"{k} {v}" for k, v in addrs.items())


def c_probes():
    c = container()
    want = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"}
    port = c["ports"][0]["containerPort"]
    seen = []
    for probe, path in want.items():
        if probe not in c:
            assert probe == "startupProbe", f"{probe} missing"
            continue
        get = c[probe].get("httpGet")
        assert get, f"{probe} is not an httpGet probe"
        assert get.get("path") == path, f"{probe} path is {get.get('path')!r}, not {path}"
        assert container_port(get["port"]) == port, f"{probe} probes port {get['port']}, not {port}"
        seen.append(f"{probe[:-5]} {path}")
    return ", ".join(seen)


def c_config_path():
    entry = df_last("ENTRYPOINT").value if df_last("ENTRYPOINT") else ()
    cmd = container().get("args") or (df_last("CMD").value if df_last("CMD") else ())
    argv = list(container().get("command") or entry) + list(cmd)
    assert "--config" in argv, f"no --config in the container's command line {argv}"
    config = argv[argv.index("--config") + 1]
    mount, sub = mount_of_configmap(CONFIG_CM)
    mounted = mount if sub else os.path.join(mount, CONFIG_KEY)
    if sub:
        assert sub == CONFIG_KEY, f"subPath {sub!r} is not the ConfigMap key {CONFIG_KEY}"
    assert mounted == config, f"--config {config} but ConfigMap {CONFIG_CM} is mounted at {mounted}"
    baked = df_copy_dest("config/gateway.toml")
    assert baked == config, f"the image puts config/gateway.toml at {baked}, --config says {config}"
    return config


def c_mappings_dir():
    mount, sub = mount_of_configmap(MAPPINGS_CM)
    assert not sub, "the mappings ConfigMap must be mounted as a directory (no subPath)"
    sources = {"mount of " + MAPPINGS_CM: mount.rstrip("/")}
    if "IMAGE_GATEWAY_MAPPINGS_DIR" in df_env():
        sources["Dockerfile ENV"] = df_env()["IMAGE_GATEWAY_MAPPINGS_DIR"].rstrip("/")
    if "IMAGE_GATEWAY_MAPPINGS_DIR" in container_env():
        sources["Deployment env"] = container_env()["IMAGE_GATEWAY_MAPPINGS_DIR"].rstrip("/")
    if "mappings_dir" in gateway_toml():
        sources["ConfigMap mappings_dir"] = str(gateway_toml()["mappings_dir"]).rstrip("/")
    sources["Dockerfile COPY mappings/"] = df_copy_dest("mappings/").rstrip("/")
    assert len(sources) > 2, "mappings_dir is set nowhere: the gateway would use its built-in mappings"
    assert len(set(sources.values())) == 1, f"mappings directories differ: {sources}"
    return mount


def shutdown_values():
    sd = gateway_toml().get("shutdown", {})
    return float(sd.get("drain_delay_secs", DEFAULT_DRAIN)), float(sd.get("grace_period_secs", DEFAULT_GRACE))


def prestop_sleep():
    pre = container().get("lifecycle", {}).get("preStop")
    assert pre, "no preStop hook"
    assert "sleep" in pre, f"preStop is not the sleep handler (the distroless image has no shell): {pre}"
    return pre["sleep"]["seconds"]


def c_prestop():
    drain, _ = shutdown_values()
    s = prestop_sleep()
    assert s == drain, f"preStop sleeps {s} s but shutdown.drain_delay_secs is {drain:g}"
    return f"{s} s == shutdown.drain_delay_secs"


def c_termination():
    drain, grace = shutdown_values()
    t = pod_spec().get("terminationGracePeriodSeconds", 30)
    need = prestop_sleep() + drain + grace
    assert t >= need, (
        f"terminationGracePeriodSeconds {t} < preStop {prestop_sleep()} + drain {drain:g} + grace {grace:g} = {need:g}"
    )
    return f"{t} >= preStop {prestop_sleep()} + drain {drain:g} + grace {grace:g}"


def c_mappings_drift():
    cm = one("ConfigMap", MAPPINGS_CM)
    data = cm.get("data", {})
    repo = {os.path.basename(p): open(p).read() for p in glob.glob(os.path.join(ROOT, "mappings", "*.toml"))}
    assert repo, "no mappings/*.toml in the repository"
    only_repo = sorted(set(repo) - set(data))
    only_cm = sorted(set(data) - set(repo))
    differ = sorted(k for k in set(repo) & set(data) if repo[k] != data[k])
    assert not (only_repo or only_cm or differ), (
        f"ConfigMap {MAPPINGS_CM} differs from mappings/ (missing {only_repo}, extra {only_cm}, "
        f"changed {differ}); regenerate it as its header says"
    )
    return f"{', '.join(sorted(data))} identical to mappings/"


def c_service_links():
    v = pod_spec().get("enableServiceLinks", True)
    assert v is False, (
        "enableServiceLinks must be false: the Service image-gateway would inject "
        "IMAGE_GATEWAY_SERVICE_HOST/IMAGE_GATEWAY_PORT..., which the gateway rejects as unknown keys"
    )
    return "no IMAGE_GATEWAY_* variables injected for Services"


def c_selectors():
    labels = deployment()["spec"]["template"]["metadata"]["labels"]

    def matches(sel, what):
        assert sel and all(labels.get(k) == v for k, v in sel.items()), f"{what} {sel} does not select the pods {labels}"

    matches(deployment()["spec"]["selector"]["matchLabels"], "Deployment selector")
    matches(one("Service")["spec"]["selector"], "Service selector")
    matches(one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], "PodDisruptionBudget selector")
    pdb = one("PodDisruptionBudget")["spec"]
    assert pdb.get("minAvailable") == 1, f"PodDisruptionBudget minAvailable {pdb.get('minAvailable')}, expected 1"
    hpa = one("HorizontalPodAutoscaler")["spec"]
    ref = hpa["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", deployment()["metadata"]["name"]), f"HPA targets {ref}"
    assert "cpu" in container().get("resources", {}).get("requests", {}), "HPA on CPU needs a CPU request"
    assert hpa.get("minReplicas", 1) <= deployment()["spec"].get("replicas", 1) <= hpa["maxReplicas"], (
        "Deployment replicas outside the HPA's range"
    )
    return "Deployment, Service, PDB select the pods; HPA targets the Deployment"


def c_ingress():
    ing = one("Ingress")
    svc = one("Service")
    svc_ports = {p.get("name") for p in svc["spec"]["ports"]} | {p["port"] for p in svc["spec"]["ports"]}
    paths = []
    for rule in ing["spec"]["rules"]:
        for p in rule["http"]["paths"]:
            b = p["backend"]["service"]
            assert b["name"] == svc["metadata"]["name"], f"Ingress path {p['path']} goes to Service {b['name']}"
            port = b["port"].get("name", b["port"].get("number"))
            assert port in svc_ports, f"Ingress path {p['path']} goes to Service port {port!r}"
            paths.append(p["path"])
    # The gateway's defaults, as config/gateway.toml spells them, under the ConfigMap's entries.
    dialects = {
        "nova": {"kind": "nova", "mounts": ["/v2.1"], "legacy_mounts": ["/v2"]},
        "alliance": {"kind": "alliance", "mounts": [""]},
        "glance_v1": {"kind": "glance_v1", "mounts": ["/image-v1"]},
    }
    for name, entry in gateway_toml().get("dialects", {}).items():
        dialects[name] = {**dialects.get(name, {}), **entry}
    want = {"/"}
    for entry in dialects.values():
        suffix = "/images" if entry.get("kind") == "alliance" else ""
        want |= {m + suffix for m in entry.get("mounts", []) + entry.get("legacy_mounts", [])}
    assert want <= set(paths), f"Ingress paths {paths} miss {sorted(want - set(paths))}"
    return f"{', '.join(paths)} -> Service {svc['metadata']['name']}"


def c_security():
    pod = pod_spec().get("securityContext", {})
    ctr = container().get("securityContext", {})
    merged = {**pod, **ctr}
    assert merged.get("runAsNonRoot") is True, "runAsNonRoot is not true"
    uid = merged.get("runAsUser")
    user = df_last("USER").value[0] if df_last("USER") else "root"
    assert user.split(":")[0] not in ("root", "0"), f"the image runs as {user}"
    if not user.split(":")[0].isdigit():
        assert isinstance(uid, int) and uid > 0, (
            f"the image's USER {user} is a name, so the kubelet cannot verify runAsNonRoot: set a numeric runAsUser"
        )
    assert ctr.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation is not false"
    assert ctr.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem is not true"
    assert "ALL" in ctr.get("capabilities", {}).get("drop", []), "capabilities do not drop ALL"
    assert merged.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccompProfile is not RuntimeDefault"
    assert pod_spec().get("automountServiceAccountToken") is False, "automountServiceAccountToken is not false"
    return f"restricted; USER {user}, runAsUser {uid}"


def c_secret():
    refs = [e["secretRef"] for e in container().get("envFrom", []) if "secretRef" in e]
    refs += [
        e["valueFrom"]["secretKeyRef"] for e in container().get("env", []) if "secretKeyRef" in e.get("valueFrom", {})
    ]
    assert refs, "the Deployment takes nothing from a Secret"
    secrets = {s["metadata"]["name"]: s for s in objects("Secret")}
    for r in refs:
        assert r["name"] in secrets, f"Secret {r['name']} is referenced, but no example of it is in deploy/kubernetes"
        assert r.get("optional") is True, f"the reference to Secret {r['name']} is not optional: pods would not start without it"
    for s in secrets.values():
        keys = list(s.get("stringData", {})) + list(s.get("data", {}))
        bad = [k for k in keys if not re.fullmatch(r"IMAGE_GATEWAY_[A-Za-z0-9_]+", k)]
        assert not bad, f"Secret {s['metadata']['name']} keys are not IMAGE_GATEWAY_* variables: {bad}"
    return ", ".join(sorted({r["name"] for r in refs})) + " (optional)"


def c_servicemonitor():
    sms = objects("ServiceMonitor")
    assert sms, "no ServiceMonitor"
    svc = one("Service")
    for sm in sms:
        spec = sm["spec"]
        extra = set(spec) - {"selector", "endpoints", "namespaceSelector", "jobLabel", "targetLabels", "podTargetLabels"}
        assert not extra, f"unexpected spec fields {sorted(extra)}"
        sel = spec["selector"]["matchLabels"]
        assert all(svc["metadata"].get("labels", {}).get(k) == v for k, v in sel.items()), (
            f"selector {sel} does not match the Service's labels {svc['metadata'].get('labels')}"
        )
        names = {p.get("name") for p in svc["spec"]["ports"]}
        for ep in spec["endpoints"]:
            assert ep.get("port") in names, f"endpoint port {ep.get('port')!r} is not a Service port name {names}"
            assert ep.get("path", "/metrics") == "/metrics", f"endpoint path {ep.get('path')}"
    return "selects the Service, scrapes port http /metrics"


def c_dockerfile():
    assert len(stages) >= 2, "not multi-stage"
    builder, final = stages[0], stages[-1]
    m = re.fullmatch(r"(docker\.io/)?(library/)?rust:(1\.\d+)(\.\d+)?(-[a-z0-9.-]+)?", builder["image"])
    assert m, f"builder {builder['image']!r} is not the official rust image with a pinned 1.x tag"
    runs = " ".join(" ".join(c.value) for c in builder["cmds"] if c.cmd.upper() == "RUN")
    builds = [b.strip() for b in re.findall(r"cargo build[^&;|]*", runs)]
    assert builds and all("--locked" in b and "--release" in b for b in builds), f"cargo build without --locked --release: {builds}"
    assert not [c for c in final["cmds"] if c.cmd.upper() == "RUN"], "RUN in the final stage (it has no shell)"
    for instr in ("ENTRYPOINT", "CMD"):
        c = df_last(instr)
        assert c and c.json, f"{instr} is missing or in shell form (the runtime image has no shell)"
    assert df_last("ENTRYPOINT").value[0] == "/usr/local/bin/image-gateway", "ENTRYPOINT is not the binary"
    assert tuple(df_last("CMD").value[:1]) == ("serve",), "CMD does not serve"
    copied = [c.value[-1] for c in final["cmds"] if c.cmd.upper() == "COPY" and any(f.startswith("--from") for f in c.flags)]
    assert "/usr/local/bin/image-gateway" in copied, "the binary is not copied to /usr/local/bin/image-gateway"
    # Every COPY source from the build context must exist there (the context is the repo root).
    missing = []
    for st in stages:
        for c in st["cmds"]:
            if c.cmd.upper() in ("COPY", "ADD") and not any(f.startswith("--from") for f in c.flags):
                missing += [s for s in c.value[:-1] if not glob.glob(os.path.join(ROOT, s))]
    assert not missing, f"COPY sources not in the repository root (the build context): {missing}"
    return f"{builder['image']} -> {final['image']}"


def c_nginx_example():
    text = open(NGINX_CONF).read()
    body = re.sub(r"#.*", "", text)
    need = {
        "upstream keepalive": r"upstream\s+\S+\s*\{[^}]*\bkeepalive\s+\d+;",
        "proxy_http_version 1.1": r"proxy_http_version\s+1\.1;",
        'Connection ""': r'proxy_set_header\s+Connection\s+"";',
        "X-Forwarded-For": r"proxy_set_header\s+X-Forwarded-For\s",
        "X-Forwarded-Proto": r"proxy_set_header\s+X-Forwarded-Proto\s",
        "X-Forwarded-Host": r"proxy_set_header\s+X-Forwarded-Host\s",
        "client_max_body_size 0": r"client_max_body_size\s+0;",
        "proxy_request_buffering off": r"proxy_request_buffering\s+off;",
        "proxy_buffering off": r"proxy_buffering\s+off;",
        "location = /readyz": r"location\s*=\s*/readyz",
    }
    missing = [k for k, pat in need.items() if not re.search(pat, body)]
    assert not missing, f"missing: {missing}"
    port = container()["ports"][0]["containerPort"]
    upstreams = re.findall(r"upstream\s+\S+\s*\{([^}]*)\}", body)
    servers = [s for u in upstreams for s in re.findall(r"^\s*server\s+([^\s;]+)[^;]*;", u, re.M)]
    bad = [s for s in servers if not s.endswith(f":{port}")]
    assert servers and not bad, f"upstream servers {servers} are not on the gateway's port {port}"
    return f"directives present; upstream port {port}"


for name, fn in [
    ("port agrees (EXPOSE, containerPort, Service targetPort, listen)", c_port),
    ("listen on all interfaces", c_listen_host),
    ("probe paths", c_probes),
    ("--config path is the ConfigMap mount", c_config_path),
    ("mappings dir is the ConfigMap mount", c_mappings_dir),
    ("preStop sleep == drain_delay_secs", c_prestop),
    ("terminationGracePeriodSeconds covers preStop + drain + grace", c_termination),
    ("mappings ConfigMap == mappings/", c_mappings_drift),
    ("enableServiceLinks false", c_service_links),
    ("selectors and targets", c_selectors),
    ("ingress routes the API mounts to the Service", c_ingress),
    ("restricted securityContext", c_security),
    ("credentials Secret reference", c_secret),
    ("servicemonitor shape", c_servicemonitor),
    ("dockerfile build and runtime", c_dockerfile),
    ("nginx example directives", c_nginx_example),
]:
    check(name, fn)


def gateway_check(binary, with_secrets=False):
    """`image-gateway check` on the ConfigMaps as mounted, with the Deployment's environment
    (and, with_secrets, every example Secret's keys, plus a keystone.url if the ConfigMap has
    none, as a real deployment that uses those credentials must set one)."""
    with tempfile.TemporaryDirectory() as tmp:
        config_path = tmp + c_config_path()
        os.makedirs(os.path.dirname(config_path), exist_ok=True)
        with open(config_path, "w") as f:
            f.write(gateway_toml_text())
        mappings = tmp + c_mappings_dir()
        os.makedirs(mappings, exist_ok=True)
        for k, v in one("ConfigMap", MAPPINGS_CM)["data"].items():
            with open(os.path.join(mappings, k), "w") as f:
                f.write(v)
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGE_GATEWAY_") and k != "RUST_LOG"}
        env.update(df_env())  # the image's ENV, then the Deployment's env over it
        env.update(container_env())
        env["IMAGE_GATEWAY_MAPPINGS_DIR"] = mappings  # the mount path, moved under tmp
        if with_secrets:
            secrets = objects("Secret")
            assert secrets, "no example Secret"
            for sec in secrets:
                env.update({k: str(v) for k, v in sec.get("stringData", {}).items()})
            if "url" not in gateway_toml().get("keystone", {}):
                env["IMAGE_GATEWAY_KEYSTONE__URL"] = "http://keystone.invalid:5000/v3"
        out = subprocess.run([binary, "check", "--config", config_path], env=env, capture_output=True, text=True, timeout=60)
        msg = (out.stdout + out.stderr).strip().replace(tmp, "")
        assert out.returncode == 0, msg
        return f"{msg} ({binary})"


gateway_bin = os.environ.get("CHECK_GATEWAY_BIN")
if gateway_bin:
    check("image-gateway check accepts the ConfigMaps and env", lambda: gateway_check(gateway_bin))
    check("image-gateway check accepts the example Secret's keys", lambda: gateway_check(gateway_bin, True))
else:
    for what in ("the ConfigMaps and env", "the example Secret's keys"):
        skip(f"image-gateway check accepts {what}", "no built binary (target/{release,debug}/image-gateway)")

# ---------------------------------------------------------------------------------------------
# (c) nginx -t
# ---------------------------------------------------------------------------------------------


def nginx_t(nginx):
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "logs"))
        temp = "\n".join(
            f"    {d}_temp_path {tmp}/{d};" for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        wrapper = os.path.join(tmp, "nginx.conf")
        with open(wrapper, "w") as f:
            f.write(
                f"pid {tmp}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n"
                f"    access_log {tmp}/logs/access.log;\n{temp}\n    include {NGINX_CONF};\n}}\n"
            )
        out = subprocess.run([nginx, "-t", "-p", tmp + "/", "-e", "stderr", "-c", wrapper], capture_output=True, text=True, timeout=60)
        msg = (out.stdout + out.stderr).strip().replace(tmp, "")
        assert out.returncode == 0, msg.replace("\n", " | ")
        version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
        return f"{version}, {nginx}"


nginx = os.environ.get("CHECK_NGINX")
if nginx:
    check(f"nginx -t {rel(NGINX_CONF)}", lambda: nginx_t(nginx))
else:
    skip(f"nginx -t {rel(NGINX_CONF)}", os.environ.get("CHECK_NGINX_NOTE") or "no nginx")

summary = f"deploy: {passed} passed, {failed} failed"
if skipped:
    summary += f", {skipped} skipped"
print(summary)
sys.exit(1 if failed else 0)
PY
