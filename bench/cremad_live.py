"""The live path on CREMA-D: actor 1001's six takes (one mp4) streamed over WebRTC to the real server.

The agent's server (`AgentServer` with the shared runtime, publishing to an embedded broker) takes the file
from the real client (`agent.stream_client.stream_file`, real time, loopback ICE). Each scored window is set
beside the take it overlaps most, with that clip's voice-only votes and `voice_valence`.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.broker import EmbeddedBroker, free_port
from agent.runtime import open_runtime
from agent.server import AgentServer
from agent.stream_client import stream_file
from bench.cremad_replay import task_score
from bench.live import bench_settings
from core.types import Score
from models.adapters.crema_d import CremaClip, voice_valence

SIX_EMOTIONS_MP4 = (
    Path(__file__).resolve().parents[1]
    / ".."
    / "shared"
    / "data"
    / "av"
    / "derived"
    / ("crema_d_1001_DFA_6emotions.mp4")
)
# The takes in the file and their spans (s), from ../shared/data/SOURCES.md ("av/derived/")
TAKES: tuple[tuple[str, float, float], ...] = (
    ("1001_DFA_NEU_XX", 0.000, 2.035),
    ("1001_DFA_HAP_XX", 2.035, 3.904),
    ("1001_DFA_SAD_XX", 3.904, 5.906),
    ("1001_DFA_ANG_XX", 5.906, 8.141),
    ("1001_DFA_FEA_XX", 8.141, 10.310),
    ("1001_DFA_DIS_XX", 10.310, 12.646),
)
DRAIN_S = 4.0  # the client waits this long after its last packet, so the tail reaches the server
BEAM_SIZE = 5  # Whisper's default (speech.beam_size)


@dataclass(frozen=True, slots=True)
class LiveWindow:
    start_s: float
    end_s: float
    m: float
    a: float | None
    text: str
    shed: bool


def take_of(start_s: float, end_s: float) -> str:
    """The take a window overlaps most."""
    return max(TAKES, key=lambda take: min(end_s, take[2]) - max(start_s, take[1]))[0]


async def stream_six_takes(bundle: Path, path: Path = SIX_EMOTIONS_MP4) -> tuple[list[LiveWindow], float]:
    """Stream the file once through the live server; its windows in media order, and the wall seconds."""
    windows: list[LiveWindow] = []

    async def keep(score: Score) -> None:
        window = score.window
        if window.shed:
            windows.append(LiveWindow(window.start_s, window.end_s, float("nan"), None, "", True))
            return
        own = task_score(score.tasks)
        windows.append(LiveWindow(window.start_s, window.end_s, own.m, own.a,
                                  score.features.transcript.text.strip(), False))  # fmt: skip

    token = secrets.token_urlsafe(12)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as spool, EmbeddedBroker("127.0.0.1", free_port()) as broker:
        settings = bench_settings(broker.bootstrap_servers, [bundle], Path(spool), token, BEAM_SIZE)
        async with open_runtime(settings, score_sinks=[keep]) as runtime:
            server = AgentServer(settings, runtime)
            base = await server.start()
            try:
                await stream_file(path, f"{base}/whip?call_id=cremad-1001-six&participant_id=p1", token,
                                  drain_s=DRAIN_S)  # fmt: skip
            finally:
                await server.close()  # ends the session once its last window is published
    return sorted(windows, key=lambda w: w.start_s), time.perf_counter() - started


def live_rows(windows: list[LiveWindow], clips: dict[str, CremaClip]) -> list[dict[str, Any]]:
    """One row per window: its span, M, A, what Whisper heard, and its take's votes and label."""
    rows = []
    for w in windows:
        clip = clips[take_of(w.start_s, w.end_s)]
        rows.append({
            "start_s": round(w.start_s, 2), "end_s": round(w.end_s, 2), "take": clip.name, "emotion": clip.emotion,
            "m": round(w.m, 4), "a": None if w.a is None else round(w.a, 4), "shed": w.shed, "text": w.text,
            "voice_valence": voice_valence(clip), "voice_votes": clip.voice_votes, "voice_n": clip.voice_n,
        })  # fmt: skip
    return rows
