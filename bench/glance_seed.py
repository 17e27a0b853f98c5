#!/usr/bin/env python3
"""Seed a real Glance with benchmark images and record its answers as static bodies.

Usage:
  glance_seed.py seed   GLANCE_URL PROJECT COUNT [PREFIX]   # create COUNT images owned by PROJECT
  glance_seed.py record GLANCE_URL PROJECT OUT_DIR          # write the bodies nginx serves
  glance_seed.py count  GLANCE_URL PROJECT                  # how many images PROJECT sees

Identity is sent as Glance's trusted headers (glance.sh GLANCE_AUTH=token/headers). Images are
a realistic mix: mostly active (a small payload uploaded, so size/checksum/os_hash are set),
some queued, with the properties real clouds carry (os_distro, min_ram, hw_* ...).
Only the standard library is used; one keep-alive connection.
"""
import http.client
import json
import os
import sys
import urllib.parse

USER = "0a1b2c3d4e5f40718293a4b5c6d7e8f9"
ROLES = "member,reader"

DISTROS = [("ubuntu", "22.04"), ("ubuntu", "24.04"), ("debian", "12"), ("centos", "9"),
           ("rocky", "9.3"), ("fedora", "40"), ("cirros", "0.6.2"), ("windows", "2022")]


class Glance:
    def __init__(self, url, project):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        self.headers = {"X-Identity-Status": "Confirmed", "X-Project-Id": project,
                        "X-User-Id": USER, "X-Roles": ROLES}

    def call(self, method, path, body=None, ctype=None, ok=(200, 201, 204)):
        headers = dict(self.headers)
        if ctype:
            headers["Content-Type"] = ctype
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                r = self.conn.getresponse()
                data = r.read()
                break
            except (http.client.HTTPException, ConnectionError):
                if attempt == 2:
                    raise
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        if r.status not in ok:
            raise SystemExit(f"{method} {path}: {r.status} {data[:300]!r}")
        return r.status, data

    def json(self, method, path, body=None):
        _, data = self.call(method, path, json.dumps(body) if body is not None else None,
                            "application/json" if body is not None else None)
        return json.loads(data) if data else None


def image_doc(prefix, i):
    distro, ver = DISTROS[i % len(DISTROS)]
    doc = {
        "name": f"{prefix}-{distro}-{ver}-{i:04d}",
        # Glance 33 checks uploaded data against disk_format: only queued ones say qcow2.
        "disk_format": "qcow2" if i % 10 == 9 else "raw",
        "container_format": "bare",
        "os_distro": distro,
        "os_version": ver,
        "min_ram": [0, 512, 1024, 2048][i % 4],
        "min_disk": [0, 1, 10, 20][i % 4],
        "architecture": "x86_64",
        "hw_disk_bus": "virtio",
        "hw_vif_model": "virtio",
    }
    if i % 3 == 0:
        doc["hw_qemu_guest_agent"] = "yes"
        doc["os_require_quiesce"] = "yes"
    if i % 7 == 0:
        doc["image_type"] = "snapshot"
        doc["instance_uuid"] = f"6b0f2a7e-3c1d-4e5f-8a9b-{i:012d}"
        doc["base_image_ref"] = "3f2e1d0c-9b8a-4765-8432-10fedcba9876"
    if i % 11 == 0:
        doc["tags"] = ["golden", f"batch-{i // 100}"]
    return doc


def seed(url, project, count, prefix):
    g = Glance(url, project)
    payload = os.urandom(1024)
    for i in range(count):
        img = g.json("POST", "/v2/images", image_doc(prefix, i))
        if i % 10 != 9:  # 90 % active, 10 % queued
            g.call("PUT", f"/v2/images/{img['id']}/file", payload, "application/octet-stream")
        if (i + 1) % 100 == 0:
            print(f"  seeded {i + 1}/{count}", flush=True)


def count(url, project):
    g = Glance(url, project)
    n, marker = 0, None
    while True:
        q = "limit=1000" + (f"&marker={marker}" if marker else "")
        page = g.json("GET", f"/v2/images?{q}")
        n += len(page["images"])
        if not page.get("next") or not page["images"]:
            return n
        marker = page["images"][-1]["id"]


def record(url, project, out):
    """The bodies a static upstream needs to answer the gateway exactly as this Glance does."""
    g = Glance(url, project)
    os.makedirs(out, exist_ok=True)

    def save(name, path, ok=(200,)):
        _, data = g.call("GET", path, ok=ok)
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        return data

    # The gateway lists with limit=<page_size> (1000), then follows `next` with a marker.
    first = json.loads(save("images.json", "/v2/images?limit=1000"))
    if first.get("next"):
        last = first["images"][-1]["id"]
        save("images-after-marker.json", f"/v2/images?limit=1000&marker={last}")
    else:
        # Never asked for, but keeps the marker branch of the nginx map valid.
        with open(os.path.join(out, "images-after-marker.json"), "w") as f:
            json.dump({"images": [], "first": "/v2/images?limit=1000", "schema": "/v2/schemas/images"}, f)
    active = [i for i in first["images"] if i["status"] == "active"]
    one = active[0]["id"]
    save("image.json", f"/v2/images/{one}")
    save("schema-image.json", "/v2/schemas/image")
    save("versions.json", "/versions", ok=(200, 300))
    with open(os.path.join(out, "image-id"), "w") as f:
        f.write(one + "\n")
    print(f"  recorded {len(first['images'])} images into {out} (next: {bool(first.get('next'))})")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "seed":
        seed(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else "bench")
    elif cmd == "record":
        record(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == "count":
        print(count(sys.argv[2], sys.argv[3]))
    else:
        raise SystemExit(__doc__)
