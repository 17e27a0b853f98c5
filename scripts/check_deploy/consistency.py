"""(b) the artefacts agree with each other: the Dockerfile, the manifests, the ConfigMaps and the
nginx example (port, probe paths, config and mappings paths, drain and grace periods, ...); a
built image-gateway binary accepts the ConfigMaps' files with the Deployment's environment;
(c) the nginx example passes `nginx -t`."""

import glob
import os
import re
import subprocess
import tempfile

from tree import CONFIG_CM, CONFIG_KEY, MAPPINGS_CM, Tree, port_of

# The gateway's built-in defaults (src/config.rs) for keys a configuration may leave out.
DEFAULT_DRAIN, DEFAULT_GRACE = 5.0, 25.0


def run(report, tree, gateway_bin, nginx, nginx_note):
    report.check(
        f"dockerfile parses {tree.rel(tree.dockerfile_path)}",
        lambda: f"{tree.parse_dockerfile()} stages (BuildKit's parser)",
    )
    for name, fn in CHECKS:
        report.check(name, fn, tree)
    for what, old, new in DOCKERFILE_SELF_TESTS:
        report.check(f"self-test: {what} fails the dockerfile check", dockerfile_caught, tree, old, new)
    if gateway_bin:
        report.check("image-gateway check accepts the ConfigMaps and env", gateway_check, tree, gateway_bin)
        report.check("image-gateway check accepts the example Secret's keys", gateway_check, tree, gateway_bin, True)
    else:
        for what in ("the ConfigMaps and env", "the example Secret's keys"):
            report.skip(f"image-gateway check accepts {what}", "no built binary (target/{release,debug}/image-gateway)")
    if nginx:
        report.check(f"nginx -t {tree.rel(tree.nginx_conf)}", nginx_t, nginx, tree.nginx_conf)
    else:
        report.skip(f"nginx -t {tree.rel(tree.nginx_conf)}", nginx_note or "no nginx")


def c_port(t):
    sources = {}
    expose = t.df_last("EXPOSE")
    assert expose, "the Dockerfile has no EXPOSE"
    sources["Dockerfile EXPOSE"] = int(expose.value[0].split("/")[0])
    if "IMAGE_GATEWAY_LISTEN" in t.df_env():
        sources["Dockerfile ENV IMAGE_GATEWAY_LISTEN"] = port_of(t.df_env()["IMAGE_GATEWAY_LISTEN"], "Dockerfile")[1]
    ports = t.container().get("ports", [])
    assert len(ports) == 1, f"expected one container port, found {len(ports)}"
    sources["containerPort"] = ports[0]["containerPort"]
    svc = t.one("Service")
    assert len(svc["spec"]["ports"]) == 1, "expected one Service port"
    sources["Service targetPort"] = t.container_port(svc["spec"]["ports"][0]["targetPort"])
    if "IMAGE_GATEWAY_LISTEN" in t.container_env():
        sources["Deployment env IMAGE_GATEWAY_LISTEN"] = port_of(t.container_env()["IMAGE_GATEWAY_LISTEN"], "env")[1]
    if "listen" in t.gateway_toml():
        sources["ConfigMap listen"] = port_of(t.gateway_toml()["listen"], "ConfigMap")[1]
    ann = t.deployment()["spec"]["template"]["metadata"].get("annotations", {})
    if "prometheus.io/port" in ann:
        sources["prometheus.io/port"] = int(ann["prometheus.io/port"])
    assert len(set(sources.values())) == 1, f"ports differ: {sources}"
    return f"{sources['containerPort']} in {len(sources)} places"


def c_listen_host(t):
    addrs = {}
    if "IMAGE_GATEWAY_LISTEN" in t.df_env():
        addrs["Dockerfile ENV"] = t.df_env()["IMAGE_GATEWAY_LISTEN"]
    if "IMAGE_GATEWAY_LISTEN" in t.container_env():
        addrs["Deployment env"] = t.container_env()["IMAGE_GATEWAY_LISTEN"]
    if "listen" in t.gateway_toml():
        addrs["ConfigMap listen"] = t.gateway_toml()["listen"]
    assert addrs, "no listen address anywhere: the default 127.0.0.1 is unreachable in a pod"
    bad = {k: v for k, v in addrs.items() if port_of(v, k)[0] not in ("0.0.0.0", "[::]")}
    assert not bad, f"not all interfaces (unreachable from outside the container): {bad}"
    return ", ".join(f"{k} {v}" for k, v in addrs.items())


