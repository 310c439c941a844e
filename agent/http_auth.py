"""Who may do what on the WHIP endpoint and the score feed: one check, every refusal counted.

A request carries `Authorization: Bearer <token>`. The token is either a scoped token signed with
`ingest.token_secret` (agent/tokens.py: one call's viewer or one participant's publisher, verified without
state, so any pod accepts it), or, for development only, one of the static `ingest.tokens`, which may do
everything. None, malformed, unknown, badly signed or expired: 401. Valid but for another call, participant,
role or scope: 403. The one-line reason never quotes the token.

A credential outside printable ASCII (UTF-8 letters in a header) is refused as malformed with 401, never a
500; bytes that are not UTF-8 at all never get here (agent/http_limits.py refuses them with 400 before
routing).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence

from aiohttp import web
from pydantic import SecretStr

from agent import metrics
from agent.tokens import Grant, TokenError, verify
from core.errors import ConfigError

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="affectstream"'}
INVALID = {"WWW-Authenticate": 'Bearer realm="affectstream", error="invalid_token"'}
TOKEN_SYNTAX = re.compile(r"[A-Za-z0-9._~+/-]+=*")  # RFC 6750 b64token: agent/logging_setup.py redacts it whole
DEVELOPMENT = Grant("development")
# What `affectstream serve` logs when ingest.tokens is set (not the demo's or a replay's one-off loopback token).
STATIC_TOKENS_WARNING = (
    "ingest.tokens is set: each static token may publish, end and read every call; development only "
    "(production: ingest.token_secret and scoped tokens)"
)


class RequestAuth:
    """Authenticates a request's bearer token (401) and checks what its grant allows (403)."""

    def __init__(self, static_tokens: Sequence[SecretStr], token_secret: SecretStr | None) -> None:
        if not static_tokens and token_secret is None:
            raise ConfigError(
                "no way to authenticate callers: set ingest.token_secret (AFFECTSTREAM_INGEST__TOKEN_SECRET, the "
                "key of scoped tokens) or, for development only, ingest.tokens"
            )
        self._static = [token.get_secret_value() for token in static_tokens]
        if not all(TOKEN_SYNTAX.fullmatch(token) for token in self._static):
            raise ConfigError("ingest.tokens: a token is letters, digits and -._~+/ (and = at the end)")
        self._secret = token_secret.get_secret_value() if token_secret is not None else None

    def authenticate(self, request: web.Request) -> Grant:
        """The grant of the request's bearer token; 401 when there is none or it is not accepted."""
        header = request.headers.get("Authorization", "")
        if not _readable(header):
            raise refused(web.HTTPUnauthorized, "malformed credentials: printable ASCII only", CHALLENGE)
        scheme, _, given = header.partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            raise refused(web.HTTPUnauthorized, "a bearer token is required", CHALLENGE)
        matched = False
        for known in self._static:  # no early exit: timing does not tell which token is close
            matched |= hmac.compare_digest(given.encode(), known.encode())
        if matched:
            return DEVELOPMENT
        if self._secret is None:
            raise refused(web.HTTPUnauthorized, "token not accepted", INVALID)
        try:
            return Grant.of(verify(self._secret, given))
        except TokenError as exc:
            raise refused(web.HTTPUnauthorized, str(exc), INVALID) from None

    @staticmethod
    def permit(refusal: str | None) -> None:
        """403 with `refusal` as its reason, if there is one (a Grant.refuses_* answer)."""
        if refusal is not None:
            raise refused(web.HTTPForbidden, refusal)


def _readable(text: str) -> bool:
    return all(" " <= char <= "~" for char in text)


def refused(kind: type[web.HTTPException], message: str, headers: dict[str, str] | None = None) -> web.HTTPException:
    metrics.count_rejection("auth")
    return kind(text=message, headers=headers)
