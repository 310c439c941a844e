"""Scoped tokens: minted and verified (agent/tokens.py), and enforced on WHIP and the score feed over real HTTP.

A publisher token offers only its own call, participant (and role, when it names one) and ends only its own
stream's sessions; a viewer token reads only its own call's feed; a bad, tampered or expired token is a 401,
a valid one used beyond its grant a 403. No refusal quotes the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from urllib.parse import urljoin

import aiohttp
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner
from whip_testing import TOKEN, FreezingTrack, RawPeer, ServerFactory, auth, post, stream_url

from agent import metrics
from agent.broker import free_port
from agent.loopback import configure_loopback, current_mode
from agent.server import AgentServer
from agent.settings import IngestSettings, Settings, load_settings
from agent.tokens import CLOCK_SKEW_S, Grant, TokenClaims, TokenError, mint, mint_for, verify
from cli.main import app
from core.errors import ConfigError
from core.types import StreamId

SECRET = "k" * 20 + "-test-secret-0123456789"  # 43 characters
NOW = 1_800_000_000


def _publisher(call: str = "call-1", participant: str = "p1", role: str | None = None, ttl_s: int = 600) -> str:
    return mint_for(SECRET, "publisher", call, participant, ttl_s=ttl_s, role=role)


def _viewer(call: str = "call-1", participant: str | None = None) -> str:
    return mint_for(SECRET, "viewer", call, participant, ttl_s=600)


def _rejected() -> float:
    return metrics.REGISTRY.get_sample_value("affectstream_sessions_rejected_total", {"reason": "auth"}) or 0.0


def _segments(token: str) -> list[str]:
    return token.split(".")


def _b64(data: Mapping[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# -- minting and verifying ---------------------------------------------------------------------------------------


def test_a_minted_token_verifies_to_its_claims_and_is_a_standard_hs256_jwt() -> None:
    claims = TokenClaims("publisher", "call-1", "p1", NOW + 60, role="patient", not_before=NOW - 5, token_id="t-1")
    token = mint(SECRET, claims)
    assert verify(SECRET, token, now=NOW) == claims
    header, body, _ = _segments(token)
    assert json.loads(base64.urlsafe_b64decode(header + "==")) == {"alg": "HS256", "typ": "JWT"}
    assert json.loads(base64.urlsafe_b64decode(body + "==")) == {
        "scope": "publisher", "call": "call-1", "participant": "p1", "role": "patient", "exp": NOW + 60,
        "nbf": NOW - 5, "jti": "t-1",
    }  # fmt: skip
    assert all(c.isalnum() or c in "-_." for c in token)  # URL-safe, unpadded
    viewer = verify(SECRET, mint_for(SECRET, "viewer", "call-1", ttl_s=30, now=NOW), now=NOW)
    assert viewer == TokenClaims("viewer", "call-1", None, NOW + 30)


def test_expiry_and_not_before_allow_only_the_clock_skew() -> None:
    token = mint(SECRET, TokenClaims("viewer", "c", None, NOW, not_before=NOW - 100))
    assert verify(SECRET, token, now=NOW + CLOCK_SKEW_S).call_id == "c"
    with pytest.raises(TokenError, match="^token expired$"):
        verify(SECRET, token, now=NOW + CLOCK_SKEW_S + 1)
    early = mint(SECRET, TokenClaims("viewer", "c", None, NOW + 1000, not_before=NOW + 100))
    assert verify(SECRET, early, now=NOW + 100 - CLOCK_SKEW_S).call_id == "c"
    with pytest.raises(TokenError, match="^token not yet valid$"):
        verify(SECRET, early, now=NOW + 100 - CLOCK_SKEW_S - 1)


def test_a_tampered_forged_or_foreign_token_is_refused() -> None:
    token = mint(SECRET, TokenClaims("viewer", "call-1", None, NOW + 60))
    header, body, signature = _segments(token)
    other_call = _b64({"scope": "viewer", "call": "call-2", "exp": NOW + 60})
    as_publisher = _b64({"scope": "publisher", "call": "call-1", "participant": "p1", "exp": NOW + 60})
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    unsigned = _b64({"alg": "none", "typ": "JWT"}) + "." + body + "."
    for forged in (f"{header}.{other_call}.{signature}", f"{header}.{as_publisher}.{signature}",
                   f"{header}.{body}.{flipped}", unsigned, f"{header}.{body}", "not-a-token",
                   mint(SECRET + "x", TokenClaims("viewer", "call-1", None, NOW + 60))):  # fmt: skip
        with pytest.raises(TokenError) as refused:
            verify(SECRET, forged, now=NOW)
        assert str(refused.value) in ("token signature does not match", "malformed token"), forged
        assert forged not in str(refused.value)


def test_a_correctly_signed_token_with_wrong_claims_is_refused_naming_the_claim() -> None:
    header = _b64({"alg": "HS256", "typ": "JWT"})
    cases: dict[str, tuple[dict[str, object] | None, dict[str, object]]] = {
        "token algorithm must be HS256": ({"alg": "HS512"}, {"scope": "viewer", "call": "c", "exp": NOW}),
        "token claims: scope must be 'viewer' or 'publisher'": (None, {"scope": "admin", "call": "c", "exp": NOW}),
        "token claims: a publisher token names its participant": (
            None, {"scope": "publisher", "call": "c", "exp": NOW}),
        "token claims: exp must be Unix seconds (an integer)": (None, {"scope": "viewer", "call": "c", "exp": "soon"}),
        "token claims: call is not a valid id": (None, {"scope": "viewer", "call": "c/other", "exp": NOW}),
        "token claims: participant is not a valid id": (
            None, {"scope": "publisher", "call": "c", "participant": "", "exp": NOW}),
        "token claims: only a publisher token names a role": (
            None, {"scope": "viewer", "call": "c", "role": "patient", "exp": NOW}),
        "token claims: unknown claim 'aud'": (None, {"scope": "viewer", "call": "c", "exp": NOW, "aud": "x"}),
    }  # fmt: skip
    for reason, (custom_header, claims) in cases.items():
        signing_input = (_b64(custom_header) if custom_header else header) + "." + _b64(claims)
        digest = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
        token = signing_input + "." + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        with pytest.raises(TokenError) as refused:
            verify(SECRET, token, now=NOW)
        assert str(refused.value) == reason


def test_grants_allow_their_own_call_participant_and_role_only() -> None:
    patient = StreamId("call-1", "p1", "patient")
    publisher = Grant("publisher", "call-1", "p1", "patient")
    assert publisher.refuses_publish(patient) is None
    assert publisher.refuses_publish(StreamId("call-2", "p1", "patient")) == "token is for another call"
    assert publisher.refuses_publish(StreamId("call-1", "p2", "patient")) == "token is for another participant"
    assert publisher.refuses_publish(StreamId("call-1", "p1", "clinician")) == "token is for another role"
    assert publisher.refuses_view("call-1", "p1") == "a publisher token cannot read scores"
    viewer = Grant("viewer", "call-1")
    assert viewer.refuses_view("call-1", "p1") is None and viewer.refuses_view("call-1", None) is None
    assert viewer.refuses_view("call-2", "p1") == "token is for another call"
    assert viewer.refuses_publish(patient) == "a viewer token cannot publish"
    assert viewer.refuses_session(patient) == "a viewer token cannot end a session"
    one = Grant("viewer", "call-1", "p1")
    assert one.refuses_view("call-1", "p1") is None
    assert one.refuses_view("call-1", "p2") == one.refuses_view("call-1", None) == "token is for another participant"
    development = Grant("development")
    assert not any((development.refuses_publish(patient), development.refuses_view("x", None),
                    development.refuses_session(patient)))  # fmt: skip


# -- settings and the CLI ----------------------------------------------------------------------------------------


def test_token_secret_setting_is_a_secret_of_at_least_32_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().ingest.token_secret is None
    monkeypatch.setenv("AFFECTSTREAM_INGEST__TOKEN_SECRET", "short-secret")
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert str(refused.value) == "AFFECTSTREAM_INGEST__TOKEN_SECRET: must be at least 32 characters " \
        "(e.g. `openssl rand -base64 48`)"  # fmt: skip
    monkeypatch.setenv("AFFECTSTREAM_INGEST__TOKEN_SECRET", SECRET)
    assert load_settings().ingest.token_secret == SecretStr(SECRET)


def test_the_server_needs_a_secret_or_development_tokens() -> None:
    with pytest.raises(ConfigError, match="set ingest.token_secret .* or, for development only, ingest.tokens"):
        AgentServer(Settings(ingest=IngestSettings(port=0)))


def test_token_mint_prints_a_token_signed_with_the_configured_secret(
    monkeypatch: pytest.MonkeyPatch, serve_logging: Callable[[str], None]
) -> None:
    # serve_logging: the command configures logging; the fixture restores pytest's afterwards
    monkeypatch.setenv("AFFECTSTREAM_INGEST__TOKEN_SECRET", SECRET)
    started = time.time()
    minted = CliRunner().invoke(app, ["token", "mint", "--scope", "publisher", "--call", "c1", "--participant", "p1",
                                      "--role", "patient", "--ttl", "120"])  # fmt: skip
    assert minted.exit_code == 0, minted.output
    claims = verify(SECRET, minted.stdout.strip())
    assert (claims.scope, claims.call_id, claims.participant_id, claims.role) == ("publisher", "c1", "p1", "patient")
    assert started + 119 <= claims.expires_at <= time.time() + 121
    assert SECRET not in minted.output
    for argv, reason in (
        (["--scope", "publisher", "--call", "c1"], "a publisher token needs --participant"),
        (["--scope", "viewer", "--call", "c 1"], "call is not a valid id"),
        (["--scope", "viewer", "--call", "c1", "--role", "patient"], "--role is for publisher tokens only"),
    ):
        refused = CliRunner().invoke(app, ["token", "mint", *argv])
        assert isinstance(refused.exception, ConfigError) and str(refused.exception) == reason
    monkeypatch.delenv("AFFECTSTREAM_INGEST__TOKEN_SECRET")
    refused = CliRunner().invoke(app, ["token", "mint", "--scope", "viewer", "--call", "c1"])
    assert isinstance(refused.exception, ConfigError)
    assert str(refused.exception).startswith("ingest.token_secret is not set")


# -- WHIP: what a publisher token may do --------------------------------------------------------------------------


async def test_a_publisher_token_offers_only_its_own_call_participant_and_role(whip_server: ServerFactory) -> None:
    server, url, _ = await whip_server(token_secret=SecretStr(SECRET))
    peers: list[RawPeer] = []

    async def offer(token: str, **where: str) -> tuple[int, str, dict[str, str]]:
        peer = RawPeer(FreezingTrack(0))
        peers.append(peer)
        async with aiohttp.ClientSession() as http:
            answer = await post(http, stream_url(url, **where), await peer.offer(), headers=auth(token))
        return answer.status, answer.text, answer.headers

    before = _rejected()
    expired = mint(SECRET, TokenClaims("publisher", "call-1", "p1", int(time.time()) - CLOCK_SKEW_S - 5))
    cases = {  # all offered for call-1/p1 as a patient
        "another call": (_publisher(call="call-2"), 403, "token is for another call"),
        "another participant": (_publisher(participant="p2"), 403, "token is for another participant"),
        "another role": (_publisher(role="clinician"), 403, "token is for another role"),
        "a viewer": (_viewer(), 403, "a viewer token cannot publish"),
        "expired": (expired, 401, "token expired"),
        "signed with another key": (mint_for(SECRET[::-1], "publisher", "call-1", "p1", ttl_s=60), 401,
                                    "token signature does not match"),
    }  # fmt: skip
    for case, (token, status, reason) in cases.items():
        got_status, text, headers = await offer(token)
        assert (got_status, text) == (status, reason), case
        assert token not in text
        if status == 401:
            assert headers["WWW-Authenticate"] == 'Bearer realm="affectstream", error="invalid_token"', case
    assert _rejected() - before == len(cases)
    assert len(server.registry) == 0
    assert (await offer(_publisher(role="patient")))[0] == 201  # stream_url's role is patient
    assert (await offer(_publisher(participant="p2"), participant_id="p2"))[0] == 201  # a token without a role
    assert sorted(s.stream.key for s in server.registry.sessions()) == ["call-1/p1", "call-1/p2"]
    for peer in peers:
        await peer.pc.close()


async def test_a_publisher_ends_only_its_own_sessions(whip_server: ServerFactory) -> None:
    server, url, _ = await whip_server(token_secret=SecretStr(SECRET))
    mine, theirs = RawPeer(FreezingTrack(0)), RawPeer(FreezingTrack(0))
    async with aiohttp.ClientSession() as http:
        theirs_answer = await post(http, stream_url(url, participant_id="p2"), await theirs.offer(),
                                   headers=auth(_publisher(participant="p2")))  # fmt: skip
        mine_answer = await post(http, stream_url(url), await mine.offer(), headers=auth(_publisher()))
        assert theirs_answer.status == mine_answer.status == 201
        their_session = urljoin(url, theirs_answer.headers["Location"])
        my_session = urljoin(url, mine_answer.headers["Location"])
        before = _rejected()
        for token, why in ((_publisher(), "session belongs to another participant"),
                           (_publisher(call="call-9", participant="p2"), "session belongs to another participant"),
                           (_viewer(), "a viewer token cannot end a session")):  # fmt: skip
            async with http.delete(their_session, headers=auth(token)) as response:
                assert (response.status, await response.text()) == (403, why)
            async with http.patch(their_session, headers=auth(token)) as response:
                assert response.status == 403
        assert _rejected() - before == 6
        assert sorted(s.stream.key for s in server.registry.sessions()) == ["call-1/p1", "call-1/p2"]
        assert all(s.closed is None for s in server.registry.sessions())  # nothing was ended
        async with http.delete(my_session, headers=auth(_publisher())) as response:
            assert response.status == 200
        async with http.delete(their_session, headers=auth(TOKEN)) as response:  # a development token may
            assert response.status == 200
    for peer in (mine, theirs):
        await peer.pc.close()


# -- the score feed: what a viewer token may read -----------------------------------------------------------------


@pytest.fixture
async def scoped_server() -> AsyncIterator[str]:
    """An agent server (no runtime) that accepts scoped tokens only; its Kafka is a closed port: the feed's
    refusals and its SSE head do not need a broker."""
    previous = current_mode()
    kafka = {"bootstrap_servers": f"127.0.0.1:{free_port()}", "request_timeout_ms": 1000}
    server = AgentServer(Settings(
        kafka=kafka, ingest=IngestSettings(port=0, token_secret=SecretStr(SECRET), ice_loopback="only")
    ))  # fmt: skip
    yield await server.start()
    await server.close()
    configure_loopback(previous)


async def _feed_status(url: str, token: str | None) -> tuple[int, str]:
    headers = auth(token) if token else {}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        if response.status == 200:
            return 200, (await response.content.readuntil(b"\n\n")).decode()
        return response.status, await response.text()


async def test_the_feed_is_read_only_with_a_viewer_token_of_its_call(scoped_server: str) -> None:
    stream_feed = f"{scoped_server}/streams/call-1/p1/scores"
    call_feed = f"{scoped_server}/calls/call-1/scores"
    before = _rejected()
    assert await _feed_status(stream_feed, _viewer(call="call-2")) == (403, "token is for another call")
    assert await _feed_status(call_feed, _viewer(call="call-2")) == (403, "token is for another call")
    assert await _feed_status(stream_feed, _viewer(participant="p2")) == (403, "token is for another participant")
    assert await _feed_status(call_feed, _viewer(participant="p1")) == (403, "token is for another participant")
    assert await _feed_status(stream_feed, _publisher()) == (403, "a publisher token cannot read scores")
    assert await _feed_status(stream_feed, None) == (401, "a bearer token is required")
    assert await _feed_status(stream_feed, TOKEN) == (401, "malformed token")  # no static tokens here
    assert await _feed_status(f"{stream_feed}?token={_viewer()}", None) == (401, "a bearer token is required")
    assert _rejected() - before == 8
    assert await _feed_status(stream_feed, _viewer()) == (200, ": connected\n\n")
    assert await _feed_status(stream_feed, _viewer(participant="p1")) == (200, ": connected\n\n")
    assert await _feed_status(call_feed, _viewer()) == (200, ": connected\n\n")
