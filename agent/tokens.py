"""Scoped, expiring access tokens: what one call's viewer or publisher may do, verified without any state.

A token is a JSON Web Token signed with HMAC-SHA256 (JWS compact form, `alg: HS256`): any JWT library of
the platform that mints them can make one, and every pod that has the key (`ingest.token_secret`) verifies it
alone. Its claims:

    scope        "viewer" (reads the score feed of one call) or "publisher" (sends one participant's media)
    call         the call id the token is for
    participant  publisher: the participant it may publish as (required); viewer: one participant's feed only
    role         publisher, optional: the role it must publish under
    exp          expiry, Unix seconds (required); nbf, optional: not valid before, Unix seconds
    jti          optional token id (kept for the platform's own records; not checked)

Verification compares the signature in constant time before it reads a claim, accepts only HS256, and allows
CLOCK_SKEW_S of clock difference on exp and nbf. A refusal's reason never quotes the token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any, Literal, get_args

from core.types import StreamId

Scope = Literal["viewer", "publisher"]
SCOPES: tuple[str, ...] = get_args(Scope)
CLOCK_SKEW_S = 30  # the agent's and the minting platform's clocks may differ by this much
MAX_TTL_S = 7 * 24 * 3600  # `affectstream token mint` refuses longer lives: a token should not outlast its call
MIN_SECRET_CHARS = 32  # HMAC-SHA256 keys shorter than this are guessable offline from one token
_HEADER = {"alg": "HS256", "typ": "JWT"}
_KNOWN_CLAIMS = {"scope", "call", "participant", "role", "exp", "nbf", "jti", "iat"}


class TokenError(ValueError):
    """The token is not one the agent accepts (bad signature, malformed, expired): a 401."""


@dataclass(frozen=True)
class TokenClaims:
    scope: Scope
    call_id: str
    participant_id: str | None  # required for a publisher
    expires_at: int  # Unix seconds
    role: str | None = None  # publisher only: the role it must publish under
    not_before: int | None = None
    token_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        claims: dict[str, Any] = {"scope": self.scope, "call": self.call_id, "exp": self.expires_at}
        optional = {
            "participant": self.participant_id, "role": self.role, "nbf": self.not_before, "jti": self.token_id,
        }  # fmt: skip
        claims.update({name: value for name, value in optional.items() if value is not None})
        return claims


@dataclass(frozen=True)
class Grant:
    """What the holder of a verified credential may do. `development` (a static ingest.tokens entry) may do
    everything; a token's grant is bounded by its claims."""

    scope: Scope | Literal["development"]
    call_id: str | None = None
    participant_id: str | None = None
    role: str | None = None

    @classmethod
    def of(cls, claims: TokenClaims) -> Grant:
        return cls(claims.scope, claims.call_id, claims.participant_id, claims.role)

    def refuses_publish(self, stream: StreamId) -> str | None:
        """Why this grant may not publish `stream` (None: it may)."""
        if self.scope == "development":
            return None
        if self.scope != "publisher":
            return "a viewer token cannot publish"
        if stream.call_id != self.call_id:
            return "token is for another call"
        if stream.participant_id != self.participant_id:
            return "token is for another participant"
        if self.role is not None and stream.role != self.role:
            return "token is for another role"
        return None

    def refuses_session(self, stream: StreamId) -> str | None:
        """Why this grant may not end or modify a session of `stream`: only its own publisher may."""
        if self.scope == "development":
            return None
        if self.scope != "publisher":
            return "a viewer token cannot end a session"
        if stream.call_id != self.call_id or stream.participant_id != self.participant_id:
            return "session belongs to another participant"
        return None

    def refuses_view(self, call_id: str, participant_id: str | None) -> str | None:
        """Why this grant may not read the scores of `call_id` (of one participant, or None: all of them)."""
        if self.scope == "development":
            return None
        if self.scope != "viewer":
            return "a publisher token cannot read scores"
        if call_id != self.call_id:
            return "token is for another call"
        if self.participant_id is not None and participant_id != self.participant_id:
            return "token is for another participant"
        return None


