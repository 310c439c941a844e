"""Eight concurrent live streams, plus bad input, against one full server (ingest → pipeline → Kafka).

One scenario per module: eight GRID clips (3 s, each a different sentence) are streamed at once over
loopback WebRTC. While they run, the same server gets a ninth and tenth client that misbehave — one is
killed (SIGKILL) mid-call, one sends garbage datagrams after connecting — and a burst of bad offers
(malformed SDP, no audio, wrong token, one session too many). Every clip is also decoded directly
through the same pipeline: each live stream must carry its own clip's words and scores, and nothing that
was scored may be lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer
from live_support import (
    CREMA,
    GRID_CLIPS,
    MAX_SCORE_DIFF,
    TOKEN,
    Collected,
    by_stream,
    live_settings,
    read_topic,
    reference_run,
    wait_for,
    whip_url,
)

from agent import stream_client
from agent.runtime import open_runtime
from agent.server import AgentServer
from agent.settings import Settings
from agent.stream_client import stream_file
from core.wer import word_error_rate, words

pytestmark = pytest.mark.integration

CLIPS = {  # GRID clip -> its sentence (manifest.csv)
    "bbaf2n": "bin blue at f two now", "brbk7n": "bin red by k seven now", "lbax4n": "lay blue at x four now",
    "lrwp9a": "lay red with p nine again", "lwbsza": "lay white by s zero again",
    "pwij3p": "place white in j three please", "sbwe5n": "set blue with e five now",
    "swiz3n": "set white in z three now",
}  # fmt: skip
CONCURRENT = len(CLIPS)
REPO = Path(__file__).resolve().parents[2]
VANISH_AFTER_S = 4.0
CALL_VANISH = "vanish"
CALL_GARBAGE = "garbage"
GARBAGE_AFTER_S = 4.0
SSE_CLIP = "bbaf2n"
EDGE_S = 0.35


@dataclass
class Scenario:
    live: dict[str, list[dict[str, Any]]]
    transcripts: dict[str, list[dict[str, Any]]]
    reference: dict[str, Collected]
    bad: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)  # case -> (status, headers)
    peak_sessions: int = 0
    sessions_after: int = -1
    vanish_rc: int | None = None
    sse: list[dict[str, Any]] = field(default_factory=list)  # score events of SSE_CLIP from the server's feed
    vanish_closed: str | None = None  # how the killed client's session ended
    garbage_closed: str | None = None  # how the garbage client's session ended
    leftover: list[str] = field(default_factory=list)  # sessions still registered after the run
    scored_metric: float = -1.0  # windows_scored in /metrics after the run


def _stream_key(call_id: str) -> str:
    return f"{call_id}/p1"


async def _post(base: str, call_id: str, body: str, token: str = TOKEN) -> tuple[int, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
    async with aiohttp.ClientSession() as http:
        async with http.post(whip_url(base, call_id), data=body.encode(), headers=headers) as response:
            await response.read()
            return response.status, dict(response.headers)


async def _offer(*, audio: bool) -> str:
    pc = RTCPeerConnection()
    player = MediaPlayer(str(GRID_CLIPS / "grid_bbaf2n.mpg"))
    try:
        if audio:
            pc.addTransceiver(player.audio, direction="sendonly")
        pc.addTransceiver(player.video, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        assert pc.localDescription is not None
        return pc.localDescription.sdp
    finally:
        await pc.close()
        for track in (player.audio, player.video):
            if track is not None:
                track.stop()


async def _bad_offers(base: str) -> dict[str, tuple[int, dict[str, str]]]:
    """Sent while every session slot is taken (so 'one too many' is real)."""
    valid, video_only = await _offer(audio=True), await _offer(audio=False)
    return {
        "one_too_many": await _post(base, "extra", valid),
        "malformed_sdp": await _post(base, "bad-sdp", "v=0\r\nthis is not an offer\r\nm=audio x\r\n"),
        "no_audio": await _post(base, "no-audio", video_only),
        "wrong_token": await _post(base, "bad-token", valid, token="not-the-token"),
    }


async def _garbage_client(base: str, path: Path) -> None:
    """A real client that, once connected, sends garbage datagrams inside and outside its ICE pair,
    then keeps streaming its file to the end (the stream_client's own steps, with garbage in between)."""
    player = stream_client._open(path, True)
    tracks = [stream_client._SourceTrack(t, tail_s=stream_client.TAIL_S, realtime=True)
              for t in (player.audio, player.video) if t is not None]  # fmt: skip
    pc = RTCPeerConnection()
    async with aiohttp.ClientSession() as http:
        location = None
        try:
            stream_client._add_tracks(pc, tracks, {})
            await pc.setLocalDescription(await pc.createOffer())
            assert pc.localDescription is not None
            url = whip_url(base, CALL_GARBAGE)
            location, answer = await stream_client._post_offer(http, url, TOKEN, pc.localDescription.sdp)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            await stream_client._wait_connected(pc, 10.0)
            await asyncio.sleep(GARBAGE_AFTER_S)  # CREMA-D's first take has been windowed and scored by now
            _garbage_from_outside(answer)
            ice = pc.getTransceivers()[0].sender.transport.transport._connection  # aioice Connection
            for first in (0x00, 0x17, 0x80, 0x90, 0xFF):  # STUN, DTLS, RTP, RTCP-ish and nothing ranges
                for _ in range(20):
                    await ice.send(bytes([first]) + os.urandom(200))
            with contextlib.suppress(stream_client.StreamError):  # the server may end the call instead
                await stream_client._wait_finished(pc, tracks)
            await asyncio.sleep(0.3)
        finally:
            for track in tracks:
                track.stop()
            if location is not None:
                await stream_client._delete(http, location, TOKEN)
            await pc.close()


def _garbage_from_outside(answer: str) -> None:
    """Random datagrams from a stranger's socket to the server's ICE candidate port."""
    ports = {int(m) for m in re.findall(r"a=candidate:\S+ \d+ udp \d+ 127\.0\.0\.1 (\d+)", answer)}
    assert ports, "no loopback candidate in the answer"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        for port in ports:
            for _ in range(50):
                stranger.sendto(os.urandom(300), ("127.0.0.1", port))


async def _vanishing_client(base: str, server: AgentServer) -> tuple[int, str | None]:
    """`affectstream stream` in its own process, killed without a goodbye (no DELETE, no BYE) once it has
    streamed for VANISH_AFTER_S."""
    env = dict(os.environ, AFFECTSTREAM_INGEST__ICE_LOOPBACK="only")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", "stream", str(CREMA), "--url", whip_url(base, CALL_VANISH),
        "--token", TOKEN, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    key = _stream_key(CALL_VANISH)
    assert await wait_for(lambda: any(s.stream.key == key for s in server.whip.registry.sessions()), 30.0)
    session = next(s for s in server.whip.registry.sessions() if s.stream.key == key)
    assert await session.wait_connected(15.0)
    await asyncio.sleep(VANISH_AFTER_S)
    process.send_signal(signal.SIGKILL)
    returncode = await process.wait()
    await wait_for(lambda: session.closed is not None, 15.0)
    return returncode, session.closed


async def _read_sse(url: str, into: list[dict[str, Any]]) -> None:
    """Collect the `score` events of the server's browser feed until cancelled."""
    headers = {"Authorization": f"Bearer {TOKEN}"}  # scores are health data: the feed wants a token
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        if response.status != 200:
            raise AssertionError(f"score feed answered {response.status}: {await response.text()}")
        async for line in response.content:
            if line.startswith(b"data: "):
                into.append(json.loads(line[6:]))


async def _scored_metric(base: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as response:
        text = await response.text()
    found = re.search(r"^\w*windows_scored_total (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else -1.0


async def _run(settings: Settings) -> Scenario:
    scenario = Scenario({}, {}, {})
    async with open_runtime(settings) as runtime:
        server = AgentServer(settings, runtime)
        base = await server.start()
        try:
            sse = asyncio.create_task(_read_sse(f"{base}/streams/{SSE_CLIP}/p1/scores", scenario.sse))
            scored_before = await _scored_metric(base)
            vanish = asyncio.create_task(_vanishing_client(base, server))
            await wait_for(lambda: server.whip.active_sessions == 1, 20.0)  # the subprocess is slower to start
            garbage = asyncio.create_task(_garbage_client(base, CREMA))
            clips = [
                asyncio.create_task(stream_file(GRID_CLIPS / f"grid_{name}.mpg", whip_url(base, name), TOKEN))
                for name in CLIPS
            ]
            full = settings.ingest.max_sessions
            assert await wait_for(lambda: server.whip.active_sessions == full, 10.0), server.whip.active_sessions
            scenario.peak_sessions = server.whip.active_sessions
            garbage_session = next(s for s in server.whip.registry.sessions() if s.stream.key == "garbage/p1")
            scenario.bad = await _bad_offers(base)
            await asyncio.gather(*clips, garbage)
            scenario.vanish_rc, scenario.vanish_closed = await vanish
            await wait_for(lambda: garbage_session.closed is not None, 10.0)
            scenario.garbage_closed = garbage_session.closed
            await wait_for(lambda: server.whip.active_sessions == 0, 20.0)
            scenario.sessions_after = server.whip.active_sessions
            scenario.leftover = [f"{s!r} {s.stats()}" for s in server.whip.registry.sessions()]
            scenario.scored_metric = await _scored_metric(base) - scored_before
            if sse.done():
                sse.result()  # the feed ended early: raise why
            sse.cancel()
        finally:
            await server.close()
        assert runtime.publisher is not None and await runtime.publisher.wait_drained(30)
        for name in CLIPS:
            path = GRID_CLIPS / f"grid_{name}.mpg"
            scenario.reference[name] = await reference_run(
                path, runtime.pipeline, settings.windows, settings.features.vision_fps
            )
    topics = settings.kafka.topics
    scenario.live = by_stream(read_topic(settings.kafka.bootstrap_servers, topics.scores))
    scenario.transcripts = by_stream(read_topic(settings.kafka.bootstrap_servers, topics.transcripts))
    return scenario


@pytest.fixture(scope="module")
def scenario(kafka_broker: Any, live_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    settings = live_settings(
        kafka_broker.bootstrap_servers, live_bundle, tmp_path_factory.mktemp("spool"),
        max_sessions=CONCURRENT + 2, media_timeout_s=2.0,
    )  # fmt: skip
    return asyncio.run(_run(settings))


def test_eight_concurrent_streams_each_carry_only_their_own_content(scenario: Scenario) -> None:
    assert scenario.peak_sessions == CONCURRENT + 2
    for name, sentence in CLIPS.items():
        messages = scenario.live[_stream_key(name)]
        assert [m["seq"] for m in messages] == list(range(len(messages))), name
        assert all(m["stream"]["call_id"] == name and not m["shed"] and m["scores"] for m in messages)
        assert 0 <= messages[0]["start_s"] and messages[-1]["end_s"] <= 3.0 + 0.3, name  # within its 3 s clip
        heard = " ".join(m["text"] for m in scenario.transcripts[_stream_key(name)])
        own = word_error_rate([sentence], [heard])
        others = [word_error_rate([other], [heard]) for clip, other in CLIPS.items() if clip != name]
        # own < others is the point; 0.67 (4 of 6 words) because bbaf2n is heard "Bimblue F2 now." (3 wrong)
        # where measured, and one more word may go on another CPU (README.md, "Measured performance")
        assert own <= 0.67 and own < min(others), (name, heard, own, min(others))


def test_each_stream_scores_like_its_own_file(scenario: Scenario) -> None:
    """Independence: each live stream's windows and scores match its own clip decoded directly."""
    for name in CLIPS:
        messages = scenario.live[_stream_key(name)]
        reference = scenario.reference[name].scores
        assert len(messages) == len(reference), name
        heard_live = [m["text"] for m in scenario.transcripts[_stream_key(name)]]
        heard_file = [t.text for t in scenario.reference[name].transcripts]
        for message, score in zip(messages, reference, strict=True):
            # utterance edges come from the VAD on Opus-decoded audio: an edge frame may flip (seen: 0.22 s)
            assert message["start_s"] == pytest.approx(score.window.start_s, abs=EDGE_S), name
            assert message["end_s"] == pytest.approx(score.window.end_s, abs=EDGE_S), name
            got, want = message["scores"][0], score.tasks[0]
            apart = (name, f"M {got['m']:.3f} live vs {want.m:.3f} file",
                     *(f"{k.upper()} {got[k]} vs {getattr(want, k)}" for k in ("t", "a", "v")),
                     heard_live, heard_file)  # GRID's test sentences, not a call's words
            assert abs(got["m"] - want.m) / (want.label_max - want.label_min) <= MAX_SCORE_DIFF, apart


def test_bad_offers_get_the_right_status_while_others_stream(scenario: Scenario) -> None:
    status = {case: code for case, (code, _) in scenario.bad.items()}
    assert status == {"one_too_many": 503, "malformed_sdp": 400, "no_audio": 400, "wrong_token": 401}
    assert int(scenario.bad["one_too_many"][1]["Retry-After"]) > 0
    for case in ("extra", "bad-sdp", "no-audio", "bad-token"):
        assert _stream_key(case) not in scenario.live  # nothing was opened for them


def test_client_that_vanishes_keeps_what_was_scored(scenario: Scenario) -> None:
    assert scenario.vanish_rc == -signal.SIGKILL
    assert scenario.vanish_closed in ("media_timeout", "ice_failed")  # noticed by the server on its own
    messages = scenario.live[_stream_key(CALL_VANISH)]
    assert [m["seq"] for m in messages] == list(range(len(messages)))
    assert messages and not any(m["shed"] for m in messages)
    # it streamed for VANISH_AFTER_S: the windows stop there (the last one flushed), none before is lost
    assert messages[-1]["end_s"] <= VANISH_AFTER_S + 0.5
    assert messages[-1]["end_s"] >= 1.0  # CREMA-D speech starts at 0.25 s: at least the first take arrived


def test_garbage_after_connection_ends_cleanly_and_others_unharmed(scenario: Scenario) -> None:
    # aiortc drops datagrams it cannot authenticate; should its DTLS layer give up on a garbage record, the
    # session ends as a failed connection. Either way: a clean end, and what was scored before is kept.
    print(f"garbage client's session ended: {scenario.garbage_closed}")
    assert scenario.garbage_closed in ("delete", "ice_failed", "peer_ended", "media_timeout")
    messages = scenario.live[_stream_key(CALL_GARBAGE)]
    assert [m["seq"] for m in messages] == list(range(len(messages)))
    assert not any(m["shed"] for m in messages)
    assert messages[0]["end_s"] < GARBAGE_AFTER_S  # the take scored before the garbage arrived is there
    heard = words(" ".join(m["text"] for m in scenario.transcripts[_stream_key(CALL_GARBAGE)]))
    expected = words("Don't forget a jacket.")  # the first take, neutral; not word for word (CPUs differ)
    assert word_error_rate([" ".join(expected)], [" ".join(heard[: len(expected)])]) <= 0.4, heard
    if scenario.garbage_closed == "delete":  # garbage ignored: the whole recording got through
        assert len(messages) >= 5 and messages[-1]["end_s"] > 12.0
    # every session, the misbehaving ones included, was released
    assert scenario.sessions_after == 0, scenario.leftover


def test_browser_feed_and_metrics_see_the_same_windows(scenario: Scenario) -> None:
    on_kafka = scenario.live[_stream_key(SSE_CLIP)]
    assert [m["seq"] for m in scenario.sse] == [m["seq"] for m in on_kafka]  # the SSE feed of one stream
    assert all(m["stream"]["call_id"] == SSE_CLIP for m in scenario.sse)
    scored = sum(len(scenario.live[_stream_key(name)]) for name in (*CLIPS, CALL_VANISH, CALL_GARBAGE))
    assert scenario.scored_metric == scored  # /metrics counted every scored window
