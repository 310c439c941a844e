"""Live benchmark: N concurrent WebRTC streams through the full server to the broker, on this CPU.

The agent (AgentServer + the shared runtime: Whisper, feature extractor, ONNX scorer, publisher) runs in this
process against the embedded tansu broker; the WebRTC clients (`stream_file`, real time, loopback ICE) run in
a child process, so the CPU and memory figures are the server's alone (the clients still share the cores).
Every stream sends the CREMA-D recording (12.6 s, talking face, six takes of one sentence); windows are the
default utterance windows. For 1, 4 and 8 concurrent streams it reports:

- latency: from a window's close in media time to the broker's acknowledgement of its score message. A
  stream's media clock is pinned where its audio reaches the server (origin = min over chunks of arrival
  time - chunk end in media time), so "close" is origin + window.end_s; the utterance detector's pause
  (windows.min_silence_s) and the frame hold (0.25 s) are part of it, network and jitter buffer are not;
- real-time factor: the analysis stages' wall time (speech + features + scoring) per second of window media,
  summed over windows; below 1 the analyser keeps up;
- CPU per stream: server CPU seconds (all threads) per second of media per stream (1.0 = one core);
- client CPU per stream: the same for the client process while it streams (encoding once excluded);
- RSS per stream: (peak RSS during the run - RSS idle with models loaded) / streams;
- shed windows (analysis skipped under overload; should be 0).
Ratios compare each row with the 1-stream baseline measured in the same run. Writes bench/results/live.json.

    .venv/bin/python -m bench.live [--streams 1 4 8] [--file PATH] [--beam-size 5] [--vision]
        [--receive-video] [--out PATH]

--vision uses a model that takes faces (the default model's vision branch is uninformed, so the agent runs no
FaceMesh for it); --receive-video takes every call's video even when no model looks at faces (ingest.video: always; the
default, auto, answers it "inactive" then).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.broker import EmbeddedBroker, free_port
from agent.pipeline import run_stream
from agent.runtime import open_runtime
from agent.server import AgentServer
from agent.sessions import IngestSession
from agent.settings import Settings
from agent.stages import ScoreSink
from bench._cpu import cpu_info
from core.types import AudioChunk, Score, VideoFrame

REPO = Path(__file__).resolve().parents[1]

DEFAULT_FILE = REPO / ".." / "shared" / "data" / "av" / "derived" / "crema_d_1001_DFA_6emotions.mp4"
RESULTS = REPO / "bench" / "results" / "live.json"
# Seconds a client waits after its last packet before DELETE. The client's default (0.3 s) loses the tail of
# every stream at 8 streams here: the server's decoders lag by more than its 2 s reader drain
# (agent.sessions.READER_DRAIN_S). The benchmark measures latency and cost, so it lets the tail arrive.
DRAIN_S = 4.0


@dataclass
class Run:
    origin_s: dict[str, float] = field(default_factory=dict)  # stream key -> wall time of media time 0
    latencies_s: list[float] = field(default_factory=list)
    latencies_by_stream: dict[str, list[float]] = field(default_factory=dict)
    analysis_s: float = 0.0
    window_media_s: float = 0.0
    windows: int = 0
    shed: int = 0
    closed: dict[str, int] = field(default_factory=dict)  # session close reason -> sessions
    audio_gap_s: float = 0.0  # silence ingest filled for lost/late packets, all streams
    summaries: list[dict[str, Any]] = field(default_factory=list)
    stage_ms: dict[str, list[float]] = field(default_factory=dict)  # stage -> per-window wall ms


class BenchServer(AgentServer):
    """The agent's server, with each stream's media clock pinned to the wall clock as audio arrives."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.run = Run()

    async def _on_session(self, session: IngestSession) -> None:
        assert self.pipeline is not None
        media = self._clocked(session.stream.key, session.media())
        summary = await run_stream(session.stream, media, self.pipeline, shed_on_overload=True)
        self.run.summaries.append(
            {"windows": summary.windows, "scored": summary.scored, "failed": summary.failed,
             "media_end_s": round(summary.media_end_s, 2)}
        )  # fmt: skip
        reason = str(session.closed)
        self.run.closed[reason] = self.run.closed.get(reason, 0) + 1
        self.run.audio_gap_s += session.stats().audio_gap_s

    async def _clocked(
        self, key: str, media: AsyncIterator[AudioChunk | VideoFrame]
    ) -> AsyncIterator[AudioChunk | VideoFrame]:
        async for item in media:
            if isinstance(item, AudioChunk):
                origin = time.monotonic() - item.end_s
                self.run.origin_s[key] = min(self.run.origin_s.get(key, origin), origin)
            yield item


