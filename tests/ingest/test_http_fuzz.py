"""Property-based fuzzing of the agent's HTTP surface (issue 17), over real sockets.

A hostile client (this thread, blocking sockets) sends generated requests to the WHIP endpoint and the agent's
own routes (score feed, health, metrics, static files), both served from another thread's event loop while a
real WebRTC session streams a tone through them. Generated: the route, the stream ids in the query, header
values (any bytes), the SDP body (a real offer, mutated), the body's framing, and where the request is split
into writes. Whatever arrives: never a 500, never a traceback in the logs, the live session keeps receiving
media and /healthz keeps answering.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from whip_testing import TOKEN, Collector, FreezingTrack, RawPeer, ToneTrack, port_of, stream_url

from agent.loopback import configure_loopback, current_mode
from agent.server import AgentServer
from agent.sessions import IngestSession
from agent.settings import IngestSettings, Settings
from agent.whip import WhipServer

pytestmark = pytest.mark.integration

T = TypeVar("T")
EXAMPLES = 500  # about 15 s here; well under a minute on two busy cores
LIVE_KEY = "call-1/live"
FUZZ_SETTINGS = {"idle_timeout_s": 1.0, "body_timeout_s": 0.5, "ice_timeout_s": 1.0, "max_sdp_bytes": 8192}


class LoopThread:
    """An event loop of its own in a thread: the servers keep running while Hypothesis thinks."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fuzz-server-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop(self) -> None:
        self.run(_cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


async def _cancel_the_rest() -> None:
    """Connections the hostile client left half-open still have handler tasks: end them before the loop."""
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class Target:
    whip: WhipServer
    agent: AgentServer
    whip_port: int
    agent_port: int
    live: RawPeer
    session: IngestSession
    collector: Collector
    offers: list[str]


async def _start() -> Target:
    tokens = [SecretStr(TOKEN)]
    whip_settings = IngestSettings(port=0, tokens=tokens, ice_loopback="only", **FUZZ_SETTINGS)
    collector = Collector()
    collector.keep_media = False
    whip = WhipServer(whip_settings, collector)
    whip_url = await whip.start()
    agent = AgentServer(Settings(ingest=whip_settings))
    agent_url = await agent.start()
    live = RawPeer(ToneTrack(frames=15_000))  # 5 min of tone: longer than any fuzzing run
    async with aiohttp.ClientSession() as http:
        await live.connect(http, stream_url(whip_url, participant_id="live"))
    await live.wait_connected()
    audio_only = RawPeer(FreezingTrack(0))
    audio_video = RawPeer(FreezingTrack(0))
    audio_video.pc.addTransceiver("video", direction="sendonly")
    offers = [await audio_only.offer(), await audio_video.offer()]
    for peer in (audio_only, audio_video):
        await peer.pc.close()
    session = next(s for s in whip.registry.sessions() if s.stream.key == LIVE_KEY)
    return Target(whip, agent, port_of(whip_url), port_of(agent_url), live, session, collector, offers)


async def _stop(target: Target) -> None:
    await target.live.pc.close()
    await target.whip.close()
    await target.agent.close()


@pytest.fixture
def target(caplog: pytest.LogCaptureFixture) -> Iterator[tuple[Target, LoopThread]]:
    caplog.set_level(logging.INFO)
    previous = current_mode()
    loop = LoopThread()
    started = loop.run(_start())
    yield started, loop
    loop.run(_stop(started))
    loop.stop()
    configure_loopback(previous)


# -- the hostile client ------------------------------------------------------------------------------------------

# Each request is a valid offer with a few of its parts made hostile: an even mix of hostile parts would stop
# almost every request at the first check, and the later ones (offer parsing, the registry) would go untested.
PARTS = ["route", "ids", "raw-target", "authorization", "content-type", "headers", "body", "framing", "half-close"]
VALID_IDS = st.sampled_from(["call-1", "fuzz"]), st.sampled_from(["p1", "p2", "p3", "patient"])
HOSTILE_IDS = st.one_of(
    st.sampled_from(["live", "nlcall\n", "p1\r\n", "a" * 129, "", "caf\u00e9", "x/y", "-x", "..", "p1 "]),
    st.text(max_size=16),
    st.none(),  # absent
)
BYTES = st.one_of(st.text(max_size=24).map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=24))
HOSTILE_AUTHORIZATION = st.one_of(
    st.binary(min_size=1, max_size=3).map(lambda junk: f"Bearer {TOKEN}".encode() + junk),
    st.sampled_from([b"", b"Bearer", b"Bearer ", b"Basic dGVzdA==", b"bearer  " + TOKEN.encode() + b"  "]),
    BYTES,
    st.none(),
)
HEADER_NAMES = ["X-Call-Id", "X-Participant-Id", "X-Role", "Content-Type", "Accept", "If-Match", "Content-Encoding",
                "Expect", "Transfer-Encoding", "Content-Length", "Origin", "X-Anything"]  # fmt: skip
