"""What a built image-gateway serves on /metrics once exercised. Some families only appear after
their event (a refused list, a failed reload, a certificate being served), so two runs make
each happen: one on the embedded store over plain HTTP, one over TLS in front of a Glance that
accepts connections and never answers (so a list stays in flight and the next is shed)."""

import os
import re
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

DEADLINE_SECS = 30
SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+\S+")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def served_metrics(binary, root):
    """{sample name: {label: {values}}} of both runs."""
    served = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in (embedded_run, edge_run):
            for line in run(binary, root, tmp).splitlines():
                m = SAMPLE.match(line)
                if m:
                    labels = served.setdefault(m.group(1), {})
                    for k, v in LABEL.findall(m.group(2) or ""):
                        labels.setdefault(k, set()).add(v)
    assert served, "no samples"
    return served


def embedded_run(binary, root, tmp):
    """Lists, a miss, a passthrough, an over-long target (414), a peer's identity header, then a
    reload that succeeds and one that fails."""
    config = os.path.join(tmp, "embedded.toml")
    # SIGHUP alone: a watch of the file would also reload the broken one, a second failure.
    settings = f'mappings_dir = "{os.path.join(root, "mappings")}"\n[reload]\nwatch = false\n'
    with Gateway(binary, config, settings, tmp) as gw:
        for path in ("/v2.1/images/detail", "/v2/images", f"/v2.1/images/{uuid.uuid4()}", "/image/v2/images"):
            gw.get(path)
        gw.get("/v2.1/images/detail", {"X-Roles": "admin"})
        assert gw.get("/v2.1/images/" + "a" * 9000) == 414, "an over-long target was not refused"
        gw.reload()
        gw.wait_for('image_gateway_config_reloads_total{result="success"} 1', "a successful reload")
        with open(config, "a") as f:
            f.write("not_a_key = 1\n")
        gw.reload()
        gw.wait_for('image_gateway_config_reloads_total{result="failure"} 1', "a refused reload")
        return gw.metrics()


def edge_run(binary, root, tmp):
    cert, key = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
    openssl = [
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-keyout",
        key,
        "-out",
        cert,
    ]
    made = subprocess.run(openssl, capture_output=True, text=True)
    assert made.returncode == 0, f"openssl could not make a certificate: {made.stderr.strip()}"
    with socket.create_server(("127.0.0.1", 0)) as silent_glance:  # listens, never accepts
        settings = (
            f'mappings_dir = "{os.path.join(root, "mappings")}"\n'
            f'[server.tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n'
            "[limits]\nmax_heavy_in_flight = 1\n"
            f'[glance]\nurl = "http://127.0.0.1:{silent_glance.getsockname()[1]}"\ntimeout_secs = 2\n'
        )
        with Gateway(binary, os.path.join(tmp, "edge.toml"), settings, tmp, tls=True) as gw:
            held = threading.Thread(target=gw.get, args=("/v2.1/images/detail",))
            held.start()
            gw.wait_for("image_gateway_heavy_requests_in_flight 1", "a list in flight")
            assert gw.get("/v2.1/images/detail") == 503, "the second list was not shed"
            held.join()
            return gw.metrics()


def free_port():
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


class Gateway:
    """`image-gateway serve` on a free port with `settings`, killed on exit."""

    def __init__(self, binary, config, settings, tmp, tls=False):
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{free_port()}"
        with open(config, "w") as f:
            f.write(f'listen = "{self.base.split("//")[1]}"\n' + settings)
        self.log = os.path.join(tmp, os.path.basename(config) + ".log")
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGE_GATEWAY_") and k != "RUST_LOG"}
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([binary, "serve", "--config", config], stdout=log, stderr=log, env=env)
        self.context = ssl._create_unverified_context() if tls else None  # a certificate made above

    def __enter__(self):
        self.wait_for("image_gateway_requests_in_flight", "the gateway to start")
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()

    def get(self, path, headers=None):
        """The answer's status (0 when none came)."""
        req = urllib.request.Request(self.base + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=DEADLINE_SECS, context=self.context) as r:
                r.read()
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return 0

    def metrics(self):
        with urllib.request.urlopen(self.base + "/metrics", timeout=DEADLINE_SECS, context=self.context) as r:
            return r.read().decode()

    def reload(self):
        self.proc.send_signal(signal.SIGHUP)

    def wait_for(self, text, what):
        """Polls /metrics until it holds `text` (a line's start), within DEADLINE_SECS."""
        deadline = time.monotonic() + DEADLINE_SECS
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the gateway exited waiting for {what}: {self.log_tail()}"
            try:
                if any(line.startswith(text) for line in self.metrics().splitlines()):
                    return
            except OSError:
                pass  # not listening yet
            time.sleep(0.05)
        raise AssertionError(f"no {what} within {DEADLINE_SECS} s: {self.log_tail()}")

    def log_tail(self):
        with open(self.log) as f:
            return " | ".join(f.read().splitlines()[-3:])
