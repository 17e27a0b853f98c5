"""python-glanceclient's v1 CLI (`glance --os-image-api-version 1`) driven against image-gateway.

Run by scripts/test.sh with the OpenStack venv's Python (its `glance` command is used):
    python tests/glance_v1/cli.py V1_ENDPOINT GLANCE_URL
V1_ENDPOINT is what users give `--os-image-url`: the gateway's Glance v1 mount, in front of
GLANCE_URL, a Glance that maps `gw:<project>:<user>:<roles>` tokens to identities
(scripts/openstack/glance.sh, GLANCE_AUTH=token). Each CLI call is run as users run it and its
outcome is checked against Glance's own v2 state, read from GLANCE_URL with the same token.
A few requests other v1 clients make and the CLI does not are sent as they are. Every check is
a counted case; a failed one prints what was expected and what came. The script
prints `glance-v1: N passed, M failed` and exits non-zero on any failure.
"""

import hashlib
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid

V1, GLANCE = sys.argv[1].rstrip("/"), sys.argv[2].rstrip("/")
GLANCE_CLI = os.path.join(os.path.dirname(sys.executable), "glance")
RUN = uuid.uuid4().hex[:8]
OWNER, MEMBER, ADMIN = (uuid.uuid4().hex for _ in range(3))


def token(project, roles="member,reader"):
    return "gw:%s:cli-%s:%s" % (project, project[:6], roles)


TOKEN, MEMBER_TOKEN, ADMIN_TOKEN = token(OWNER), token(MEMBER), token(ADMIN, "admin,member,reader")
# Fields of a v2 image that are not custom properties (v2 image schema's base properties).
V2_BASE = {
    "id", "name", "status", "visibility", "protected", "checksum", "owner", "size", "virtual_size",
    "min_ram", "min_disk", "disk_format", "container_format", "created_at", "updated_at", "tags",
    "direct_url", "locations", "self", "file", "schema", "os_hidden", "os_hash_algo",
    "os_hash_value", "stores",
}

passed = failed = 0


def check(name, expected, got):
    """One counted case: `got` must equal `expected`."""
    global passed, failed
    if expected == got:
        passed += 1
        print("ok    %s" % name)
    else:
        failed += 1
        print("FAIL  %s\n        expected: %r\n        got:      %r" % (name, expected, got))


def fail(name, why):
    global failed
    failed += 1
    print("FAIL  %s\n        %s" % (name, why.rstrip().replace("\n", "\n        ")))


# ----------------------------------------------------------------------------------------------
# The CLI, as a user runs it.

class Cli:
    def __init__(self, rc, raw, err):
        self.rc, self.raw, self.err = rc, raw, err
        self.out = raw.decode(errors="replace")

    def __repr__(self):
        return "exit %d, stdout %r, stderr %r" % (self.rc, self.out[-800:], self.err[-800:])


def glance(tok, *args, data=None):
    """Runs `glance --os-image-api-version 1 ...` against the gateway; `data`, if given, is piped
    to its standard input."""
    cmd = [GLANCE_CLI, "--os-image-api-version", "1", "--os-image-url", V1, "--os-auth-token", tok]
    return run_cli(cmd + list(args), data)


def run_cli(cmd, data=None):
    """Runs the CLI as from a terminal: its standard input is a tty, which the CLI reads as
    "no image data" (any other standard input it would upload), or a pipe carrying `data`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    master, tty = os.openpty()
    try:
        stdin = {"input": data} if data is not None else {"stdin": tty}
        p = subprocess.run(cmd, capture_output=True, env=env, timeout=300, **stdin)
    finally:
        os.close(tty)
        os.close(master)
    return Cli(p.returncode, p.stdout, p.stderr.decode(errors="replace"))


def ok(cli):
    """The call succeeded; else raises with what the CLI printed."""
    if cli.rc != 0:
        raise AssertionError("the CLI failed: %r" % cli)
    return cli


def table(text):
    """Rows of a prettytable printed by the CLI, as lists of cell strings (header row first);
    continuation lines of a wrapped cell (first cell empty) are joined to their row."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip()[1:-1].split("|")]
        if rows and cells[0] == "" and len(rows) > 1:
            rows[-1] = [a + b for a, b in zip(rows[-1], cells)]
        else:
            rows.append(cells)
    return rows