def c_probes(t):
    c = t.container()
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
        assert t.container_port(get["port"]) == port, f"{probe} probes port {get['port']}, not {port}"
        seen.append(f"{probe[:-5]} {path}")
    return ", ".join(seen)


def c_config_path(t):
    entry = t.df_last("ENTRYPOINT").value if t.df_last("ENTRYPOINT") else ()
    cmd = t.container().get("args") or (t.df_last("CMD").value if t.df_last("CMD") else ())
    argv = list(t.container().get("command") or entry) + list(cmd)
    assert "--config" in argv, f"no --config in the container's command line {argv}"
    config = argv[argv.index("--config") + 1]
    mount, sub = t.mount_of_configmap(CONFIG_CM)
    # A subPath mount is never updated: the gateway would not see a ConfigMap change to reload.
    assert not sub, f"the config ConfigMap must be mounted as a directory (not subPath {sub!r})"
    mounted = os.path.join(mount, CONFIG_KEY)
    assert mounted == config, f"--config {config} but ConfigMap {CONFIG_CM} is mounted at {mounted}"
    baked = t.df_copy_dest("config/gateway.toml")
    assert baked == config, f"the image puts config/gateway.toml at {baked}, --config says {config}"
    return config


def c_mappings_dir(t):
    mount, sub = t.mount_of_configmap(MAPPINGS_CM)
    assert not sub, "the mappings ConfigMap must be mounted as a directory (no subPath)"
    sources = {"mount of " + MAPPINGS_CM: mount.rstrip("/")}
    if "IMAGE_GATEWAY_MAPPINGS_DIR" in t.df_env():
        sources["Dockerfile ENV"] = t.df_env()["IMAGE_GATEWAY_MAPPINGS_DIR"].rstrip("/")
    if "IMAGE_GATEWAY_MAPPINGS_DIR" in t.container_env():
        sources["Deployment env"] = t.container_env()["IMAGE_GATEWAY_MAPPINGS_DIR"].rstrip("/")
    if "mappings_dir" in t.gateway_toml():
        sources["ConfigMap mappings_dir"] = str(t.gateway_toml()["mappings_dir"]).rstrip("/")
    sources["Dockerfile COPY mappings/"] = t.df_copy_dest("mappings/").rstrip("/")
    assert len(sources) > 2, "mappings_dir is set nowhere: the gateway would use its built-in mappings"
    assert len(set(sources.values())) == 1, f"mappings directories differ: {sources}"
    return mount


def shutdown_values(t):
    sd = t.gateway_toml().get("shutdown", {})
    return float(sd.get("drain_delay_secs", DEFAULT_DRAIN)), float(sd.get("grace_period_secs", DEFAULT_GRACE))


def prestop_sleep(t):
    pre = t.container().get("lifecycle", {}).get("preStop")
    assert pre, "no preStop hook"
    assert "sleep" in pre, f"preStop is not the sleep handler (the distroless image has no shell): {pre}"
    return pre["sleep"]["seconds"]


def c_prestop(t):
    drain, _ = shutdown_values(t)
    s = prestop_sleep(t)
    assert s == drain, f"preStop sleeps {s} s but shutdown.drain_delay_secs is {drain:g}"
    return f"{s} s == shutdown.drain_delay_secs"


def c_termination(t):
    drain, grace = shutdown_values(t)
    period = t.pod_spec().get("terminationGracePeriodSeconds", 30)
    pre = prestop_sleep(t)
    need = pre + drain + grace
    assert period >= need, (
        f"terminationGracePeriodSeconds {period} < preStop {pre} + drain {drain:g} + grace {grace:g} = {need:g}"
    )
    return f"{period} >= preStop {pre} + drain {drain:g} + grace {grace:g}"


