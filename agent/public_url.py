"""The absolute URL a WHIP session resource is answered under (RFC 9725: `Location` names the session).

A session lives in the process that took the offer, so its later DELETE must reach that process. Behind a proxy
or load balancer, `ingest.public_url` names this process's own externally reachable base URL, e.g.
`http://{hostname}.affectstream-headless.calls.svc:8080` (per-pod DNS of a StatefulSet and a headless Service):
`{hostname}` is replaced by this host's name. Without it, the base is the request's own: the scheme from
X-Forwarded-Proto (else the connection's) and the Host header, which behind a proxy names the proxy.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from aiohttp import web

HOSTNAME_FIELD = "{hostname}"
_SCHEMES = ("http", "https")
_EXAMPLE = "http://{hostname}.agents.example:8080"


def check_public_url(template: str) -> str:
    """`template` if it is an http(s) base URL (optionally with `{hostname}`), else ValueError in one line."""
    concrete = template.replace(HOSTNAME_FIELD, "host")
    if "{" in concrete or "}" in concrete:
        raise ValueError(f"the only placeholder allowed is {HOSTNAME_FIELD}, e.g. {_EXAMPLE}")
    parts = urlsplit(concrete)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise ValueError(f"not a valid port in the URL, e.g. {_EXAMPLE}") from None
    if parts.scheme not in _SCHEMES or not parts.hostname or parts.query or parts.fragment or parts.username:
        raise ValueError(f"must be an http:// or https:// base URL without query or credentials, e.g. {_EXAMPLE}")
    return template


def resolve_public_url(template: str, hostname: str | None = None) -> str:
    """The base URL with `{hostname}` replaced (by this host's name unless given), without a trailing slash."""
    return template.replace(HOSTNAME_FIELD, hostname or socket.gethostname()).rstrip("/")


def request_base_url(request: web.BaseRequest) -> str:
    """`scheme://host[:port]` as the client addressed this request."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").partition(",")[0].strip().lower()
    scheme = forwarded if forwarded in _SCHEMES else request.scheme
    return f"{scheme}://{request.host}"