def shown(cli):
    """The Property/Value table of image-show, image-create and image-update, as a dict."""
    rows = table(ok(cli).out)
    assert rows and rows[0] == ["Property", "Value"], "no Property/Value table in %r" % cli
    return dict(rows[1:])


def cell(value):
    """A value as a list command prints it (glanceclient's print_list: falsy values blank)."""
    return str(value) if value else ""


def listed(cli):
    """The rows of a list command, as dicts keyed by column title."""
    rows = table(ok(cli).out)
    return [dict(zip(rows[0], r)) for r in rows[1:]] if rows else []


# ----------------------------------------------------------------------------------------------
# Glance's own v2 state, with the same token.

def v2(method, path, tok=TOKEN, body=None, content_type="application/json"):
    """(status, JSON body or None) of a call straight to Glance v2."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(GLANCE + path, data=data, method=method,
                                 headers={"X-Auth-Token": tok, "Accept": "application/json"})
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req) as res:
            text = res.read()
            return res.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        e.read()
        return e.code, None


def v2_image(image_id, tok=TOKEN):
    status, body = v2("GET", "/v2/images/%s" % image_id, tok)
    assert status == 200, "GET /v2/images/%s: %s" % (image_id, status)
    return body


def v2_list(query="", tok=TOKEN):
    """Every image v2 lists for `query`, following `next`."""
    images, path = [], "/v2/images?limit=1000" + ("&" + query if query else "")
    while path:
        status, body = v2("GET", path, tok)
        assert status == 200, "GET %s: %s" % (path, status)
        images += body["images"]
        path = body.get("next")
    return images


def v2_named(name, tok=TOKEN):
    return [i["id"] for i in v2_list("name=" + urllib.parse.quote(name), tok)]


def v2_members(image_id, tok=TOKEN):
    status, body = v2("GET", "/v2/images/%s/members" % image_id, tok)
    assert status == 200, "GET /v2/images/%s/members: %s" % (image_id, status)
    return sorted(m["member_id"] for m in body["members"])


def v1_time(v2_time):
    """v1's timestamp form of a v2 one: microseconds, no zone (2026-01-02T03:04:05.000000)."""
    return v2_time.rstrip("Z") + ".000000" if v2_time else None


def v1_status(v2_status):
    return {"uploading": "saving", "importing": "saving"}.get(v2_status, v2_status)


def custom(image):
    return {k: v for k, v in image.items() if k not in V2_BASE and not k.startswith("os_glance_")}


def as_shown(image, headers):
    """What the CLI prints for a v2 image as v1 serves it: from `x-image-meta-*` headers
    (image-show: a null field has no header, so no row) or from a JSON body (image-create and
    image-update: a null shows as None)."""
    want = {
        "id": image["id"], "name": image["name"], "status": v1_status(image["status"]),
        "size": image["size"] or 0, "checksum": image["checksum"],
        "disk_format": image["disk_format"], "container_format": image["container_format"],
        "min_ram": image["min_ram"], "min_disk": image["min_disk"], "owner": image["owner"],
        "protected": image["protected"], "is_public": image["visibility"] == "public",
        "deleted": False, "created_at": v1_time(image["created_at"]),
        "updated_at": v1_time(image["updated_at"]),
    }
    want.update(("Property '%s'" % k, v) for k, v in custom(image).items())
    return {k: str(v) for k, v in want.items() if v is not None or not headers}


def compare_shown(name, got, image, headers=True):
    """The CLI's Property/Value table against the v2 image: every field above, one case each,
    plus no property that v2 does not have."""
    want = as_shown(image, headers)
    for key in sorted(want):
        check("%s: %s" % (name, key), want[key], got.get(key, "<missing>"))
    check("%s: no other properties" % name,
          sorted(k for k in want if k.startswith("Property")),
          sorted(k for k in got if k.startswith("Property")))