def c_mappings_drift(t):
    cm = t.one("ConfigMap", MAPPINGS_CM)
    data = cm.get("data", {})
    repo = {os.path.basename(p): open(p).read() for p in glob.glob(os.path.join(t.root, "mappings", "*.toml"))}
    assert repo, "no mappings/*.toml in the repository"
    only_repo = sorted(set(repo) - set(data))
    only_cm = sorted(set(data) - set(repo))
    differ = sorted(k for k in set(repo) & set(data) if repo[k] != data[k])
    assert not (only_repo or only_cm or differ), (
        f"ConfigMap {MAPPINGS_CM} differs from mappings/ (missing {only_repo}, extra {only_cm}, "
        f"changed {differ}); regenerate it as its header says"
    )
    return f"{', '.join(sorted(data))} identical to mappings/"


def c_service_links(t):
    v = t.pod_spec().get("enableServiceLinks", True)
    assert v is False, (
        "enableServiceLinks must be false: the Service image-gateway would inject "
        "IMAGE_GATEWAY_SERVICE_HOST/IMAGE_GATEWAY_PORT..., which the gateway rejects as unknown keys"
    )
    return "no IMAGE_GATEWAY_* variables injected for Services"


def c_selectors(t):
    labels = t.deployment()["spec"]["template"]["metadata"]["labels"]

    def matches(sel, what):
        assert sel and all(labels.get(k) == v for k, v in sel.items()), (
            f"{what} {sel} does not select the pods {labels}"
        )

    matches(t.deployment()["spec"]["selector"]["matchLabels"], "Deployment selector")
    matches(t.one("Service")["spec"]["selector"], "Service selector")
    matches(t.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], "PodDisruptionBudget selector")
    pdb = t.one("PodDisruptionBudget")["spec"]
    assert pdb.get("minAvailable") == 1, f"PodDisruptionBudget minAvailable {pdb.get('minAvailable')}, expected 1"
    hpa = t.one("HorizontalPodAutoscaler")["spec"]
    ref = hpa["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", t.deployment()["metadata"]["name"]), f"HPA targets {ref}"
    assert "cpu" in t.container().get("resources", {}).get("requests", {}), "HPA on CPU needs a CPU request"
    assert hpa.get("minReplicas", 1) <= t.deployment()["spec"].get("replicas", 1) <= hpa["maxReplicas"], (
        "Deployment replicas outside the HPA's range"
    )
    return "Deployment, Service, PDB select the pods; HPA targets the Deployment"


def c_ingress(t):
    ing = t.one("Ingress")
    svc = t.one("Service")
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
    for name, entry in t.gateway_toml().get("dialects", {}).items():
        dialects[name] = {**dialects.get(name, {}), **entry}
    want = {"/"}
    for entry in dialects.values():
        suffix = "/images" if entry.get("kind") == "alliance" else ""
        want |= {m + suffix for m in entry.get("mounts", []) + entry.get("legacy_mounts", [])}
    assert want <= set(paths), f"Ingress paths {paths} miss {sorted(want - set(paths))}"
    return f"{', '.join(paths)} -> Service {svc['metadata']['name']}"


def c_security(t):
    pod = t.pod_spec().get("securityContext", {})
    ctr = t.container().get("securityContext", {})
    merged = {**pod, **ctr}
    assert merged.get("runAsNonRoot") is True, "runAsNonRoot is not true"
    uid = merged.get("runAsUser")
    user = t.df_last("USER").value[0] if t.df_last("USER") else "root"
    assert user.split(":")[0] not in ("root", "0"), f"the image runs as {user}"
    if not user.split(":")[0].isdigit():
        assert isinstance(uid, int) and uid > 0, (
            f"the image's USER {user} is a name, so the kubelet cannot verify runAsNonRoot: set a numeric runAsUser"
        )
    assert ctr.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation is not false"
    assert ctr.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem is not true"
    assert "ALL" in ctr.get("capabilities", {}).get("drop", []), "capabilities do not drop ALL"
    assert merged.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccompProfile is not RuntimeDefault"
    assert t.pod_spec().get("automountServiceAccountToken") is False, "automountServiceAccountToken is not false"
    return f"restricted; USER {user}, runAsUser {uid}"