def mint(secret: str, claims: TokenClaims) -> str:
    """The signed token of `claims` (checked as verify() would check them)."""
    _check_claims(claims.to_json())
    signing_input = _b64(_json(_HEADER)) + "." + _b64(_json(claims.to_json()))
    return signing_input + "." + _signature(secret, signing_input)


def mint_for(
    secret: str, scope: Scope, call_id: str, participant_id: str | None = None, *, ttl_s: int,
    role: str | None = None, now: float | None = None,
) -> str:  # fmt: skip
    """A token for `scope` on one call that expires `ttl_s` seconds from now (1..MAX_TTL_S)."""
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl must be 1..{MAX_TTL_S} seconds; got {ttl_s}")
    issued = int(time.time() if now is None else now)
    return mint(secret, TokenClaims(scope, call_id, participant_id, issued + ttl_s, role))


def verify(secret: str, token: str, *, now: float | None = None) -> TokenClaims:
    """The claims of a token signed with `secret`; TokenError (a one-line reason) if it is not acceptable."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("malformed token")
    header_b64, claims_b64, signature = parts
    expected = _signature(secret, f"{header_b64}.{claims_b64}")
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii", "replace")):
        raise TokenError("token signature does not match")
    header, claims = _decoded(header_b64), _decoded(claims_b64)
    if header.get("alg") != "HS256":
        raise TokenError("token algorithm must be HS256")
    parsed = _check_claims(claims)
    clock = time.time() if now is None else now
    if clock > parsed.expires_at + CLOCK_SKEW_S:
        raise TokenError("token expired")
    if parsed.not_before is not None and clock < parsed.not_before - CLOCK_SKEW_S:
        raise TokenError("token not yet valid")
    return parsed


def _check_claims(claims: dict[str, Any]) -> TokenClaims:
    """The claims as TokenClaims; TokenError naming the first claim that is wrong (never its value)."""
    unknown = sorted(set(claims) - _KNOWN_CLAIMS)
    if unknown:
        raise TokenError(f"token claims: unknown claim {unknown[0]!r}")
    scope = claims.get("scope")
    if scope not in SCOPES:
        raise TokenError("token claims: scope must be 'viewer' or 'publisher'")
    for name in ("exp", "nbf"):
        value = claims.get(name)
        if (value is not None or name == "exp") and (type(value) is not int or value < 0):
            raise TokenError(f"token claims: {name} must be Unix seconds (an integer)")
    participant, role = claims.get("participant"), claims.get("role")
    if scope == "publisher" and participant is None:
        raise TokenError("token claims: a publisher token names its participant")
    if role is not None and scope != "publisher":
        raise TokenError("token claims: only a publisher token names a role")
    try:  # the rules of every stream id, in core.types; a placeholder stands in for what the token leaves open
        stream = StreamId(
            claims.get("call"),  # type: ignore[arg-type]
            "any" if participant is None else participant,
            "participant" if role is None else role,
        )
    except ValueError as exc:  # "call_id must be ...": name the claim, never quote it
        claim = str(exc).split(" ", 1)[0].removesuffix("_id")
        raise TokenError(f"token claims: {claim} is not a valid id") from None
    jti = claims.get("jti")
    if jti is not None and (not isinstance(jti, str) or len(jti) > 128):
        raise TokenError("token claims: jti must be a string of at most 128 characters")
    return TokenClaims(scope, stream.call_id, participant, claims["exp"], role, claims.get("nbf"), jti)


def _signature(secret: str, signing_input: str) -> str:
    return _b64(hmac.new(secret.encode("utf-8"), signing_input.encode("utf-8"), hashlib.sha256).digest())


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decoded(segment: str) -> dict[str, Any]:
    """A base64url (unpadded) JSON object; TokenError otherwise. Only reached for a correctly signed token."""
    try:
        value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError):
        raise TokenError("malformed token") from None
    if not isinstance(value, dict):
        raise TokenError("malformed token")
    return value