# ----------------------------------------------------------------------------------------------
# Scenarios. Each runs in order; an unexpected exception ends that scenario as one failure.

def random_file(size):
    data = os.urandom(size)
    f = tempfile.NamedTemporaryFile(prefix="glance-v1-", delete=False)
    f.write(data)
    f.close()
    return f.name, data


def sha256(data):
    return hashlib.sha256(data).hexdigest()


STATE = {}


def scenario_create_with_file():
    path, data = random_file(3 * 1024 * 1024 + 4321)
    STATE["path"], STATE["data"] = path, data
    name = "v1cli-%s-upload" % RUN
    got = shown(glance(TOKEN, "image-create", "--file", path, "--name", name, "--disk-format", "raw",
                       "--container-format", "bare", "--is-public", "False", "--min-ram", "128",
                       "--min-disk", "1", "--property", "os_distro=cirros",
                       "--property", "purpose=v1-cli"))
    image_id = got["id"]
    STATE["id"] = image_id
    check("image-create: the CLI shows status", "active", got.get("status"))
    check("image-create: the CLI shows size", str(len(data)), got.get("size"))
    check("image-create: the CLI shows checksum", hashlib.md5(data).hexdigest(), got.get("checksum"))
    check("image-create: the CLI shows is_public", "False", got.get("is_public"))
    check("image-create: the CLI shows the properties", ["cirros", "v1-cli"],
          [got.get("Property 'os_distro'"), got.get("Property 'purpose'")])
    image = v2_image(image_id)
    check("image-create: v2 name, formats, min_ram, min_disk, owner",
          [name, "raw", "bare", 128, 1, OWNER],
          [image["name"], image["disk_format"], image["container_format"], image["min_ram"],
           image["min_disk"], image["owner"]])
    check("image-create: v2 status and size", ["active", len(data)], [image["status"], image["size"]])
    check("image-create: v2 checksum (md5) and os_hash_value (sha512) of the uploaded bytes",
          [hashlib.md5(data).hexdigest(), "sha512", hashlib.sha512(data).hexdigest()],
          [image["checksum"], image["os_hash_algo"], image["os_hash_value"]])
    check("image-create: v2 custom properties", {"os_distro": "cirros", "purpose": "v1-cli"},
          custom(image))
    check("image-create: --is-public False is not public in v2", True,
          image["visibility"] in ("private", "shared"))
    check("image-create: exactly one v2 image of that name", [image_id], v2_named(name))
    compare_shown("image-create: the CLI's answer", got, image, headers=False)


def scenario_show():
    got = shown(glance(TOKEN, "image-show", STATE["id"]))
    compare_shown("image-show", got, v2_image(STATE["id"]))


def scenario_download():
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "image.bin")
        ok(glance(TOKEN, "image-download", STATE["id"], "--file", out))
        with open(out, "rb") as f:
            check("image-download --file: bytes equal to the uploaded ones (sha256)",
                  sha256(STATE["data"]), sha256(f.read()))