def c_secret(t):
    refs = [e["secretRef"] for e in t.container().get("envFrom", []) if "secretRef" in e]
    refs += [
        e["valueFrom"]["secretKeyRef"] for e in t.container().get("env", []) if "secretKeyRef" in e.get("valueFrom", {})
    ]
    assert refs, "the Deployment takes nothing from a Secret"
    secrets = {s["metadata"]["name"]: s for s in t.objects("Secret")}
    for r in refs:
        assert r["name"] in secrets, f"Secret {r['name']} is referenced, but no example of it is in deploy/kubernetes"
        assert r.get("optional") is True, (
            f"the reference to Secret {r['name']} is not optional: pods would not start without it"
        )
    for s in secrets.values():
        keys = list(s.get("stringData", {})) + list(s.get("data", {}))
        bad = [k for k in keys if not re.fullmatch(r"IMAGE_GATEWAY_[A-Za-z0-9_]+", k)]
        assert not bad, f"Secret {s['metadata']['name']} keys are not IMAGE_GATEWAY_* variables: {bad}"
    return ", ".join(sorted({r["name"] for r in refs})) + " (optional)"


def c_servicemonitor(t):
    sms = t.objects("ServiceMonitor")
    assert sms, "no ServiceMonitor"
    svc = t.one("Service")
    for sm in sms:
        spec = sm["spec"]
        extra = set(spec) - {
            "selector",
            "endpoints",
            "namespaceSelector",
            "jobLabel",
            "targetLabels",
            "podTargetLabels",
        }
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


def c_dockerfile(t):
    assert len(t.stages) >= 2, "not multi-stage"
    image = t.stage_chain(t.final_stage())
    copies = [c for c in t.final_cmds() if c.cmd.upper() == "COPY" and c.value[-1] == "/usr/local/bin/image-gateway"]
    assert copies, "the binary is not copied to /usr/local/bin/image-gateway"
    src_flag = [f for f in copies[-1].flags if f.startswith("--from=")]
    assert src_flag, "the default target's binary is not copied from a build stage"
    # What a plain `docker build` runs: the builder stage the final image copies the binary from.
    chain = t.stage_chain(src_flag[0].partition("=")[2])
    builder = chain[-1]
    m = re.fullmatch(r"(docker\.io/)?(library/)?rust:(1\.\d+)(\.\d+)?(-[a-z0-9.-]+)?", builder["image"])
    assert m, f"builder {builder['image']!r} is not the official rust image with a pinned 1.x tag"
    runs = " ".join(" ".join(c.value) for st in chain for c in st["cmds"] if c.cmd.upper() == "RUN")
    builds = [b.strip() for b in re.findall(r"cargo build[^&;|]*", runs)]
    assert builds and all("--locked" in b and "--release" in b for b in builds), (
        f"cargo build without --locked --release: {builds}"
    )
    assert not [c for c in t.final_cmds() if c.cmd.upper() == "RUN"], "RUN in the final image (it has no shell)"
    for instr in ("ENTRYPOINT", "CMD"):
        c = t.df_last(instr)
        assert c and c.json, f"{instr} is missing or in shell form (the runtime image has no shell)"
    assert t.df_last("ENTRYPOINT").value[0] == "/usr/local/bin/image-gateway", "ENTRYPOINT is not the binary"
    assert tuple(t.df_last("CMD").value[:1]) == ("serve",), "CMD does not serve"
    # Every COPY source a plain build reads must exist in the build context (the repo root).
    # Other stages (the `prebuilt` target) may only read build outputs under target/; one of
    # them must be the final image's runtime with a binary from the host.
    missing, outside, alternatives = [], [], []
    for st in t.stages:
        sources = [
            t.expand(st, s)
            for c in st["cmds"]
            if c.cmd.upper() in ("COPY", "ADD") and not any(f.startswith("--from") for f in c.flags)
            for s in c.value[:-1]
        ]
        if st in chain or st in image:
            missing += [s for s in sources if not glob.glob(os.path.join(t.root, s))]
            continue
        outside += [s for s in sources if not s.startswith("target/")]
        binary = any(c.cmd.upper() == "COPY" and c.value[-1] == "/usr/local/bin/image-gateway" for c in st["cmds"])
        if binary and image[1:] and t.stage_chain(st)[1:2] == image[1:2]:
            alternatives.append(st["alias"])
    assert not missing, f"COPY sources not in the repository root (the build context): {missing}"
    assert not outside, f"a stage off the default build reads sources other than build outputs: {outside}"
    assert alternatives, "no other target puts a host-built binary on the final image's runtime stage"
    return (
        f"{builder['image']} -> {image[-1]['image']}; --target {', '.join(alternatives)}: "
        f"the host's binary on {image[-1]['image']}"
    )


