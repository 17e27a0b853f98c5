"""The deployment artefacts of one tree (this repository, or CHECK_DEPLOY_ROOT's copy), parsed,
and the lookups the checks share."""

import glob
import os
import re

import dockerfile
import yaml

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

# In deploy/kubernetes but deliberately not in the kustomization (see kustomization.yaml).
UNLISTED = {"secret.example.yaml", "servicemonitor.yaml", "prometheusrule.yaml"}
# Names the manifests use for the gateway's pieces.
CONFIG_CM, MAPPINGS_CM, CONFIG_KEY = "image-gateway-config", "image-gateway-mappings", "gateway.toml"


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


def port_of(addr, where):
    m = re.fullmatch(r"(\[[^\]]+\]|[^:]+):(\d+)", str(addr))
    assert m, f"{where}: {addr!r} is not host:port"
    return m.group(1), int(m.group(2))


class Tree:
    def __init__(self, root):
        self.root = root
        self.k8s_dir = os.path.join(root, "deploy/kubernetes")
        self.dockerfile_path = os.path.join(root, "deploy/Dockerfile")
        self.nginx_conf = os.path.join(root, "deploy/nginx/image-gateway.conf")
        self.docs = {}  # file name in deploy/kubernetes -> [documents]
        self.resources = []  # (file, document) of every Kubernetes object, listed or not
        self.stages = None  # the Dockerfile's stages, once parsed

    def rel(self, path):
        return os.path.relpath(path, self.root)

    def manifest_paths(self):
        return sorted(glob.glob(os.path.join(self.k8s_dir, "*.yaml")) + glob.glob(os.path.join(self.k8s_dir, "*.yml")))

    def load_manifest(self, path):
        """Parses one manifest file into docs; returns its number of documents."""
        with open(path) as f:
            found = [d for d in yaml.load_all(f, Loader=StrictLoader) if d is not None]
        self.docs[os.path.basename(path)] = found
        return len(found)

    def objects(self, kind, only_listed=False):
        return [d for n, d in self.resources if d["kind"] == kind and (not only_listed or n not in UNLISTED)]

    def one(self, kind, name=None):
        found = [d for d in self.objects(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind}{' ' + name if name else ''}, found {len(found)}"
        return found[0]

    # --- the Dockerfile -----------------------------------------------------------------------

    def parse_dockerfile(self, text=None):
        """Parses deploy/Dockerfile (or `text`, a self-test's broken copy of it) with BuildKit's
        parser into stages; returns how many."""
        cmds = dockerfile.parse_string(text) if text is not None else dockerfile.parse_file(self.dockerfile_path)
        args, stages = {}, []
        for c in cmds:
            if c.cmd.upper() == "ARG" and not stages:
                for v in c.value:
                    k, _, default = v.partition("=")
                    args[k] = default
            if c.cmd.upper() == "FROM":
                image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), c.value[0])
                alias = c.value[2] if len(c.value) >= 3 and c.value[1].upper() == "AS" else None
                stages.append({"image": image, "alias": alias, "cmds": [], "args": {}})
            elif stages:
                stages[-1]["cmds"].append(c)
                if c.cmd.upper() == "ARG":
                    stages[-1]["args"].update(v.partition("=")[::2] for v in c.value)
        self.stages = stages
        return len(stages)

    def stage_chain(self, stage):
        """`stage` (a stage or its name) and the stages it is built FROM, up to the one FROM an
        image; names resolved with the build arguments' defaults, so this is what a plain build does."""
        if isinstance(stage, str):
            found = [s for s in self.stages if s["alias"] == stage]
            assert found, f"no stage named {stage!r}"
            stage = found[0]
        chain = [stage]
        while (found := [s for s in self.stages if s["alias"] == chain[-1]["image"]]) and found[0] not in chain:
            chain.append(found[0])
        return chain

    @staticmethod
    def expand(stage, word):
        """`word` with the stage's own ARG defaults substituted."""
        return re.sub(r"\$\{?(\w+)\}?", lambda m: stage["args"].get(m.group(1), m.group(0)), word)

    def final_stage(self):
        assert self.stages, "the Dockerfile did not parse"
        return self.stages[-1]

    def final_cmds(self):
        """The instructions of the image a plain build makes: the last stage's and those of the
        stages it is built FROM, oldest first."""
        return [c for st in reversed(self.stage_chain(self.final_stage())) for c in st["cmds"]]

    def df_last(self, cmd):
        found = [c for c in self.final_cmds() if c.cmd.upper() == cmd]
        return found[-1] if found else None

    def df_env(self):
        env = {}
        for c in self.final_cmds():
            if c.cmd.upper() == "ENV":
                for i in range(0, len(c.value) - 1, 2):
                    env[c.value[i]] = c.value[i + 1]
        return env

    def df_copy_dest(self, src):
        """Where the final image gets `src` (a path in the build context) copied to."""
        for c in self.final_cmds():
            if c.cmd.upper() == "COPY" and not any(f.startswith("--from") for f in c.flags):
                if any(s.rstrip("/") == src.rstrip("/") for s in c.value[:-1]):
                    return c.value[-1]
        raise AssertionError(f"the final image does not COPY {src}")

    # --- the Deployment and its ConfigMaps ----------------------------------------------------

    def deployment(self):
        return self.one("Deployment")

    def pod_spec(self):
        return self.deployment()["spec"]["template"]["spec"]

    def container(self):
        cs = self.pod_spec()["containers"]
        assert len(cs) == 1, f"expected one container, found {len(cs)}"
        return cs[0]

    def container_env(self):
        return {e["name"]: e.get("value") for e in self.container().get("env", []) if "value" in e}

    def container_port(self, port):
        """A probe's or Service's port (number or name) as a container port number."""
        if isinstance(port, int):
            return port
        for p in self.container().get("ports", []):
            if p.get("name") == port:
                return p["containerPort"]
        raise AssertionError(f"no container port named {port!r}")

    def gateway_toml_text(self):
        cm = self.one("ConfigMap", CONFIG_CM)
        assert CONFIG_KEY in cm.get("data", {}), f"ConfigMap {CONFIG_CM} has no {CONFIG_KEY}"
        return cm["data"][CONFIG_KEY]

    def gateway_toml(self):
        return tomllib.loads(self.gateway_toml_text())

    def mount_of_configmap(self, cm_name):
        """(mountPath, subPath) of the container's mount of a ConfigMap volume."""
        vols = [v["name"] for v in self.pod_spec().get("volumes", []) if v.get("configMap", {}).get("name") == cm_name]
        assert vols, f"no volume from ConfigMap {cm_name}"
        mounts = [m for m in self.container().get("volumeMounts", []) if m["name"] in vols]
        assert len(mounts) == 1, f"expected one mount of ConfigMap {cm_name}, found {len(mounts)}"
        return mounts[0]["mountPath"], mounts[0].get("subPath")
