"""Seed a Keystone started by keystone.sh with the identities image-gateway tests use.

Usage: python keystone_seed.py KEYSTONE_URL CREDENTIALS_JSON   (run with the venv's python)

Idempotent (find or create; a password is reset only if it no longer authenticates,
since a password change revokes the user's tokens). Through the
Keystone v3 API, as the bootstrap admin (KEYSTONE_ADMIN_PASSWORD), in domain Default:

  project service, user glance   (KEYSTONE_GLANCE_PASSWORD)  role admin on service
  project env-a,   user user-a   (KEYSTONE_USER_A_PASSWORD)  roles member, reader on env-a
  project env-b,   user user-b   (KEYSTONE_USER_B_PASSWORD)  roles member, reader on env-b
  application credential "user-a-appcred" of user-a on env-a (roles member, reader),
  created by user-a itself. Its secret is only shown at creation: it is kept if
  CREDENTIALS_JSON already holds a secret for the same id, else it is recreated.
  If GLANCE_URL is set: service "glance" (type image) with public/internal/admin
  endpoints GLANCE_URL in RegionOne.

CREDENTIALS_JSON (written atomically, mode 0600):

  {"keystone_url": "http://127.0.0.1:PORT/v3", "region": "RegionOne",
   "domain_id": "default", "domain_name": "Default",
   "admin":  {"username","password","user_id","project_name","project_id","roles"},
   "glance": {... same keys, project service ...},
   "user_a": {... same keys, project env-a, roles ["member","reader"] ...},
   "user_b": {... same keys, project env-b ...},
   "app_cred_a": {"id","name","secret","user_id","project_id","project_name","roles"}}
"""

import json
import os
import sys

from keystoneauth1 import exceptions as ka_exc
from keystoneauth1 import session as ka_session
from keystoneauth1.identity import v3
from keystoneclient.v3 import client as ks_client

DOMAIN_ID = "default"
DOMAIN_NAME = "Default"
REGION = "RegionOne"
APP_CRED_NAME = "user-a-appcred"


def password_session(url, username, password, project_name):
    auth = v3.Password(
        auth_url=url,
        username=username,
        password=password,
        user_domain_id=DOMAIN_ID,
        project_name=project_name,
        project_domain_id=DOMAIN_ID,
    )
    return ka_session.Session(auth=auth)


def one(items, what):
    if len(items) > 1:
        raise SystemExit("keystone_seed: more than one %s" % what)
    return items[0] if items else None


def ensure_project(ks, name, description):
    p = one(ks.projects.list(domain=DOMAIN_ID, name=name), "project " + name)
    return p or ks.projects.create(name=name, domain=DOMAIN_ID, description=description)


def password_works(url, username, password):
    auth = v3.Password(auth_url=url, username=username, password=password,
                       user_domain_id=DOMAIN_ID, unscoped=True)
    try:
        ka_session.Session(auth=auth).get_token()
        return True
    except ka_exc.Unauthorized:
        return False


def ensure_user(ks, url, name, password, project):
    u = one(ks.users.list(domain=DOMAIN_ID, name=name), "user " + name)
    if u is None:
        return ks.users.create(
            name=name, domain=DOMAIN_ID, password=password, default_project=project
        )
    changes = {}
    if getattr(u, "default_project_id", None) != project.id:
        changes["default_project"] = project
    # A password change revokes the user's tokens (and so breaks tokens a test holds across
    # a re-seed): change it only when the stored one differs from the environment's.
    if not u.enabled:
        changes["enabled"] = True
        changes["password"] = password  # a disabled user's password cannot be tried
    elif not password_works(url, name, password):
        changes["password"] = password
    return ks.users.update(u, **changes) if changes else u


