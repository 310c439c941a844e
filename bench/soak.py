"""Soak: N live streams for a long time, each restarting as soon as it ends; does the server leak?

bench/live.py's server (in this process, embedded broker, default model) takes N WebRTC clients (a child
process, the recording encoded once) that stream the CREMA-D recording back to back, each session a new call,
for `--minutes`. Every `--sample-s` seconds it records the server's RSS, its asyncio tasks and its threads.
Once the time is up and every session has closed it reports:
- RSS growth: from the first sample at or after one minute (buffers, arenas and caches warmed) to the last
  sample while the streams still ran, in % (target <= 5 %); the RSS once all closed is reported too;
- leaked tasks and threads: counts after all streams closed minus counts before the first stream (0 is
  clean; a session leaves tasks or aiortc threads behind otherwise); executor pools that grow to their size
  on demand (`POOLS`) are counted apart;
- sessions, windows, shed and failed windows;
- with --tracemalloc, the Python allocation sites that grew most from one minute to the end.
Writes bench/results/soak.json.

    .venv/bin/python -m bench.soak [--streams 4] [--minutes 30] [--sample-s 30] [--tracemalloc] [--file PATH]
        [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench.live import DEFAULT_FILE, REPO, BenchServer, Run, cpu_s, find_bundles, live_server, machine, rss_mb

RESULTS = REPO / "bench" / "results" / "soak.json"
GROWTH_FROM_S = 60.0  # RSS growth is counted from the first sample at or after this
SETTLE_S = 3.0  # after the last session closed: let closing callbacks and thread exits finish
CLIENT_DRAIN_S = 1.0  # a client's wait after its last packet before DELETE (bench/live.py waits 4 s)
TRACE_FRAMES = 6
POOLS = ("asyncio", "ingest-rgb")  # executors that start workers on demand, up to their size, and keep them


def _thread_names() -> dict[str, int]:
    """Live threads by name, numbers dropped: pools ("asyncio", "ingest-rgb") grow to their size and stay."""
    names: dict[str, int] = {}
    for thread in threading.enumerate():
        name = thread.name.rstrip("0123456789").rstrip("_-") or thread.name
        names[name] = names.get(name, 0) + 1
    return names


def _added(before: dict[str, Any], after: dict[str, Any], *, pools: bool) -> int:
    names = set(before["thread_names"]) | set(after["thread_names"])
    return sum(
        after["thread_names"].get(name, 0) - before["thread_names"].get(name, 0)
        for name in names
        if (name in POOLS) == pools
    )


def _top_growth(first: tracemalloc.Snapshot, last: tracemalloc.Snapshot, limit: int = 10) -> list[dict[str, Any]]:
    stats = last.compare_to(first, "traceback")
    return [
        {"kb": round(stat.size_diff / 1024, 1), "blocks": stat.count_diff,
         "where": [f"{frame.filename}:{frame.lineno}" for frame in stat.traceback]}
        for stat in stats[:limit]
    ]  # fmt: skip


def _sample(server: BenchServer, started: float) -> dict[str, Any]:
    return {
        "t_s": round(time.monotonic() - started, 1),
        "rss_mb": round(rss_mb(), 1),
        "tasks": len(asyncio.all_tasks()),
        "threads": threading.active_count(),
        "sessions": server.whip.active_sessions,
        "windows": server.run.windows,
    }


async def _settled(server: BenchServer) -> dict[str, Any]:
    while server.whip.active_sessions:  # noqa: ASYNC110 - sessions end once their last window is published
        await asyncio.sleep(0.1)
    await asyncio.sleep(SETTLE_S)
    gc.collect()
    return {
        "rss_mb": round(rss_mb(), 1),
        "tasks": len(asyncio.all_tasks()),
        "threads": threading.active_count(),
        "thread_names": _thread_names(),
    }


async def soak(
    path: Path, streams: int, minutes: float, sample_s: float, bundles: list[Path], workdir: Path, trace: bool
) -> dict[str, Any]:
    async with live_server(bundles, workdir, beam_size=5) as (server, base, token):
        clients_cmd = [
            sys.executable, "-m", "bench.soak", "--clients", str(streams), "--url", f"{base}/whip",
            "--file", str(path), "--minutes", "0.1",
        ]  # fmt: skip
        env = dict(os.environ, BENCH_TOKEN=token)
        warm = await asyncio.create_subprocess_exec(*clients_cmd[:4], "1", *clients_cmd[5:], env=env, cwd=REPO,
                                                    stdout=subprocess.PIPE)  # fmt: skip
        await warm.communicate()  # one session first: models, codecs and pools are warm before the baseline
        before = await _settled(server)
        clients_cmd[-1] = str(minutes)
        clients = await asyncio.create_subprocess_exec(*clients_cmd, env=env, cwd=REPO, stdout=subprocess.PIPE)
        assert clients.stdout is not None
        await clients.stdout.readline()  # "ready": the recording is encoded, the streams start now
        server.run = Run()
        cpu_before, started = cpu_s(), time.monotonic()
        if trace:
            tracemalloc.start(TRACE_FRAMES)
        samples = [_sample(server, started)]
        snapshot: tracemalloc.Snapshot | None = None
        communicate = asyncio.ensure_future(clients.communicate())
        while True:
            await asyncio.wait([communicate], timeout=sample_s)
            if communicate.done():
                break
            samples.append(_sample(server, started))
            if trace and snapshot is None and samples[-1]["t_s"] >= GROWTH_FROM_S:
                snapshot = tracemalloc.take_snapshot()
        sent = json.loads(communicate.result()[0].decode().strip().splitlines()[-1])
        growth = _top_growth(snapshot, tracemalloc.take_snapshot()) if snapshot is not None else []
        tracemalloc.stop()
        after = await _settled(server)
        wall_s, cpu = time.monotonic() - started, cpu_s() - cpu_before
        run = server.run
    base_sample = next((s for s in samples if s["t_s"] >= GROWTH_FROM_S), samples[0])
    return {
        "streams": streams,
        "minutes": minutes,
        "sample_s": sample_s,
        "wall_s": round(wall_s, 1),
        "sessions": sent["sessions"],
        "client_errors": sent["errors"],
        "media_s": round(sent["audio_s"], 1),
        "windows": run.windows,
        "shed": run.shed,
        "failed": sum(s["failed"] for s in run.summaries),
        "server_cpu_per_stream": cpu / sent["audio_s"] if sent["audio_s"] else float("nan"),
        "rss_growth_from_s": base_sample["t_s"],
        "rss_growth_to_s": samples[-1]["t_s"],
        "rss_growth_pct": 100.0 * (samples[-1]["rss_mb"] - base_sample["rss_mb"]) / base_sample["rss_mb"],
        "rss_peak_mb": max(s["rss_mb"] for s in samples),
        "before": before,
        "after": after,
        "leaked_tasks": after["tasks"] - before["tasks"],
        "leaked_threads": _added(before, after, pools=False),
        "pool_threads_added": _added(before, after, pools=True),
        "samples": samples,
        "python_allocation_growth": growth,
    }


async def clients(count: int, url: str, path: Path, minutes: float) -> dict[str, Any]:
    """The client process: `count` slots, each streaming the recording back to back until the time is up."""
    from agent.loopback import configure_loopback
    from agent.stream_client import StreamError, encode_recording, stream_recording

    configure_loopback("only")
    token = os.environ["BENCH_TOKEN"]
    run = secrets.token_hex(3)
    recording = await asyncio.to_thread(encode_recording, path)
    print("ready", flush=True)
    deadline = time.monotonic() + minutes * 60
    totals = {"sessions": 0, "errors": 0, "audio_s": 0.0}

    async def slot(index: int) -> None:
        k = 0
        while time.monotonic() < deadline:
            url_k = f"{url}?call_id=soak-{run}-{index}-{k}&participant_id=p1"
            k += 1
            try:
                result = await stream_recording(recording, url_k, token, drain_s=CLIENT_DRAIN_S)
            except StreamError:
                totals["errors"] += 1
                await asyncio.sleep(1.0)
                continue
            totals["sessions"] += 1
            totals["audio_s"] += result.audio_s

    cpu_before = cpu_s()
    await asyncio.gather(*(slot(i) for i in range(count)))
    return {**totals, "cpu_s": cpu_s() - cpu_before}


def table(result: dict[str, Any]) -> str:
    lines = [f"{'t s':>7}  {'RSS MB':>7}  {'tasks':>5}  {'threads':>7}  {'sessions':>8}  {'windows':>7}"]
    for s in result["samples"]:
        lines.append(
            f"{s['t_s']:7.0f}  {s['rss_mb']:7.1f}  {s['tasks']:5d}  {s['threads']:7d}  {s['sessions']:8d}  "
            f"{s['windows']:7d}"
        )
    before, after = result["before"], result["after"]
    lines += [
        f"before the streams: RSS {before['rss_mb']:.1f} MB, {before['tasks']} tasks, {before['threads']} threads; "
        f"after all closed: RSS {after['rss_mb']:.1f} MB, {after['tasks']} tasks, {after['threads']} threads",
        f"RSS growth from {result['rss_growth_from_s']:.0f} s to {result['rss_growth_to_s']:.0f} s: "
        f"{result['rss_growth_pct']:+.1f} % "
        f"(target <= 5 %); leaked tasks {result['leaked_tasks']}, leaked threads {result['leaked_threads']} "
        f"(executor pools grew by {result['pool_threads_added']})",
        f"threads by name before {before['thread_names']}, after {after['thread_names']}",
        f"{result['sessions']} sessions ({result['client_errors']} refused or failed), {result['windows']} windows "
        f"({result['shed']} shed, {result['failed']} failed), server CPU {result['server_cpu_per_stream']:.3f} "
        f"core per stream",
    ]
    for stat in result["python_allocation_growth"][:5]:
        lines.append(f"  python allocations {stat['kb']:+.1f} KB ({stat['blocks']:+d} blocks) at {stat['where'][-1]}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--sample-s", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    parser.add_argument(
        "--tracemalloc", action="store_true", help="report where Python allocations grew (slower server)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--clients", type=int, help=argparse.SUPPRESS)  # internal: the client process
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clients:
        print(json.dumps(asyncio.run(clients(args.clients, args.url, args.file.resolve(), args.minutes))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        bundles, model = find_bundles(Path(tmp))
        print(f"soak: {args.streams} streams of {args.file.name} back to back for {args.minutes:g} min; "
              f"model: {model}; load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
        result = asyncio.run(soak(
            args.file.resolve(), args.streams, args.minutes, args.sample_s, bundles, Path(tmp), args.tracemalloc
        ))  # fmt: skip
    host = machine()
    host["loadavg_1min_at_end"] = os.getloadavg()[0]
    print(f"\nmachine: {host['cores']}-core CPU ({host['cpu']}), shared with other work")
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "soak", "file": args.file.name, "model": model, "machine": host,
                                    **result}, indent=2) + "\n")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