def scenario_list():
    # A few more images of our own (straight in v2), so that the paging below takes pages.
    for i in range(4):
        status, _ = v2("POST", "/v2/images", body={"name": "v1cli-%s-list-%d" % (RUN, i),
                                                    "disk_format": "qcow2", "container_format": "bare",
                                                    "purpose": "paging" if i % 2 else "listing"})
        assert status == 201, "seeding list images: %s" % status
    rows = listed(glance(TOKEN, "image-list"))
    expected = v2_list("sort_key=name&sort_dir=asc")
    check("image-list: the ids v2 lists, in v2's name order", [i["id"] for i in expected],
          [r["ID"] for r in rows])
    by_id = {r["ID"]: r for r in rows}
    for image in expected:
        if image["owner"] != OWNER:
            continue
        check("image-list: columns of %s" % image["name"],
              [cell(image["name"]), cell(image["disk_format"]), cell(image["container_format"]),
               cell(image["size"]), v1_status(image["status"])],
              [by_id.get(image["id"], {}).get(k) for k in
               ("Name", "Disk Format", "Container Format", "Size", "Status")])
    paged = listed(glance(TOKEN, "image-list", "--page-size", "2"))
    check("image-list --page-size 2: every page followed, same ids in the same order",
          [r["ID"] for r in rows], [r["ID"] for r in paged])
    desc = listed(glance(TOKEN, "image-list", "--sort-key", "created_at", "--sort-dir", "desc"))
    check("image-list --sort-key created_at --sort-dir desc: v2's order",
          [i["id"] for i in v2_list("sort_key=created_at&sort_dir=desc")], [r["ID"] for r in desc])
    since = v2_list("name=v1cli-%s-list-1" % RUN)[0]["updated_at"]
    for args, query in (
            (["--property-filter", "purpose=paging"], "purpose=paging"),
            (["--changes-since", since], "updated_at=gt:" + since),
            (["--name", "v1cli-%s-list-2" % RUN], "name=v1cli-%s-list-2" % RUN),
            (["--disk-format", "qcow2", "--status", "queued"], "disk_format=qcow2&status=queued"),
            (["--size-min", "1048576"], "size_min=1048576"),
            (["--container-format", "bare", "--size-max", "1000"], "container_format=bare&size_max=1000")):
        got = listed(glance(TOKEN, "image-list", *args))
        want = v2_list(query + "&sort_key=name&sort_dir=asc")
        check("image-list %s: the ids of v2's ?%s" % (" ".join(args), query),
              [i["id"] for i in want], [r["ID"] for r in got])
    got = listed(glance(TOKEN, "image-list", "--is-public", "False"))
    check("image-list --is-public False: v2's images that are not public",
          [i["id"] for i in v2_list("sort_key=name&sort_dir=asc") if i["visibility"] != "public"],
          [r["ID"] for r in got])
    got = listed(glance(TOKEN, "image-list", "--owner", OWNER))
    check("image-list --owner (is_public=None, filtered by the client): the project's own images",
          [i["id"] for i in v2_list("sort_key=name&sort_dir=asc") if i["owner"] == OWNER],
          [r["ID"] for r in got])


def scenario_update():
    image_id = STATE["id"]
    new_name = "v1cli-%s-renamed" % RUN
    got = shown(glance(TOKEN, "image-update", image_id, "--name", new_name, "--min-ram", "256",
                       "--property", "purpose=updated", "--property", "extra=1"))
    image = v2_image(image_id)
    check("image-update --name --min-ram --property: v2 name and min_ram", [new_name, 256],
          [image["name"], image["min_ram"]])
    check("image-update --property (no purge): v2 properties merged",
          {"os_distro": "cirros", "purpose": "updated", "extra": "1"}, custom(image))
    compare_shown("image-update: the CLI's answer", got, image, headers=False)
    shown(glance(TOKEN, "image-update", image_id, "--purge-props", "--property", "only=this"))
    image = v2_image(image_id)
    check("image-update --purge-props --property only=this: v2 keeps just that property",
          {"only": "this"}, custom(image))
    check("image-update --purge-props: base fields untouched",
          [new_name, 256, "raw", "active", len(STATE["data"])],
          [image["name"], image["min_ram"], image["disk_format"], image["status"], image["size"]])


def scenario_create_from_a_pipe():
    # `... | glance image-create`: the CLI cannot tell the size and sends the bytes chunked.
    data = os.urandom(2 * 1024 * 1024 + 99)
    name = "v1cli-%s-piped" % RUN
    got = shown(glance(TOKEN, "image-create", "--name", name, "--disk-format", "raw",
                       "--container-format", "bare", data=data))
    image = v2_image(got["id"])
    check("image-create from a pipe (chunked, no size): v2 active with the bytes' size and checksums",
          ["active", len(data), hashlib.md5(data).hexdigest(), hashlib.sha512(data).hexdigest()],
          [image["status"], image["size"], image["checksum"], image["os_hash_value"]])
    got = glance(TOKEN, "image-download", got["id"])
    check("image-download to standard output: the piped bytes (sha256)", [0, sha256(data)],
          [got.rc, sha256(got.raw) if got.rc == 0 else got.err])
    ok(glance(TOKEN, "image-delete", image["id"]))


