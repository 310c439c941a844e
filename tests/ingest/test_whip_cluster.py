"""WHIP behind a proxy or in a cluster: the session's Location is absolute and names the process that owns it."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import aiohttp
import pytest
from whip_testing import FreezingTrack, RawPeer, ServerFactory, auth, port_of, post, stream_url

from agent.public_url import resolve_public_url
from agent.settings import load_settings
from core.errors import ConfigError


def _session_id(location: str) -> str:
    return location.rpartition("/")[2]


async def _offer() -> tuple[RawPeer, str]:
    peer = RawPeer(FreezingTrack(0))
    return peer, await peer.offer()


async def test_location_without_public_url_is_the_requests_own_base(whip_server: ServerFactory) -> None:
    server, url, _ = await whip_server()
    port = port_of(url)
    async with aiohttp.ClientSession() as http:
        direct_peer, sdp = await _offer()
        direct = await post(http, stream_url(url, participant_id="direct"), sdp)
        assert direct.status == 201
        session_id = _session_id(direct.headers["Location"])
        assert direct.headers["Location"] == f"http://127.0.0.1:{port}/whip/{session_id}"
        assert server.registry.get(session_id) is not None

        # as a TLS-terminating proxy forwards it: the client's scheme and the Host it addressed
        proxied_peer, sdp = await _offer()
        headers = {"X-Forwarded-Proto": "https", "Host": "calls.example.org"}
        proxied = await post(http, stream_url(url, participant_id="proxied"), sdp, headers=headers)
        assert proxied.status == 201
        location = proxied.headers["Location"]
        assert location == f"https://calls.example.org/whip/{_session_id(location)}"

        # a forwarded scheme that is neither http nor https is ignored
        odd_peer, sdp = await _offer()
        odd = await post(http, stream_url(url, participant_id="odd"), sdp, headers={"X-Forwarded-Proto": "gopher"})
        assert odd.status == 201 and odd.headers["Location"].startswith(f"http://127.0.0.1:{port}/whip/")

        # the absolute Location is where the session is deleted
        async with http.delete(direct.headers["Location"], headers=auth()) as response:
            assert response.status == 200
        assert server.registry.get(session_id) is None
    for peer in (direct_peer, proxied_peer, odd_peer):
        await peer.pc.close()


async def test_public_url_names_this_process_and_only_its_owner_deletes(whip_server: ServerFactory) -> None:
    owner, owner_url, _ = await whip_server(public_url="http://{hostname}.agents-headless.calls.svc:8080/")
    other, other_url, _ = await whip_server(public_url="http://other-pod.agents-headless.calls.svc:8080")
    async with aiohttp.ClientSession() as http:
        peer, sdp = await _offer()
        # the proxy's Host and scheme do not matter: the configured base does
        headers = {"Host": "proxy.example.org", "X-Forwarded-Proto": "https"}
        answer = await post(http, stream_url(owner_url), sdp, headers=headers)
        assert answer.status == 201
        location = answer.headers["Location"]
        session_id = _session_id(location)
        assert owner.registry.get(session_id) is not None
        assert location == f"http://{socket.gethostname()}.agents-headless.calls.svc:8080/whip/{session_id}"

        path = urlsplit(location).path
        async with http.delete(other_url.removesuffix("/whip") + path, headers=auth()) as response:
            assert response.status == 404  # a process that does not hold the session (routed by a proxy's whim)
        assert owner.registry.get(session_id) is not None
        async with http.patch(other_url.removesuffix("/whip") + path, headers=auth()) as response:
            assert response.status == 404
        async with http.delete(owner_url.removesuffix("/whip") + path, headers=auth()) as response:
            assert response.status == 200  # what a proxy routing by Location's host reaches
        assert owner.registry.get(session_id) is None and len(other.registry) == 0
    await peer.pc.close()


def test_hostname_is_substituted_and_the_trailing_slash_dropped() -> None:
    assert resolve_public_url("https://{hostname}.svc:8443/", "agent-3") == "https://agent-3.svc:8443"
    assert resolve_public_url("http://fixed.example:8080/prefix") == "http://fixed.example:8080/prefix"
    assert resolve_public_url("http://{hostname}:8080") == f"http://{socket.gethostname()}:8080"


@pytest.mark.parametrize(
    "value",
    [
        "agents.example:8080",  # no scheme
        "ftp://{hostname}.svc",
        "http://{pod}.svc:8080",  # an unknown placeholder
        "http://{hostname}.svc:99999",
        "http://{hostname}.svc:8080/?x=1",
        "http://user:pw@{hostname}.svc",
    ],
)
def test_a_bad_public_url_is_refused_in_one_line(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AFFECTSTREAM_INGEST__PUBLIC_URL", value)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    assert len(message.splitlines()) == 1
    assert "AFFECTSTREAM_INGEST__PUBLIC_URL" in message and "{hostname}" in message


def test_public_url_and_drain_timeout_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings().ingest
    assert defaults.public_url is None and defaults.drain_timeout_s == 300.0
    monkeypatch.setenv("AFFECTSTREAM_INGEST__PUBLIC_URL", "http://{hostname}.affectstream-headless.calls.svc:8080")
    monkeypatch.setenv("AFFECTSTREAM_INGEST__DRAIN_TIMEOUT_S", "45")
    ingest = load_settings().ingest
    assert ingest.public_url == "http://{hostname}.affectstream-headless.calls.svc:8080"
    assert ingest.drain_timeout_s == 45.0
    monkeypatch.setenv("AFFECTSTREAM_INGEST__DRAIN_TIMEOUT_S", "-1")
    with pytest.raises(ConfigError, match="AFFECTSTREAM_INGEST__DRAIN_TIMEOUT_S"):
        load_settings()