def c_nginx_example(t):
    text = open(t.nginx_conf).read()
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
    port = t.container()["ports"][0]["containerPort"]
    upstreams = re.findall(r"upstream\s+\S+\s*\{([^}]*)\}", body)
    servers = [s for u in upstreams for s in re.findall(r"^\s*server\s+([^\s;]+)[^;]*;", u, re.M)]
    bad = [s for s in servers if not s.endswith(f":{port}")]
    assert servers and not bad, f"upstream servers {servers} are not on the gateway's port {port}"
    return f"directives present; upstream port {port}"


CHECKS = [
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
]


# (what is broken, a text in deploy/Dockerfile, what replaces that text)
DOCKERFILE_SELF_TESTS = [
    (
        "a plain build taking the host's binary",
        "COPY --from=cargo /build/target/release/image-gateway",
        "COPY target/release/image-gateway",
    ),
    ("a RUN in the runtime stage", "AS runtime\n", "AS runtime\nRUN true\n"),
    ("the prebuilt target reading a source file", "PREBUILT_BINARY=target/", "PREBUILT_BINARY=src/"),
    ("the prebuilt target on another base", "FROM runtime AS prebuilt", "FROM scratch AS prebuilt"),
]


def dockerfile_caught(t, old, new):
    """Passes when c_dockerfile fails on a copy of the Dockerfile with `old` replaced by `new`."""
    text = open(t.dockerfile_path).read()
    assert old in text, f"the self-test's anchor {old!r} is gone from the Dockerfile: update the self-test"
    copy = Tree(t.root)
    copy.parse_dockerfile(text.replace(old, new, 1))
    try:
        c_dockerfile(copy)
    except AssertionError as e:
        return "caught: " + " ".join(str(e).split())[:200]
    raise AssertionError("the broken copy passed")


def gateway_check(t, binary, with_secrets=False):
    """`image-gateway check` on the ConfigMaps as mounted, with the Deployment's environment
    (and, with_secrets, every example Secret's keys, plus a keystone.url if the ConfigMap has
    none, as a real deployment that uses those credentials must set one)."""
    with tempfile.TemporaryDirectory() as tmp:
        config_path = tmp + c_config_path(t)
        os.makedirs(os.path.dirname(config_path), exist_ok=True)
        with open(config_path, "w") as f:
            f.write(t.gateway_toml_text())
        mappings = tmp + c_mappings_dir(t)
        os.makedirs(mappings, exist_ok=True)
        for k, v in t.one("ConfigMap", MAPPINGS_CM)["data"].items():
            with open(os.path.join(mappings, k), "w") as f:
                f.write(v)
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGE_GATEWAY_") and k != "RUST_LOG"}
        env.update(t.df_env())  # the image's ENV, then the Deployment's env over it
        env.update(t.container_env())
        env["IMAGE_GATEWAY_MAPPINGS_DIR"] = mappings  # the mount path, moved under tmp
        if with_secrets:
            secrets = t.objects("Secret")
            assert secrets, "no example Secret"
            for sec in secrets:
                env.update({k: str(v) for k, v in sec.get("stringData", {}).items()})
            if "url" not in t.gateway_toml().get("keystone", {}):
                env["IMAGE_GATEWAY_KEYSTONE__URL"] = "http://keystone.invalid:5000/v3"
        out = subprocess.run(
            [binary, "check", "--config", config_path], env=env, capture_output=True, text=True, timeout=60
        )
        msg = (out.stdout + out.stderr).strip().replace(tmp, "")
        assert out.returncode == 0, msg
        return f"{msg} ({binary})"


def nginx_t(nginx, conf):
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "logs"))
        temp = "\n".join(f"    {d}_temp_path {tmp}/{d};" for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        wrapper = os.path.join(tmp, "nginx.conf")
        with open(wrapper, "w") as f:
            f.write(
                f"pid {tmp}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n"
                f"    access_log {tmp}/logs/access.log;\n{temp}\n    include {conf};\n}}\n"
            )
        out = subprocess.run(
            [nginx, "-t", "-p", tmp + "/", "-e", "stderr", "-c", wrapper], capture_output=True, text=True, timeout=60
        )
        msg = (out.stdout + out.stderr).strip().replace(tmp, "")
        assert out.returncode == 0, msg.replace("\n", " | ")
        version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
        return f"{version}, {nginx}"