ROUTES = ["OPTIONS /whip", "DELETE /whip/{id}", "PATCH /whip/{id}", "GET /whip", "PUT /whip", "POST /whip/{id}",
          "GET /streams/{id}/{id}/scores", "GET /healthz", "GET /readyz", "GET /metrics", "GET /static/{id}",
          "GET /"]  # fmt: skip
MUTATIONS = ["truncate", "drop-line", "repeat-line", "replace-line", "insert-bytes", "random", "empty"]


@dataclass(frozen=True)
class HostileRequest:
    to_agent: bool  # the agent's own server (it serves the WHIP routes too: 503 while the models load)
    writes: list[bytes]
    pause_s: float  # between writes
    half_close: bool  # shut the sending side once written
    hostile: frozenset[str]


def _in_target(value: str, raw: bool) -> bytes:
    return value.encode("utf-8", "surrogatepass") if raw else quote(value, safe="").encode()


def _body(draw: st.DrawFn, offer: bytes) -> bytes:
    lines = offer.split(b"\r\n")
    at = draw(st.integers(0, len(lines) - 1))
    mutation = draw(st.sampled_from(MUTATIONS))
    if mutation == "truncate":
        return offer[: draw(st.integers(0, len(offer)))]
    if mutation in ("drop-line", "repeat-line", "replace-line"):
        replacement = {"drop-line": [], "repeat-line": [lines[at]] * draw(st.integers(2, 4)),
                       "replace-line": [draw(BYTES)]}[mutation]  # fmt: skip
        return b"\r\n".join(lines[:at] + replacement + lines[at + 1 :])
    if mutation == "insert-bytes":
        where = draw(st.integers(0, len(offer)))
        return offer[:where] + draw(st.binary(min_size=1, max_size=16)) + offer[where:]
    return draw(st.binary(max_size=300)) if mutation == "random" else b""


