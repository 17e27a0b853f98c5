#!/usr/bin/env python3
"""Bounded soak of one running gateway, for tests/ops/soak.sh. Standard library only.

WORKERS threads, each acting for its own project (so that what it expects never depends on
another thread), call every route of both dialects for SECS seconds: Nova list, detail, show,
image metadata list/show/merge/replace/set/delete and image delete (also on the legacy /v2
root, at assorted microversions); Alliance list, show (by id and by name), create, PATCH, PUT
and delete; images are created through the store's native Glance v2 API or Alliance. About one
request in ten is deliberately bad (malformed JSON, unknown ids, bad or unsupported
microversions, missing or bad headers, wrong media types, oversized or unparsable headers,
requests cut off midway). Each worker keeps its images and their metadata, so every request
has one exact set of acceptable statuses; anything else, a 5xx, or a connection error is
counted as unexpected.

Meanwhile VmRSS and the number of open descriptors of PID are sampled every second. The first
WARMUP seconds are the warm-up; the figures at its end are the baseline. At the end all
client connections are closed and the process is measured once more, and /metrics is read.

Prints `ok`/`FAIL` lines, a `figures:` line and, last, `CHECKS passed=N failed=M`.
"""

import argparse
import collections
import http.client
import json
import os
import random
import re
import socket
import threading
import time
import uuid

MIB = 1024 * 1024