def scenario_upload_to_queued():
    name = "v1cli-%s-queued" % RUN
    got = shown(glance(TOKEN, "image-create", "--name", name, "--disk-format", "raw",
                       "--container-format", "bare"))
    image_id = got["id"]
    check("image-create without data: queued, in the CLI and in v2", ["queued", "queued"],
          [got.get("status"), v2_image(image_id)["status"]])
    check("image-create without data: the CLI shows size 0 (v2 has null)", ["0", None],
          [got.get("size"), v2_image(image_id)["size"]])
    err = glance(TOKEN, "image-download", image_id, "--file", os.devnull)
    check("image-download of a queued image: the CLI fails with v1's 404",
          [1, True], [err.rc, "404 Not Found" in err.err])
    path, data = random_file(1024 * 1024 + 17)
    try:
        shown(glance(TOKEN, "image-update", image_id, "--file", path))
    finally:
        os.unlink(path)
    image = v2_image(image_id)
    check("image-update --file on a queued image: v2 active with the bytes' size and checksum",
          ["active", len(data), hashlib.md5(data).hexdigest()],
          [image["status"], image["size"], image["checksum"]])
    err = glance(TOKEN, "image-update", image_id, "--file", STATE["path"])
    check("image-update --file on an active image: the CLI refuses it",
          [1, "Unable to upload image data to an image which is active."], [err.rc, err.err.strip()])
    ok(glance(TOKEN, "image-delete", image_id))


def scenario_members():
    image_id = STATE["id"]
    ok(glance(TOKEN, "member-create", image_id, MEMBER))
    check("member-create: v2 lists the member", [MEMBER], v2_members(image_id))
    check("member-create: the image is shared in v2", "shared", v2_image(image_id)["visibility"])
    rows = listed(glance(TOKEN, "member-list", "--image-id", image_id))
    check("member-list --image-id: v2's members",
          [[image_id, m, cell(False)] for m in v2_members(image_id)],
          [[r["Image ID"], r["Member ID"], r["Can Share"]] for r in rows])
    rows = listed(glance(MEMBER_TOKEN, "member-list", "--tenant-id", MEMBER))
    shared = [i["id"] for i in v2_list("visibility=shared&member_status=all", MEMBER_TOKEN)
              if i["owner"] != MEMBER]
    check("member-list --tenant-id (as the member): the images v2 shares with it",
          sorted([i, MEMBER] for i in shared), sorted([r["Image ID"], r["Member ID"]] for r in rows))
    rows = listed(glance(MEMBER_TOKEN, "image-list"))
    check("image-list as the member: the shared image too, as v1 listed it whatever the member's "
          "status (v2's member_status=all)",
          [i["id"] for i in v2_list("member_status=all&sort_key=name&sort_dir=asc", MEMBER_TOKEN)],
          [r["ID"] for r in rows])
    check("image-list as the member: the shared image is in it", True, image_id in [r["ID"] for r in rows])
    got = glance(MEMBER_TOKEN, "image-show", image_id)
    check("image-show as the member: the image, as v2 shows it to the member",
          [0, v2_image(image_id, MEMBER_TOKEN)["id"]], [got.rc, shown(got).get("id") if got.rc == 0 else got.err])
    ok(glance(TOKEN, "member-create", image_id, MEMBER))
    check("member-create of a member again: still that one member in v2 (v1's PUT was idempotent)",
          [MEMBER], v2_members(image_id))
    err = glance(TOKEN, "member-delete", image_id, ADMIN)
    check("member-delete of a project that is no member: the CLI shows v1's 404",
          [1, True], [err.rc, "404 Not Found" in err.err])
    ok(glance(TOKEN, "member-delete", image_id, MEMBER))
    check("member-delete: v2 lists no member", [], v2_members(image_id))
    check("member-list --image-id after member-delete: empty", [],
          listed(glance(TOKEN, "member-list", "--image-id", image_id)))
    status, _ = v2("GET", "/v2/images/%s" % image_id, MEMBER_TOKEN)
    check("member-delete: the former member cannot see the image in v2", 404, status)
    err = glance(MEMBER_TOKEN, "member-create", image_id, ADMIN)
    check("member-create on another project's image: the CLI finds no such image",
          [1, "No image with a name or ID of '%s' exists." % image_id], [err.rc, err.err.strip()])