@st.composite
def hostile_requests(draw: st.DrawFn, offers: list[str]) -> HostileRequest:
    hostile = draw(st.frozensets(st.sampled_from(PARTS), max_size=3))
    route = draw(st.sampled_from(ROUTES)) if "route" in hostile else "POST /whip"
    method, path = route.split(" ")
    raw = "raw-target" in hostile
    target = path.encode()
    while b"{id}" in target:
        target = target.replace(b"{id}", _in_target(draw(HOSTILE_IDS | VALID_IDS[1]) or "", raw), 1)
    ids = {"call_id": draw(VALID_IDS[0]), "participant_id": draw(VALID_IDS[1])}
    if "ids" in hostile:
        ids |= {name: draw(HOSTILE_IDS) for name in ("call_id", "participant_id", "role", "token")}
    query = [name.encode() + b"=" + _in_target(value, raw) for name, value in ids.items() if value is not None]
    target += b"?" + b"&".join(query) if query else b""

    headers = [b"Host: 127.0.0.1"]
    authorization = draw(HOSTILE_AUTHORIZATION) if "authorization" in hostile else f"Bearer {TOKEN}".encode()
    headers += [b"Authorization: " + authorization] if authorization is not None else []
    content_type = draw(st.none() | BYTES) if "content-type" in hostile else b"application/sdp"
    headers += [b"Content-Type: " + content_type] if content_type is not None else []
    if "headers" in hostile:
        headers += [name.encode() + b": " + draw(BYTES) for name in draw(st.lists(st.sampled_from(HEADER_NAMES)))]

    offer = draw(st.sampled_from(offers)).encode()
    body = _body(draw, offer) if "body" in hostile else offer
    framing = draw(st.sampled_from(["short-length", "long-length", "none"] if "framing" in hostile else
                                   ["length", "chunked"]))  # fmt: skip
    if framing == "chunked":
        headers.append(b"Transfer-Encoding: chunked")
        payload = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    elif framing == "none":
        payload = b""
    else:
        declared = len(body) + {"length": 0, "short-length": -min(len(body), 7), "long-length": 9}[framing]
        headers.append(b"Content-Length: %d" % declared)
        payload = body
    request = method.encode() + b" " + target + b" HTTP/1.1\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + payload

    cuts = sorted({round(f * len(request)) for f in draw(st.lists(st.floats(0, 1), max_size=4))})
    bounds = [0, *cuts, len(request)]
    writes = [request[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    to_agent = not path.startswith("/whip") or ("route" in hostile and draw(st.booleans()))
    return HostileRequest(
        to_agent, writes, draw(st.sampled_from([0.0, 0.005, 0.03])), "half-close" in hostile, hostile
    )


def send(port: int, writes: list[bytes], pause_s: float, half_close: bool, timeout_s: float = 5.0) -> bytes:
    """The bytes the server answered (the head and what follows of it in time), b"" if it just closed."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        try:
            for index, piece in enumerate(writes):
                if index and pause_s:
                    time.sleep(pause_s)
                sock.sendall(piece)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            while b"\r\n\r\n" not in received:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except TimeoutError:
            raise
        except OSError:  # the server answered, or gave up on the request, and closed first
            pass
    return received


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else 0


def healthz(port: int) -> int:
    return status_of(send(port, [b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"], 0.0, False))


def no_broker_here(record: logging.LogRecord) -> bool:
    """kafka-python's error when a score feed, opened by an earlier request, fails to reach the broker: this
    target has none on purpose (the feed follows again later, agent/topic_tail.py). When the error lands depends
    on the library's timeout, not on the request being sent then."""
    return record.name.startswith("kafka.") and record.getMessage().startswith("Bootstrap failed")


def problems(records: list[logging.LogRecord]) -> list[str]:
    failed = [r for r in records if (r.exc_info or r.levelno >= logging.ERROR or "Traceback" in r.getMessage())
              and not no_broker_here(r)]
    return [record.getMessage() for record in failed]


# aiortc, in the servers' thread, draws from `random` while Hypothesis generates; Hypothesis blames the strategy
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
def test_hostile_http_never_gets_a_500_nor_disturbs_a_live_session(
    target: tuple[Target, LoopThread], caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = target
    audio_before = server.collector.audio_s[LIVE_KEY]
    started = time.monotonic()
    statuses: dict[int, int] = {}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,  # real sockets and timeouts: an example takes 1 ms to 1 s
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(request=hostile_requests(server.offers))
    def fuzz(request: HostileRequest) -> None:
        logged = len(caplog.records)
        port = server.agent_port if request.to_agent else server.whip_port
        answer = send(port, request.writes, request.pause_s, request.half_close)
        status = status_of(answer)
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500 or status == 503, answer[:300]
        assert b"Traceback" not in answer
        if not request.hostile and not request.to_agent:  # a valid offer, however split: answered, or refused
            assert status in (201, 409, 503), answer[:300]  # for its stream or capacity, never for its form
        assert not problems(caplog.records[logged:])
        assert server.session.closed is None

    fuzz()
    elapsed_s = time.monotonic() - started
    print(f"{EXAMPLES} hostile requests in {elapsed_s:.1f} s; statuses {sorted(statuses.items())}")
    assert healthz(server.agent_port) == 200
    assert server.session.closed is None and server.whip.registry.get(server.session.id) is server.session
    time.sleep(0.5)
    received_s = server.collector.audio_s[LIVE_KEY] - audio_before
    assert received_s > 0.3 * elapsed_s, (received_s, elapsed_s)  # the tone kept arriving (real time, on busy CPUs)
    assert server.session.seconds_since_media() < 2.0  # ...up to the end
    assert not problems(caplog.records)
    assert statuses.get(201, 0) > 0 and statuses.get(400, 0) > 0  # offers were answered, and refused
