"""End-to-end check of keystone.sh + glance.sh GLANCE_AUTH=keystone (stdlib only).

Usage: python3 keystone_check.py CREDENTIALS_JSON GLANCE_URL

CREDENTIALS_JSON is the file keystone.sh seeding wrote; the Glance at GLANCE_URL must
validate tokens against that Keystone. Checks: project-scoped tokens for user-a
(password), user-b and user-a's application credential; user-a creates and lists an
image; user-b gets 404 for it and does not list it; no token / a bad token is 401; a
web-download import of 1 MiB from an HTTP server this script runs on 127.0.0.1 (an
ephemeral port, in a thread) ends active with size 1048576. Exit status 0 when all pass.
Creates two images in user-a's project and deletes them at the end.
"""

import hashlib
import http.server
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request

SIZE = 1048576


def call(method, url, body=None, token=None):
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["X-Auth-Token"] = token
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


failures = []


def check(ok, what):
    print("%s %s" % ("ok  " if ok else "FAIL", what))
    if not ok:
        failures.append(what)


def get_token(ks, identity, project_id=None):
    auth = {"identity": identity}
    if project_id:
        auth["scope"] = {"project": {"id": project_id}}
    t0 = time.monotonic()
    st, h, body = call("POST", ks + "/auth/tokens", {"auth": auth})
    dt = time.monotonic() - t0
    if st != 201 or not h.get("X-Subject-Token"):
        raise SystemExit("token request failed: %s %s" % (st, body[:300]))
    return h["X-Subject-Token"], json.loads(body)["token"], dt


def password(user):
    return {"methods": ["password"], "password": {"user": {
        "name": user["username"], "domain": {"name": "Default"},
        "password": user["password"]}}}


def main():
    creds = json.load(open(sys.argv[1]))
    glance = sys.argv[2].rstrip("/")
    ks = creds["keystone_url"]
    a, b, ac = creds["user_a"], creds["user_b"], creds["app_cred_a"]

    ta, tok, dt = get_token(ks, password(a), a["project_id"])
    check(tok["project"]["id"] == a["project_id"]
          and {"member", "reader"} <= {r["name"] for r in tok["roles"]},
          "user-a password token scoped to env-a with member+reader (%.3f s)" % dt)
    tac, tok, dt = get_token(ks, {"methods": ["application_credential"],
                                  "application_credential": {"id": ac["id"],
                                                             "secret": ac["secret"]}})
    check(tok["project"]["id"] == a["project_id"] and tok["user"]["id"] == a["user_id"],
          "application credential token: user-a on env-a (%.3f s)" % dt)
    tb, _, _ = get_token(ks, password(b), b["project_id"])

    created = []
    try:
        st, _, body = call("POST", glance + "/v2/images", {
            "name": "keystone-check-private", "disk_format": "raw",
            "container_format": "bare", "visibility": "private"}, ta)
        check(st == 201, "user-a creates an image: %d" % st)
        img = json.loads(body)
        created.append(img["id"])
        check(img.get("owner") == a["project_id"], "owner is env-a's project id")
        for name, t in (("token", ta), ("app-cred token", tac)):
            st, _, body = call("GET", glance + "/v2/images", token=t)
            ids = [i["id"] for i in json.loads(body).get("images", [])] if st == 200 else []
            check(img["id"] in ids, "user-a (%s) lists it: %d" % (name, st))
        st, _, _ = call("GET", glance + "/v2/images/" + img["id"], token=tb)
        check(st == 404, "user-b gets it: %d (want 404)" % st)
        st, _, body = call("GET", glance + "/v2/images", token=tb)
        check(st == 200 and img["id"] not in [i["id"] for i in json.loads(body)["images"]],
              "user-b's list does not show it: %d" % st)
        st, h, _ = call("GET", glance + "/v2/images")
        check(st == 401, "no token: %d (want 401), WWW-Authenticate %s"
              % (st, h.get("WWW-Authenticate")))
        st, _, _ = call("GET", glance + "/v2/images", token="not-a-token")
        check(st == 401, "bad token: %d (want 401)" % st)

        # web-download from a loopback HTTP server in this process.
        tmpdir = "/tmp/keystone-check-%d" % os.getpid()
        os.makedirs(tmpdir, exist_ok=True)
        data = os.urandom(SIZE)
        with open(os.path.join(tmpdir, "file.raw"), "wb") as f:
            f.write(data)

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kw):
                super().__init__(*args, directory=tmpdir, **kw)

            def log_message(self, *args):
                pass

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            st, _, body = call("POST", glance + "/v2/images", {
                "name": "keystone-check-web", "disk_format": "raw",
                "container_format": "bare"}, ta)
            web = json.loads(body)
            created.append(web["id"])
            uri = "http://127.0.0.1:%d/file.raw" % srv.server_address[1]
            t0 = time.monotonic()
            st, _, body = call("POST", glance + "/v2/images/%s/import" % web["id"],
                               {"method": {"name": "web-download", "uri": uri}}, ta)
            check(st == 202, "web-download import accepted: %d %s" % (st, body[:200]))
            statuses = []
            while time.monotonic() - t0 < 60:
                st, _, body = call("GET", glance + "/v2/images/" + web["id"], token=ta)
                im = json.loads(body)
                if not statuses or statuses[-1] != im["status"]:
                    statuses.append(im["status"])
                if im["status"] == "active":
                    break
                time.sleep(0.2)
            check(im["status"] == "active" and im["size"] == SIZE
                  and im["checksum"] == hashlib.md5(data).hexdigest(),
                  "import ends active, size %s, statuses %s, %.2f s"
                  % (im["size"], statuses, time.monotonic() - t0))
        finally:
            srv.shutdown()
            srv.server_close()
            os.remove(os.path.join(tmpdir, "file.raw"))
            os.rmdir(tmpdir)
    finally:
        for image_id in created:
            call("DELETE", glance + "/v2/images/" + image_id, token=ta)

    print("all checks passed" if not failures else "%d check(s) failed" % len(failures))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