def scenario_public_image():
    path, data = random_file(64 * 1024)
    try:
        name = "v1cli-%s-public" % RUN
        err = glance(TOKEN, "image-create", "--file", path, "--name", name, "--disk-format", "raw",
                     "--container-format", "bare", "--is-public", "True")
        check("image-create --is-public True as a non-admin: the CLI shows v1's 403",
              [1, True], [err.rc, "403 Forbidden" in err.err])
        check("image-create --is-public True as a non-admin: no image left in v2", [], v2_named(name))
        got = shown(glance(ADMIN_TOKEN, "image-create", "--file", path, "--name", name,
                           "--disk-format", "raw", "--container-format", "bare", "--is-public", "True"))
    finally:
        os.unlink(path)
    image_id = got["id"]
    check("image-create --is-public True as an admin: public in v2", "public",
          v2_image(image_id, ADMIN_TOKEN)["visibility"])
    compare_shown("image-show of another project's public image", shown(glance(TOKEN, "image-show", image_id)),
                  v2_image(image_id))
    # A deliberate difference (docs/glance-v1.md): the gateway cannot tell an admin's token from
    # another's, so an admin's default list is Glance v2's, every image, where Queens listed an
    # admin's images as a user's unless asked for is_public=None (--all-tenants).
    every = [i["id"] for i in v2_list("sort_key=name&sort_dir=asc", ADMIN_TOKEN)]
    check("image-list as an admin: every image v2 lists to the admin (v2's rule, not Queens')",
          every, [r["ID"] for r in listed(glance(ADMIN_TOKEN, "image-list"))])
    check("image-list --all-tenants as an admin (is_public=None): every image v2 lists to the admin",
          every, [r["ID"] for r in listed(glance(ADMIN_TOKEN, "image-list", "--all-tenants"))])
    rows = listed(glance(TOKEN, "image-list", "--is-public", "True"))
    check("image-list --is-public True: v2's public images", [i["id"] for i in v2_list(
        "visibility=public&sort_key=name&sort_dir=asc")], [r["ID"] for r in rows])
    status, _ = v2("POST", "/v2/images/%s/actions/deactivate" % image_id, ADMIN_TOKEN)
    assert status == 204, "deactivating: %s" % status
    err = glance(TOKEN, "image-download", image_id, "--file", os.devnull)
    check("image-download of a deactivated image: the CLI shows v1's 403", [1, True],
          [err.rc, "403 Forbidden" in err.err])
    ok(glance(ADMIN_TOKEN, "image-delete", image_id))
    check("image-delete (admin) of the public image: gone from v2", 404,
          v2("GET", "/v2/images/%s" % image_id, ADMIN_TOKEN)[0])