def _acked_sink(server: BenchServer) -> ScoreSink:
    """A score sink after the publisher's: called once the broker acknowledged the score (or the spool took it)."""

    async def sink(score: Score) -> None:
        run, window = server.run, score.window
        run.windows += 1
        if window.shed:
            run.shed += 1
            return
        latency_s = time.monotonic() - (run.origin_s[window.stream.key] + window.end_s)
        run.latencies_s.append(latency_s)
        run.latencies_by_stream.setdefault(window.stream.key, []).append(latency_s)
        for stage in ("speech", "features", "scoring"):
            run.stage_ms.setdefault(stage, []).append(score.latencies_ms.get(stage, 0.0))
        run.analysis_s += sum(score.latencies_ms.get(k, 0.0) for k in ("speech", "features", "scoring")) / 1000
        run.window_media_s += window.duration_s

    return sink


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s() -> float:
    times = os.times()
    return times.user + times.system


async def _peak_rss(stop: asyncio.Event) -> float:
    peak = rss_mb()
    while not stop.is_set():
        peak = max(peak, rss_mb())
        await asyncio.sleep(0.2)
    return peak


async def measure(server: BenchServer, base: str, token: str, path: Path, streams: int) -> dict[str, Any]:
    server.run = Run()
    idle_rss, cpu_before, started = rss_mb(), cpu_s(), time.monotonic()
    stop = asyncio.Event()
    peak_task = asyncio.create_task(_peak_rss(stop))
    clients = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.live", "--clients", str(streams), "--url", f"{base}/whip", "--file", str(path),
        env=dict(os.environ, BENCH_TOKEN=token), stdout=subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    out, _ = await clients.communicate()
    sent = json.loads(out.decode().strip().splitlines()[-1])
    while server.whip.active_sessions:  # noqa: ASYNC110 - sessions end once their last window is published
        await asyncio.sleep(0.05)
    stop.set()
    peak = await peak_task
    wall_s, cpu = time.monotonic() - started, cpu_s() - cpu_before
    run = server.run
    media_s = sum(sent["audio_s"])
    latencies = np.array(run.latencies_s) if run.latencies_s else np.array([np.nan])
    # starvation: the worst stream's p95 against the median stream's
    stream_p95 = [float(np.percentile(v, 95)) for v in run.latencies_by_stream.values()] or [float("nan")]
    return {
        "streams": streams,
        "windows": run.windows,
        "shed": run.shed,
        "latency_p50_s": float(np.percentile(latencies, 50)),
        "latency_p95_s": float(np.percentile(latencies, 95)),
        "latency_max_s": float(latencies.max()),
        "stream_p95_worst_s": max(stream_p95),
        "stream_p95_median_s": float(np.median(stream_p95)),
        "rtf": run.analysis_s / run.window_media_s if run.window_media_s else float("nan"),
        "cpu_per_stream": cpu / media_s if media_s else float("nan"),
        "client_cpu_per_stream": sent["cpu_s"] / media_s if media_s else float("nan"),
        "rss_per_stream_mb": (peak - idle_rss) / streams,
        "rss_idle_mb": idle_rss,
        "media_s_per_stream": media_s / streams,
        "wall_s": wall_s,
        "sessions_closed": run.closed,
        "audio_gap_s": run.audio_gap_s,
        "per_stream": run.summaries,
        "audio_received_ratio": sum(x["media_end_s"] for x in run.summaries) / media_s if media_s else 0.0,
        "stage_ms_p50": {stage: float(np.median(ms)) for stage, ms in run.stage_ms.items()},
        "loadavg_1min_after": os.getloadavg()[0],
    }


def bench_settings(
    bootstrap_servers: str, bundles: list[Path], spool_dir: Path, token: str, beam_size: int,
    *, receive_video: bool = False,
) -> Settings:
    return Settings(
        speech={"beam_size": beam_size},
        kafka={"bootstrap_servers": bootstrap_servers},
        publish={"spool_dir": spool_dir},
        scoring={"bundles": bundles, "providers": ["CPUExecutionProvider"]},
        ingest={"port": 0, "tokens": [token], "ice_loopback": "only", "max_sessions": 16,
                "video": "always" if receive_video else "auto"},
    )  # fmt: skip


def find_bundles(workdir: Path, *, vision: bool = False) -> tuple[list[Path], str]:
    """The default sentiment bundle (exported if its committed model exists); else, or when `vision` is asked
    for (the default model's vision branch is uninformed, so the agent runs no FaceMesh for it), a
    random-weight MiniLM bundle that takes faces."""
    from core.card import DEFAULT_BUNDLE_DIR
    from default_model.artefacts import DEFAULT_DIR, export_default_bundle

    has_default = (DEFAULT_BUNDLE_DIR / "card.json").is_file() or (DEFAULT_DIR / "heads.safetensors").is_file()
    if has_default and not vision:
        bundle, _ = export_default_bundle(DEFAULT_BUNDLE_DIR)
        return [bundle], "default sentiment bundle (MiniLM text encoder; no vision: FaceMesh off)"
    from bench.scoring import build_bundle

    bundle, _, _ = build_bundle(workdir)
    why = "asked for vision" if has_default else "the default bundle was not available"
    return [bundle], f"random-weight MiniLM bundle with vision (bench.scoring; {why})"


