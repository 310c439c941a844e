"""Bearer tokens guarding the WHIP endpoint and the score feed: one check, every refusal counted.

A credential outside printable ASCII (UTF-8 letters in a header, a control character sent percent-encoded in
`?token=`) is refused as malformed with 401, never a 500; bytes that are not UTF-8 at all never get here
(agent/http_limits.py refuses them with 400 before routing).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence

from aiohttp import web
from pydantic import SecretStr

from agent import metrics
from core.errors import ConfigError

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="affectstream"'}
TOKEN_SYNTAX = re.compile(r"[A-Za-z0-9._~+/-]+=*")  # RFC 6750 b64token: agent/logging_setup.py redacts it whole


class BearerTokens:
    """The accepted tokens; `check(request)` raises 401 (none, or malformed) or 403 (not accepted)."""

    def __init__(self, tokens: Sequence[SecretStr]) -> None:
        if not tokens:
            raise ConfigError("ingest.tokens is empty: set AFFECTSTREAM_INGEST__TOKENS (comma-separated)")
        self._tokens = [token.get_secret_value() for token in tokens]
        if not all(TOKEN_SYNTAX.fullmatch(token) for token in self._tokens):
            raise ConfigError("ingest.tokens: a token is letters, digits and -._~+/ (and = at the end)")

    def check(self, request: web.Request, *, query_param: str | None = None) -> None:
        """Accept `Authorization: Bearer <token>`, or, where `query_param` is given, `?<query_param>=<token>`
        (a browser's EventSource cannot set headers)."""
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            given = request.query.get(query_param, "") if query_param else ""
        if not _readable(header) or not _readable(given):
            raise _refused(web.HTTPUnauthorized, "malformed credentials: printable ASCII only", CHALLENGE)
        given = given.strip()
        if not given:
            raise _refused(web.HTTPUnauthorized, "a bearer token is required", CHALLENGE)
        matched = False
        for known in self._tokens:  # no early exit: timing does not tell which token is close
            matched |= hmac.compare_digest(given.encode(), known.encode())
        if not matched:
            raise _refused(web.HTTPForbidden, "token not accepted")


def _readable(text: str) -> bool:
    return all(" " <= char <= "~" for char in text)


def _refused(
    kind: type[web.HTTPException], message: str, headers: dict[str, str] | None = None
) -> web.HTTPException:
    metrics.count_rejection("auth")
    return kind(text=message, headers=headers)