def main():
    url, out = sys.argv[1].rstrip("/"), sys.argv[2]
    pw = {
        "admin": os.environ.get("KEYSTONE_ADMIN_PASSWORD", "ks-admin-test-pw"),
        "glance": os.environ.get("KEYSTONE_GLANCE_PASSWORD", "ks-glance-test-pw"),
        "user-a": os.environ.get("KEYSTONE_USER_A_PASSWORD", "user-a-test-pw"),
        "user-b": os.environ.get("KEYSTONE_USER_B_PASSWORD", "user-b-test-pw"),
    }
    try:
        with open(out) as f:
            previous = json.load(f)
    except (OSError, ValueError):
        previous = {}

    admin_sess = password_session(url, "admin", pw["admin"], "admin")
    ks = ks_client.Client(session=admin_sess, interface="public", endpoint_override=url)
    roles = {r.name: r for r in ks.roles.list()}
    for needed in ("admin", "member", "reader"):
        if needed not in roles:
            raise SystemExit("keystone_seed: role %s missing (bootstrap?)" % needed)

    result = {
        "keystone_url": url,
        "region": REGION,
        "domain_id": DOMAIN_ID,
        "domain_name": DOMAIN_NAME,
    }

    admin_project = one(ks.projects.list(domain=DOMAIN_ID, name="admin"), "project admin")
    admin_user = one(ks.users.list(domain=DOMAIN_ID, name="admin"), "user admin")
    result["admin"] = {
        "username": "admin", "password": pw["admin"], "user_id": admin_user.id,
        "project_name": "admin", "project_id": admin_project.id, "roles": ["admin"],
    }

    specs = [
        ("glance", "glance", "service", "Service project (Glance's authtoken user)",
         ["admin"]),
        ("user_a", "user-a", "env-a", "image-gateway test project A", ["member", "reader"]),
        ("user_b", "user-b", "env-b", "image-gateway test project B", ["member", "reader"]),
    ]
    for key, uname, pname, desc, role_names in specs:
        project = ensure_project(ks, pname, desc)
        user = ensure_user(ks, url, uname, pw[uname], project)
        for r in role_names:
            ks.roles.grant(roles[r], user=user, project=project)
        result[key] = {
            "username": uname, "password": pw[uname], "user_id": user.id,
            "project_name": pname, "project_id": project.id, "roles": role_names,
        }

    # Application credential: only its owner may create it (policy), so as user-a.
    a = result["user_a"]
    a_sess = password_session(url, "user-a", pw["user-a"], "env-a")
    ks_a = ks_client.Client(session=a_sess, interface="public", endpoint_override=url)
    prev = previous.get("app_cred_a") or {}
    cred = None
    existing = ks_a.application_credentials.list(user=a["user_id"], name=APP_CRED_NAME)
    for c in existing:
        if c.id == prev.get("id") and prev.get("secret") and c.project_id == a["project_id"]:
            cred, secret = c, prev["secret"]
        else:
            ks_a.application_credentials.delete(c)
    if cred is None:
        cred = ks_a.application_credentials.create(
            name=APP_CRED_NAME, user=a["user_id"],
            description="image-gateway tests: user-a on env-a",
        )
        secret = cred.secret
    result["app_cred_a"] = {
        "id": cred.id, "name": APP_CRED_NAME, "secret": secret,
        "user_id": a["user_id"], "project_id": a["project_id"], "project_name": "env-a",
        "roles": sorted(r["name"] for r in cred.roles),
    }

    glance_url = os.environ.get("GLANCE_URL", "").rstrip("/")
    if glance_url:
        svc = one(ks.services.list(type="image"), "image service")
        svc = svc or ks.services.create(name="glance", type="image", description="Glance")
        for iface in ("public", "internal", "admin"):
            eps = ks.endpoints.list(service=svc, interface=iface, region=REGION)
            ep = one(eps, "image %s endpoint" % iface)
            if ep is None:
                ks.endpoints.create(service=svc, url=glance_url, interface=iface,
                                    region=REGION)
            elif ep.url != glance_url:
                ks.endpoints.update(ep, url=glance_url)
        result["glance_url"] = glance_url

    # Check that the application credential authenticates (catches a stale secret).
    try:
        ka_session.Session(auth=v3.ApplicationCredential(
            auth_url=url, application_credential_id=cred.id,
            application_credential_secret=secret)).get_token()
    except ka_exc.Unauthorized:
        raise SystemExit("keystone_seed: application credential %s does not authenticate"
                         % cred.id)

    tmp = out + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(result, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