@contextlib.asynccontextmanager
async def live_server(
    bundles: list[Path], workdir: Path, beam_size: int, *, receive_video: bool = False
) -> AsyncIterator[tuple[BenchServer, str, str]]:
    """The agent's server with its runtime on a free port against an embedded broker: (server, base URL, token)."""
    token = secrets.token_urlsafe(12)
    with EmbeddedBroker("127.0.0.1", free_port()) as broker:
        settings = bench_settings(broker.bootstrap_servers, bundles, workdir / "spool", token, beam_size,
                                  receive_video=receive_video)
        server = BenchServer(settings)
        async with open_runtime(settings, score_sinks=[_acked_sink(server)]) as runtime:
            server.attach(runtime)
            base = await server.start()
            try:
                yield server, base, token
            finally:
                await server.close()


async def bench(
    path: Path,
    counts: list[int],
    bundles: list[Path],
    workdir: Path,
    beam_size: int,
    *,
    receive_video: bool = False,
) -> list[dict[str, Any]]:
    rows = []
    async with live_server(bundles, workdir, beam_size, receive_video=receive_video) as served:
        server, base, token = served
        await measure(server, base, token, path, 1)  # warm-up: first-use costs are not latency
        for count in counts:
            rows.append(await measure(server, base, token, path, count))
            row = rows[-1]
            print(
                f"  {count} stream(s): sessions {row['sessions_closed']}, audio gaps filled "
                f"{row['audio_gap_s']:.2f} s, load average {row['loadavg_1min_after']:.1f}",
                flush=True,
            )
    return rows


async def clients(count: int, url: str, path: Path) -> dict[str, Any]:
    """The client process: encode the file once, then stream it `count` times at once; its CPU while streaming."""
    from agent.loopback import configure_loopback
    from agent.stream_client import encode_recording, stream_recording

    configure_loopback("only")
    token = os.environ["BENCH_TOKEN"]
    run = secrets.token_hex(3)
    recording = await asyncio.to_thread(encode_recording, path)
    cpu_before = cpu_s()
    results = await asyncio.gather(*(
        stream_recording(recording, f"{url}?call_id=bench-{run}-{i}&participant_id=p1", token, drain_s=DRAIN_S)
        for i in range(count)
    ))  # fmt: skip
    return {"audio_s": [r.audio_s for r in results], "cpu_s": cpu_s() - cpu_before}


def table(rows: list[dict[str, Any]]) -> str:
    base = rows[0]
    lines = [
        f"{'streams':>7}  {'windows':>7}  {'shed':>4}  {'p50 s':>6}  {'p95 s':>6}  {'max s':>6}  {'RTF':>5}  "
        f"{'worst/med p95':>13}  {'CPU/stream':>10}  {'client CPU':>10}  {'RSS/stream MB':>13}  {'p50 x1':>6}  "
        f"{'CPU x1':>6}"
    ]
    for r in rows:
        lines.append(
            f"{r['streams']:>7}  {r['windows']:>7}  {r['shed']:>4}  {r['latency_p50_s']:6.2f}  "
            f"{r['latency_p95_s']:6.2f}  {r['latency_max_s']:6.2f}  {r['rtf']:5.2f}  "
            f"{r['stream_p95_worst_s'] / r['stream_p95_median_s']:13.2f}  {r['cpu_per_stream']:10.2f}  "
            f"{r['client_cpu_per_stream']:10.3f}  "
            f"{r['rss_per_stream_mb']:13.1f}  {r['latency_p50_s'] / base['latency_p50_s']:6.2f}  "
            f"{r['cpu_per_stream'] / base['cpu_per_stream']:6.2f}"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = cpu_info()
    return {"cpu": cpu.model, "cores": cpu.cores, "cpu_info": cpu.as_dict(), "gpu": None,
            "python": platform.python_version()}  # fmt: skip


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """The options of the served streams that the live benches share."""
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    parser.add_argument("--beam-size", type=int, default=5, help="Whisper beam (speech.beam_size; default 5)")
    parser.add_argument("--vision", action="store_true", help="a model that takes faces (FaceMesh runs)")
    parser.add_argument(
        "--receive-video", action="store_true",
        help="take video even if no model looks at faces (ingest.video: always)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8])
    add_server_options(parser)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--clients", type=int, help=argparse.SUPPRESS)  # internal: the client process
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clients:
        print(json.dumps(asyncio.run(clients(args.clients, args.url, args.file.resolve()))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        bundles, model = find_bundles(Path(tmp), vision=args.vision)
        print(
            f"live benchmark: {args.file.name}, streams {args.streams}, model: {model}, "
            f"load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        rows = asyncio.run(
            bench(
                args.file.resolve(), args.streams, bundles, Path(tmp), args.beam_size,
                receive_video=args.receive_video,
            )
        )  # fmt: skip
    host = machine()
    host["loadavg_1min_at_end"] = os.getloadavg()[0]
    print(f"\nmachine: {host['cores']}-core CPU ({host['cpu']}), no GPU; clients on the same cores")
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "live", "file": args.file.name, "model": model, "machine": host,
        "windows": "utterance (default settings)", "baseline": "1 stream, same run",
        "whisper_beam_size": args.beam_size, "receive_video": args.receive_video, "rows": rows,
    }, indent=2) + "\n")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
