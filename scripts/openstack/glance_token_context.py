"""Paste filter for glance.sh GLANCE_AUTH=token (test use only, no Keystone).

Nova's Glance client forwards only the caller's X-Auth-Token to Glance, never the
identity headers. This filter lets such a request carry an identity anyway: a token of
the form

    gw:<project_id>:<user_id>:<role>[,<role>...]

is turned into the headers Glance's ContextMiddleware reads (X-Identity-Status:
Confirmed, X-Project-Id, X-User-Id, X-Roles). Requests that already carry
X-Identity-Status, or whose token has another form, pass unchanged (so the plain
header contract of GLANCE_AUTH=headers still works, and anything else gets 401).
python-glanceclient percent-encodes the token it sends (`gw%3A...`): it is decoded first.
"""

from urllib.parse import unquote

PREFIX = "gw:"


class TokenIdentity(object):
    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        token = unquote(environ.get("HTTP_X_AUTH_TOKEN", ""))
        if "HTTP_X_IDENTITY_STATUS" not in environ and token.startswith(PREFIX):
            parts = token[len(PREFIX):].split(":")
            if len(parts) == 3 and parts[0] and parts[1]:
                environ["HTTP_X_IDENTITY_STATUS"] = "Confirmed"
                environ["HTTP_X_PROJECT_ID"] = parts[0]
                environ["HTTP_X_USER_ID"] = parts[1]
                environ["HTTP_X_ROLES"] = parts[2]
        return self.app(environ, start_response)


def filter_factory(global_conf, **local_conf):
    return TokenIdentity