def scenario_bad_requests():
    path, _ = random_file(1024)
    try:
        name = "v1cli-%s-bad" % RUN
        err = glance(TOKEN, "image-create", "--file", path, "--name", name, "--disk-format", "floppy",
                     "--container-format", "bare")
        check("image-create --disk-format floppy: the CLI shows v1's 400", [1, True],
              [err.rc, "400 Bad Request" in err.err])
        check("image-create --disk-format floppy: no image left in v2", [], v2_named(name))
    finally:
        os.unlink(path)
    path, data = random_file(2048)
    try:
        for what, args in (("--checksum of other bytes", ["--checksum", hashlib.md5(b"other").hexdigest()]),
                           ("--size other than the file's", ["--size", "5"])):
            name = "v1cli-%s-mismatch-%s" % (RUN, args[0].strip("-"))
            err = glance(TOKEN, "image-create", "--file", path, "--name", name, "--disk-format", "raw",
                         "--container-format", "bare", *args)
            check("image-create %s: the CLI shows v1's 400" % what, [1, True],
                  [err.rc, "400 Bad Request" in err.err])
            check("image-create %s: no image left in v2 (v1 left a killed one)" % what, [], v2_named(name))
    finally:
        os.unlink(path)
    missing = str(uuid.uuid4())
    err = glance(TOKEN, "image-show", missing)
    check("image-show of a missing image: the CLI's message",
          [1, "No image with a name or ID of '%s' exists." % missing], [err.rc, err.err.strip()])


def scenario_delete():
    image_id = STATE["id"]
    ok(glance(TOKEN, "image-delete", image_id))
    check("image-delete: v2 has no such image", 404, v2("GET", "/v2/images/%s" % image_id)[0])
    gone = "No image with a name or ID of '%s' exists." % image_id
    for args in (["image-show", image_id], ["image-update", image_id, "--name", "again"],
                 ["image-download", image_id, "--file", os.devnull], ["image-delete", image_id]):
        err = glance(TOKEN, *args)
        check("%s of a deleted image: the CLI's message" % args[0], [1, gone], [err.rc, err.err.strip()])


def scenario_protected():
    path, _ = random_file(4096)
    try:
        got = shown(glance(TOKEN, "image-create", "--file", path, "--name", "v1cli-%s-protected" % RUN,
                           "--disk-format", "raw", "--container-format", "bare", "--is-protected", "True"))
    finally:
        os.unlink(path)
    image_id = got["id"]
    check("image-create --is-protected True: protected in v2", True, v2_image(image_id)["protected"])
    # The CLI reports a failed delete and still exits 0.
    got = glance(TOKEN, "image-delete", image_id)
    check("image-delete of a protected image: the CLI shows v1's 403", True, "403 Forbidden" in got.out)
    check("image-delete of a protected image: still in v2", 200, v2("GET", "/v2/images/%s" % image_id)[0])
    shown(glance(TOKEN, "image-update", image_id, "--is-protected", "False"))
    check("image-update --is-protected False: not protected in v2", False, v2_image(image_id)["protected"])
    ok(glance(TOKEN, "image-delete", image_id))
    check("image-delete once unprotected: gone from v2", 404, v2("GET", "/v2/images/%s" % image_id)[0])


def scenario_owner_from_non_admin():
    # A deliberate difference (docs/glance-v1.md): Queens' registry silently dropped `owner` from
    # a non-admin; the gateway cannot tell who is an admin, so it sends `owner` on and Glance v2
    # refuses it. The client is told (403) and nothing is made or changed.
    name = "v1cli-%s-owner" % RUN
    got = glance(TOKEN, "image-create", "--name", name, "--owner", MEMBER)
    check("image-create --owner <another project> as a non-admin: the CLI shows Glance's 403",
          [1, True], [got.rc, "403 Forbidden" in got.err])
    check("image-create --owner <another project> as a non-admin: no image in v2", [], v2_named(name))
    status, image = v2("POST", "/v2/images", body={"name": name + "-update"})
    assert status == 201, "creating the image: %s" % status
    got = glance(TOKEN, "image-update", image["id"], "--owner", MEMBER, "--name", name + "-renamed")
    check("image-update --owner <another project> as a non-admin: the CLI shows Glance's 403",
          [1, True], [got.rc, "403 Forbidden" in got.err])
    check("image-update --owner as a non-admin: nothing changed in v2",
          [OWNER, name + "-update"], [v2_image(image["id"])["owner"], v2_image(image["id"])["name"]])


class _Blob(http.server.BaseHTTPRequestHandler):
    data = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.data)))
        self.end_headers()
        self.wfile.write(self.data)

    def log_message(self, *args):
        pass