def read_rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def count_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class Client:
    """One keep-alive connection, opened again whenever it is lost or the server closes it."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def call(self, method, path, headers=None, body=None, close=False):
        headers = dict(headers or {})
        if close:
            headers["Connection"] = "close"
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            self.conn.request(method, path, body=body, headers=headers)
            r = self.conn.getresponse()
            data = r.read()
        except Exception:
            self.close()
            raise
        if close or (r.getheader("connection") or "").lower() == "close":
            self.close()
        return r.status, data, r


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.by_kind = collections.Counter()
        self.statuses = collections.Counter()
        self.unexpected = collections.Counter()
        self.examples = []
        self.total = 0
        self.bad_requests = 0
        self.created = 0  # images created (the embedded store keeps them, deleted or not)
        self.latencies = []

    def record(self, kind, bad, status, ok, latency, note):
        with self.lock:
            self.total += 1
            self.bad_requests += bad
            self.by_kind[kind] += 1
            self.statuses[status] += 1
            self.latencies.append(latency)
            if not ok:
                self.unexpected[kind] += 1
                if len(self.examples) < 15:
                    self.examples.append(note)


NOVA_VERSIONS = [
    {},
    {"OpenStack-API-Version": "compute 2.1"},
    {"OpenStack-API-Version": "compute 2.35"},
    {"OpenStack-API-Version": "compute 2.60"},
    {"OpenStack-API-Version": "compute latest"},
    {"X-OpenStack-Nova-API-Version": "2.20"},
]
META_KEYS = ["os_distro", "os_version", "architecture", "hw_disk_bus", "soak_a", "soak_b"]


class Worker(threading.Thread):
    def __init__(self, n, args, stats, deadline, stop):
        super().__init__(daemon=True)
        self.n = n
        self.args = args
        self.stats = stats
        self.deadline = deadline
        self.stop = stop
        self.rng = random.Random(args.seed * 1000 + n)
        self.project = uuid.UUID(int=self.rng.getrandbits(128)).hex
        self.client = Client(args.port)
        self.images = {}  # id -> {"name": str, "meta": dict}
        self.serial = 0
        self.last_create = 0.0

    # --- helpers -------------------------------------------------------------------------

    def nova_headers(self, version=True):
        h = {"X-Project-Id": self.project, "X-Roles": "member,reader"}
        if version:
            h.update(self.rng.choice(NOVA_VERSIONS))
        return h

    def alliance_headers(self, env=None):
        return {"X-Target-Ns": self.args.ns, "X-Environment-Id": env or self.project}

    def nova_root(self):
        return self.rng.choice(["/v2.1", "/v2.1", "/v2"])

    def some_image(self):
        return self.rng.choice(list(self.images)) if self.images else None

    def new_name(self):
        self.serial += 1
        return f"soak-{self.n}-{self.serial}"

    def call(self, kind, expected, method, path, headers=None, body=None, bad=False, close=False):
        t0 = time.monotonic()
        try:
            status, data, _ = self.client.call(method, path, headers, body, close)
        except Exception as e:  # noqa: BLE001: every failure to get an answer counts
            latency = time.monotonic() - t0
            note = f"{kind}: {method} {path}: {type(e).__name__}: {e}"
            self.stats.record(kind, bad, "conn-error", False, latency, note)
            return None, None
        latency = time.monotonic() - t0
        ok = status in expected and status < 500
        note = f"{kind}: {method} {path} -> {status}, expected {sorted(expected)}: {data[:200]!r}"
        self.stats.record(kind, bad, status, ok, latency, note)
        return status, data

    # --- valid calls ---------------------------------------------------------------------

    def create_native(self):
        self.last_create = time.monotonic()
        name = self.new_name()
        body = {"name": name, "disk_format": "qcow2", "container_format": "bare", "min_ram": 1, "soak_a": "x"}
        status, data = self.call("native.create", {201}, "POST", "/image/v2/images", self.nova_headers(False), body)
        if status == 201:
            self.images[json.loads(data)["id"]] = {"name": name, "meta": {"soak_a": "x"}}
            with self.stats.lock:
                self.stats.created += 1

    def create_alliance(self):
        self.last_create = time.monotonic()
        name = self.new_name()
        body = {"image": {"name": name, "disk_format": "raw", "container_format": "bare", "min_disk": 1}}
        status, data = self.call("alliance.create", {201}, "POST", "/images", self.alliance_headers(), body)
        if status == 201:
            self.images[json.loads(data)["id"]] = {"name": name, "meta": {}}
            with self.stats.lock:
                self.stats.created += 1

    def nova_list(self):
        q = self.rng.choice(["", "?limit=5", "?status=SAVING", "?name=soak-0-1", "?minRam=1"])
        path = self.rng.choice(["/images", "/images/detail"])
        self.call("nova.list", {200}, "GET", f"{self.nova_root()}{path}{q}", self.nova_headers())

    def nova_show(self, i):
        self.call("nova.show", {200}, "GET", f"{self.nova_root()}/images/{i}", self.nova_headers())

    def nova_meta_list(self, i):
        self.call("nova.meta.list", {200}, "GET", f"{self.nova_root()}/images/{i}/metadata", self.nova_headers())

    def nova_meta_show(self, i):
        key = self.rng.choice(META_KEYS)
        want = {200} if key in self.images[i]["meta"] else {404}
        self.call("nova.meta.show", want, "GET", f"{self.nova_root()}/images/{i}/metadata/{key}", self.nova_headers())

    def nova_meta_merge(self, i):
        meta = {self.rng.choice(META_KEYS): str(self.rng.randrange(1000)) for _ in range(2)}
        status, _ = self.call(
            "nova.meta.merge", {200}, "POST", f"{self.nova_root()}/images/{i}/metadata", self.nova_headers(),
            {"metadata": meta},
        )
        if status == 200:
            self.images[i]["meta"].update(meta)

    def nova_meta_replace(self, i):
        meta = {k: str(self.rng.randrange(1000)) for k in self.rng.sample(META_KEYS, self.rng.randrange(4))}
        status, _ = self.call(
            "nova.meta.replace", {200}, "PUT", f"{self.nova_root()}/images/{i}/metadata", self.nova_headers(),
            {"metadata": meta},
        )
        if status == 200:
            self.images[i]["meta"] = meta

    def nova_meta_set(self, i):
        key = self.rng.choice(META_KEYS)
        value = str(self.rng.randrange(1000))
        status, _ = self.call(
            "nova.meta.set", {200}, "PUT", f"{self.nova_root()}/images/{i}/metadata/{key}", self.nova_headers(),
            {"meta": {key: value}},
        )
        if status == 200:
            self.images[i]["meta"][key] = value

    def nova_meta_delete(self, i):
        key = self.rng.choice(META_KEYS)
        want = {204} if key in self.images[i]["meta"] else {404}
        status, _ = self.call(
            "nova.meta.delete", want, "DELETE", f"{self.nova_root()}/images/{i}/metadata/{key}", self.nova_headers()
        )
        if status == 204:
            self.images[i]["meta"].pop(key, None)

    def nova_delete(self, i):
        status, _ = self.call("nova.delete", {204}, "DELETE", f"{self.nova_root()}/images/{i}", self.nova_headers())
        if status == 204:
            del self.images[i]

    def alliance_list(self):
        q = self.rng.choice(["", "/", "?status=queued", "?disk_format=raw", "?name=soak-1-1", "?limit=3"])
        self.call("alliance.list", {200}, "GET", f"/images{q}", self.alliance_headers())

    def alliance_show(self, i):
        ref = self.rng.choice([i, self.images[i]["name"]])
        self.call("alliance.show", {200}, "GET", f"/images/{ref}", self.alliance_headers())

    def alliance_patch(self, i):
        body = {"image": {"min_ram": self.rng.randrange(512), "tags": ["soak"]}}
        self.call("alliance.patch", {200}, "PATCH", f"/images/{i}", self.alliance_headers(), body)

    def alliance_put(self, i):
        body = {"image": {"min_disk": self.rng.randrange(50), "protected": False}}
        self.call("alliance.put", {200}, "PUT", f"/images/{self.images[i]['name']}", self.alliance_headers(), body)

    def alliance_delete(self, i):
        status, _ = self.call("alliance.delete", {200}, "DELETE", f"/images/{i}", self.alliance_headers())
        if status == 200:
            del self.images[i]

    def ops_endpoints(self):
        path = self.rng.choice(["/healthz", "/readyz", "/metrics", "/", "/v2.1", "/v2/"])
        self.call("ops", {200}, "GET", path)

    # --- bad calls -----------------------------------------------------------------------

    def bad(self):
        i = self.some_image()
        missing = str(uuid.UUID(int=self.rng.getrandbits(128)))
        nova = self.nova_headers(False)
        root = self.nova_root()
        choices = [
            ("bad.nova.unknown_show", {404}, "GET", f"{root}/images/{missing}", nova, None),
            ("bad.nova.unknown_delete", {404}, "DELETE", f"{root}/images/{missing}", nova, None),
            ("bad.nova.unknown_meta", {404}, "GET", f"{root}/images/{missing}/metadata", nova, None),
            ("bad.nova.unknown_meta_set", {404}, "PUT", f"{root}/images/{missing}/metadata/k", nova,
             {"meta": {"k": "v"}}),
            ("bad.nova.microversion_malformed", {400}, "GET", "/v2.1/images/detail",
             dict(nova, **{"OpenStack-API-Version": "compute 2.x"}), None),
            ("bad.nova.microversion_unsupported", {406}, "GET", "/v2.1/images",
             dict(nova, **{"OpenStack-API-Version": "compute 3.5"}), None),
            ("bad.nova.oversized_header", {400}, "GET", "/v2.1/images", dict(nova, **{"X-Padding": "a" * 17000}),
             None),
            ("bad.alliance.no_ns", {400}, "GET", "/images", {"X-Environment-Id": self.project}, None),
            ("bad.alliance.unknown_ns", {400}, "GET", "/images",
             {"X-Target-Ns": "nowhere", "X-Environment-Id": self.project}, None),
            ("bad.alliance.bad_env", {400}, "GET", "/images", self.alliance_headers("bad env!"), None),
            ("bad.alliance.no_env", {400}, "GET", "/images", {"X-Target-Ns": self.args.ns}, None),
            ("bad.alliance.malformed_json", {400}, "POST", "/images",
             dict(self.alliance_headers(), **{"Content-Type": "application/json"}), '{"image": {"name": '),
            ("bad.alliance.unknown_field", {400}, "POST", "/images", self.alliance_headers(),
             {"image": {"name": "x", "colour": "red"}}),
            ("bad.alliance.wrong_type", {400}, "POST", "/images", self.alliance_headers(),
             {"image": {"name": "x", "min_ram": "lots"}}),
            ("bad.alliance.media_type", {415}, "POST", "/images",
             dict(self.alliance_headers(), **{"Content-Type": "application/xml"}), "<image/>"),
            ("bad.alliance.unknown_id", {404}, "GET", f"/images/{missing}", self.alliance_headers(), None),
            ("bad.alliance.unknown_delete", {404}, "DELETE", f"/images/{missing}", self.alliance_headers(), None),
            ("bad.unknown_route", {404}, "GET", "/no/such/route", {}, None),
        ]
        if i is not None:
            meta = f"{root}/images/{i}/metadata"
            choices += [
                ("bad.nova.malformed_json", {400}, "POST", meta, dict(nova, **{"Content-Type": "application/json"}),
                 "{bad"),
                ("bad.nova.media_type", {415}, "POST", meta, dict(nova, **{"Content-Type": "application/xml"}), "{}"),
                ("bad.nova.uri_mismatch", {400}, "PUT", f"{meta}/k", nova, {"meta": {"other": "v"}}),
                ("bad.nova.bad_value", {400}, "POST", meta, nova, {"metadata": {"k": 1}}),
                ("bad.nova.other_project", {404}, "GET", f"{root}/images/{i}",
                 {"X-Project-Id": "someone-else", "X-Roles": "member"}, None),
                ("bad.alliance.read_only", {400}, "PATCH", f"/images/{i}", self.alliance_headers(),
                 {"image": {"status": "active"}}),
                ("bad.alliance.other_env", {404}, "GET", f"/images/{i}", self.alliance_headers("someone-else"), None),
            ]
        r = self.rng.random()
        if r < 0.04:
            return self.raw_bad_header()
        if r < 0.08:
            return self.raw_cut_off()
        kind, want, method, path, headers, body = self.rng.choice(choices)
        self.call(kind, want, method, path, headers, body, bad=True)

    def raw_exchange(self, payload, kind, want):
        """payload over a fresh connection; the first status line of the answer, if any."""
        t0 = time.monotonic()
        status = None
        try:
            with socket.create_connection(("127.0.0.1", self.args.port), timeout=10) as s:
                s.sendall(payload)
                if want is None:
                    return  # cut off: the client goes away without waiting
                s.shutdown(socket.SHUT_WR)
                data = b""
                while len(data) < 65536:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
            status = int(m.group(1)) if m else "no-answer"
        except OSError as e:
            status = f"conn-error {type(e).__name__}"
        ok = status in want
        self.stats.record(kind, True, status, ok, time.monotonic() - t0, f"{kind}: {payload[:60]!r} -> {status}")

    def raw_bad_header(self):
        payload = self.rng.choice([
            b"GET /v2.1/images HTTP/1.1\r\nHost: 127.0.0.1\r\nThis is not a header\r\n\r\n",
            b"GET /images HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Target-Ns: ops\r\nBad Name: v\r\n\r\n",
            b"GET /v2.1/images HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: nope\r\n\r\n",
        ])
        self.raw_exchange(payload, "bad.raw.unparsable_header", {400})

    def raw_cut_off(self):
        payload = self.rng.choice([
            b"GET /v2.1/images/detail HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Project-Id: p",
            b"POST /images HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Target-Ns: ops\r\nX-Environment-Id: e\r\n"
            b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"image\": {",
        ])
        self.raw_exchange(payload, "bad.raw.cut_off", None)
        with self.stats.lock:
            self.stats.total += 1
            self.stats.bad_requests += 1
            self.stats.by_kind["bad.raw.cut_off"] += 1

    # --- the loop ------------------------------------------------------------------------

    def step(self):
        if self.rng.random() < self.args.bad_ratio:
            return self.bad()
        # Creates are paced in time, not in share of requests: the embedded store keeps every
        # image ever created, so its size (and the gateway's RSS) must not depend on speed.
        can_create = time.monotonic() - self.last_create >= self.args.create_interval
        if can_create and len(self.images) < 3:
            return self.rng.choice([self.create_native, self.create_alliance])()
        if len(self.images) > 12:
            return self.rng.choice([self.nova_delete, self.alliance_delete])(self.some_image())
        i = self.some_image()
        ops = [(6, self.nova_list), (5, self.alliance_list), (1, self.ops_endpoints)]
        if can_create:
            ops += [(1, self.create_native), (1, self.create_alliance)]
        if i is not None:
            ops += [
                (5, lambda: self.nova_show(i)), (4, lambda: self.nova_meta_list(i)),
                (4, lambda: self.nova_meta_show(i)), (3, lambda: self.nova_meta_merge(i)),
                (2, lambda: self.nova_meta_replace(i)), (3, lambda: self.nova_meta_set(i)),
                (3, lambda: self.nova_meta_delete(i)), (5, lambda: self.alliance_show(i)),
                (2, lambda: self.alliance_patch(i)), (2, lambda: self.alliance_put(i)),
            ]
            if len(self.images) > 3:
                ops += [(1, lambda: self.nova_delete(i)), (1, lambda: self.alliance_delete(i))]
        weights = [w for w, _ in ops]
        self.rng.choices([f for _, f in ops], weights)[0]()

    def run(self):
        while time.monotonic() < self.deadline and not self.stop.is_set():
            # Now and then a connection is given up on after one request: connection churn.
            if self.rng.random() < 0.03:
                self.client.close()
            self.step()
        self.client.close()


def metrics_text(port):
    c = Client(port)
    try:
        return c.call("GET", "/metrics")[1].decode()
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--secs", type=float, default=120)
    ap.add_argument("--warmup", type=float, default=20)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--ns", default="ops")
    ap.add_argument("--bad-ratio", type=float, default=0.10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--create-interval", type=float, default=0.5, help="seconds between creates, per worker")
    ap.add_argument("--rss-pct", type=float, default=20)
    ap.add_argument("--rss-mib", type=float, default=16)
    ap.add_argument("--fd-slack", type=int, default=4)
    a = ap.parse_args()

    passed = failed = 0

    def check(ok, what):
        nonlocal passed, failed
        if ok:
            passed += 1
        else:
            failed += 1
        print(f"{'ok   ' if ok else 'FAIL '} {what}", flush=True)

    idle_rss, idle_fds = read_rss_kib(a.pid), count_fds(a.pid)
    stats = Stats()
    stop = threading.Event()
    start = time.monotonic()
    deadline = start + a.secs
    workers = [Worker(n, a, stats, deadline, stop) for n in range(a.workers)]
    for w in workers:
        w.start()

    samples = []  # (seconds since start, rss KiB, fds)
    baseline = None
    while time.monotonic() < deadline:
        time.sleep(1.0)
        t = time.monotonic() - start
        rss, fds = read_rss_kib(a.pid), count_fds(a.pid)
        if rss is None:
            stop.set()
            break
        samples.append((t, rss, fds))
        if baseline is None and t >= a.warmup:
            baseline = (rss, fds, stats.total, stats.created)
        if int(t) % 15 == 0:
            print(f"  t={t:5.1f}s requests={stats.total} unexpected={sum(stats.unexpected.values())} "
                  f"rss={rss / 1024:.1f}MiB fds={fds}", flush=True)
    stop.set()
    for w in workers:
        w.join(30)
    alive = read_rss_kib(a.pid) is not None
    check(alive, "the gateway is still running")
    if not alive:
        print(f"CHECKS passed={passed} failed={failed}")
        return
    time.sleep(1.0)  # let the server notice the closed connections
    end_rss, end_fds = read_rss_kib(a.pid), count_fds(a.pid)
    if baseline is None:  # a run shorter than its warm-up
        baseline = (samples[0][1], samples[0][2], 0, 0) if samples else (idle_rss, idle_fds, 0, 0)
    base_rss, base_fds, base_reqs, base_created = baseline
    created_since = stats.created - base_created
    max_fds = max((s[2] for s in samples), default=end_fds)

    total = stats.total
    unexpected = sum(stats.unexpected.values())
    lat = sorted(stats.latencies)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3 if lat else 0
    kinds_valid = sorted(k for k in stats.by_kind if not k.startswith("bad."))
    kinds_bad = sorted(k for k in stats.by_kind if k.startswith("bad."))

    check(total >= 1000, f"the load ran: {total} requests, {stats.bad_requests} deliberately bad "
          f"({100 * stats.bad_requests / max(total, 1):.1f}%)")
    needed = {"native.create", "nova.list", "nova.show", "nova.meta.list", "nova.meta.show", "nova.meta.merge",
              "nova.meta.replace", "nova.meta.set", "nova.meta.delete", "nova.delete", "alliance.list",
              "alliance.show", "alliance.create", "alliance.patch", "alliance.put", "alliance.delete"}
    missing = sorted(needed - set(stats.by_kind))
    check(not missing, f"every route was called ({len(kinds_valid)} valid kinds, {len(kinds_bad)} bad kinds)"
          + (f"; never: {missing}" if missing else ""))
    check(unexpected == 0, f"no unexpected status (5xx, connection error or outside the expected set): {unexpected}")
    for note in stats.examples[:10]:
        print(f"        {note}")
    if unexpected:
        print(f"        by kind: {dict(stats.unexpected)}")
    allowed = max(base_rss * a.rss_pct / 100, a.rss_mib * 1024)
    check(end_rss <= base_rss + allowed,
          f"RSS after warm-up {base_rss / 1024:.1f} MiB -> at the end {end_rss / 1024:.1f} MiB "
          f"(allowed +{allowed / 1024:.1f} MiB; {created_since} images created since the warm-up, which the "
          f"embedded store keeps after deletion, about 1.3 KiB each)")
    check(end_fds <= idle_fds + a.fd_slack,
          f"open descriptors back to idle once clients left: idle {idle_fds}, after warm-up {base_fds}, "
          f"max {max_fds}, end {end_fds} (allowed idle+{a.fd_slack})")
    bound = idle_fds + 2 * a.workers + 16
    check(max_fds <= bound, f"open descriptors stayed bounded under load: max {max_fds} <= {bound}")

    text = metrics_text(a.port)
    m = re.search(r"^image_gateway_requests_in_flight (\d+)", text, re.M)
    in_flight = int(m.group(1)) if m else None
    # Probes and scrapes are not counted, so an idle gateway reads 0.
    check(in_flight == 0, f"requests_in_flight back to 0 (reads {in_flight})")
    server_5xx = sum(int(float(v)) for v in re.findall(r'^image_gateway_requests_total\{[^}]*status="5\d\d"[^}]*\} (\S+)',
                                                          text, re.M))
    check(server_5xx == 0, f"no 5xx in the gateway's own requests_total: {server_5xx}")

    statuses = ", ".join(f"{k}:{v}" for k, v in sorted(stats.statuses.items(), key=lambda kv: str(kv[0])))
    rate = (total - base_reqs) / max(a.secs - a.warmup, 1) if a.secs > a.warmup else total / max(a.secs, 1)
    print(f"figures: requests={total} bad_requests={stats.bad_requests} unexpected={unexpected} "
          f"images_created={stats.created} rate_per_s={rate:.0f} p99_ms={p99:.1f} rss_idle_mib={idle_rss / 1024:.1f} "
          f"rss_warm_mib={base_rss / 1024:.1f} rss_end_mib={end_rss / 1024:.1f} "
          f"rss_max_mib={max(s[1] for s in samples) / 1024 if samples else 0:.1f} fds_idle={idle_fds} "
          f"fds_warm={base_fds} fds_max={max_fds} fds_end={end_fds} in_flight={in_flight}")
    print(f"statuses: {statuses}")
    print(f"CHECKS passed={passed} failed={failed}")


if __name__ == "__main__":
    main()