def scenario_copy_from():
    _Blob.data = os.urandom(512 * 1024 + 3)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Blob)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = "http://127.0.0.1:%d/blob.raw" % server.server_address[1]
        got = shown(glance(TOKEN, "image-create", "--copy-from", url, "--name", "v1cli-%s-copy" % RUN,
                           "--disk-format", "raw", "--container-format", "bare"))
        image_id = got["id"]
        deadline, image = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            image = v2_image(image_id)
            if image["status"] == "active":
                break
            time.sleep(0.5)
        check("image-create --copy-from: v2 becomes active with the served bytes",
              ["active", len(_Blob.data), hashlib.md5(_Blob.data).hexdigest()],
              [image["status"], image["size"], image["checksum"]])
        ok(glance(TOKEN, "image-delete", image_id))
    finally:
        server.shutdown()


def scenario_version_fallback():
    # Without --os-image-api-version the CLI reads {endpoint}/versions and, finding no v2 there,
    # falls back to v1 by itself (its arguments are parsed as v2's first: image-show is in both).
    status, image = v2("POST", "/v2/images", body={"name": "v1cli-%s-fallback" % RUN})
    assert status == 201, "creating the image: %s" % status
    got = run_cli([GLANCE_CLI, "--os-image-url", V1, "--os-auth-token", TOKEN, "image-show", image["id"]])
    check("glance without --os-image-api-version: the CLI falls back to v1",
          [0, True], [got.rc, "falling back to v1" in got.err])
    compare_shown("glance without --os-image-api-version: image-show", shown(got), v2_image(image["id"]))


def v1_raw(method, path, headers=None, body=None):
    """(status, headers) of a request straight to the gateway's v1 API."""
    req = urllib.request.Request(V1 + path, data=body, method=method,
                                 headers=dict(headers or {}, **{"X-Auth-Token": TOKEN}))
    try:
        with urllib.request.urlopen(req) as res:
            res.read()
            return res.status, res.headers
    except urllib.error.HTTPError as e:
        e.read()
        return e.code, e.headers


def scenario_requests_the_cli_does_not_make():
    # Other v1 clients' requests, against Queens' glance/api/v1 (router.py, images.py).
    status, headers = v1_raw("HEAD", "/v1/images/detail")
    check("HEAD /v1/images/detail: Queens' 405 (the detail route took HEAD only to refuse it), Allow: GET",
          [405, "GET"], [status, headers.get("Allow")])
    name = "v1cli-%s-text-plain" % RUN
    status, _ = v1_raw("POST", "/v1/images", {
        "x-image-meta-name": name, "x-image-meta-disk_format": "raw",
        "x-image-meta-container_format": "bare", "Content-Type": "text/plain"}, b"not an image")
    check("POST /v1/images with bytes as text/plain: Queens' 400 (Content-Type must be "
          "application/octet-stream)", 400, status)
    check("POST /v1/images with bytes as text/plain: no image left in v2", [], v2_named(name))


SCENARIOS = [scenario_create_with_file, scenario_show, scenario_download, scenario_list,
             scenario_update, scenario_create_from_a_pipe, scenario_upload_to_queued, scenario_members,
             scenario_public_image, scenario_bad_requests, scenario_protected, scenario_owner_from_non_admin, scenario_copy_from,
             scenario_version_fallback, scenario_requests_the_cli_does_not_make, scenario_delete]


if __name__ == "__main__":
    print("python-glanceclient's v1 CLI (%s) against %s, Glance v2 at %s" % (GLANCE_CLI, V1, GLANCE))
    for scenario in SCENARIOS:
        print("-- %s" % scenario.__name__[len("scenario_"):])
        try:
            scenario()
        except Exception:
            fail("%s: stopped" % scenario.__name__[len("scenario_"):], traceback.format_exc())
    if "path" in STATE:
        os.unlink(STATE["path"])
    print("glance-v1: %d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed or not passed else 0)
