"""Where the server's CPU goes at N live streams: CPU seconds per media second for each pipeline stage.

Runs bench/live.py's server (in this process, embedded broker, N WebRTC clients in a child process sending
the CREMA-D recording) and, while the N streams run, measures every thread's CPU time (/proc/self/task) and
samples which stage each thread is in:
- Python threads (event loop, aiortc decoder threads, Whisper, feature and scoring workers, Kafka): py-spy
  (`py-spy record --nonblocking --threads`, from PyPI), each stack named by bench/_stages.py's rules; a
  thread's CPU time is split over stages in proportion to its samples;
- threads without Python (ONNX Runtime, CTranslate2, MediaPipe, BLAS pools): `perf record` (leaf shared
  library of each sample), when perf is installed and allowed; else they show as "other native threads".
"CPU/media s" is core-seconds per second of media per stream (1.0 = one core per stream), summed over all
streams and divided by the media they sent. The profilers run in their own processes on the same cores, so
the streams see a slightly busier machine. Writes bench/results/profile_server.json.

    .venv/bin/python -m bench.profile_server [--streams 8] [--vision] [--receive-video] [--rate 50]
        [--file PATH] [--beam-size 5] [--keep-raw DIR] [--no-perf] [--out PATH]

--vision profiles a model that takes faces (the default model's vision branch is uninformed, so the agent
runs no FaceMesh for it); --receive-video takes every call's video even when no model looks at faces
(ingest.video: always; the default, auto, answers it "inactive" then).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._cpu import cpu_info
from bench._stages import STAGES, native_stage, parse_perf_script, parse_pyspy_raw
from bench._threadcpu import ThreadCpu, ThreadCpuSampler
from bench.live import add_server_options, cpu_s, find_bundles, live_server, measure

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "profile_server.json"  # profile_server_vision.json with --vision
ATTACH_S = 1.0  # py-spy and perf need a moment to attach before the streams start


@dataclass
class Samples:
    python: dict[int, Counter[str]]  # thread id -> py-spy samples per stage (busy)
    waiting: dict[int, Counter[str]]  # thread id -> py-spy samples per stage in a blocking wait
    native: dict[int, Counter[str]]  # thread id -> perf samples per shared library
    perf_used: bool


@contextlib.contextmanager
def profilers(workdir: Path, rate_hz: int, use_perf: bool, keep_dir: Path | None) -> Iterator[Samples]:
    """py-spy (and perf) attached to this process for the duration of the block; their raw samples are
    copied to `keep_dir` when given (py-spy's collapsed stacks load in speedscope or flamegraph.pl)."""
    pid = str(os.getpid())
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    pyspy_out = workdir / "pyspy.txt"
    procs = [subprocess.Popen(
        [pyspy, "record", "--pid", pid, "--rate", str(rate_hz), "--nonblocking", "--threads",
         "--format", "raw", "--output", str(pyspy_out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )]  # fmt: skip
    perf_data = workdir / "perf.data"
    perf = shutil.which("perf") if use_perf else None
    if perf is not None:
        procs.append(subprocess.Popen(
            [perf, "record", "-F", str(rate_hz), "-p", pid, "-o", str(perf_data), "--quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        ))  # fmt: skip
    samples = Samples({}, {}, {}, perf_used=False)
    try:
        time.sleep(ATTACH_S)
        yield samples
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)  # both write their output on SIGINT
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    if not pyspy_out.is_file():
        raise RuntimeError(f"py-spy wrote nothing: {procs[0].stderr.read().decode() if procs[0].stderr else ''}")
    samples.python, samples.waiting = parse_pyspy_raw(pyspy_out.read_text())
    if keep_dir is not None:
        keep_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(pyspy_out, keep_dir / "pyspy.txt")
    if perf is not None and perf_data.is_file():
        script = subprocess.run(
            [perf, "script", "-i", str(perf_data), "-F", "tid,ip,dso"], capture_output=True, text=True, check=False
        )
        samples.native = parse_perf_script(script.stdout)
        if keep_dir is not None:
            (keep_dir / "perf.txt").write_text(script.stdout)
        samples.perf_used = bool(samples.native)


def _python_split(samples: Samples, tid: int) -> Counter[str] | None:
    """A Python thread's samples per stage: the busy ones, or its waits if it has no busy sample."""
    return samples.python.get(tid) or samples.waiting.get(tid)


def attribute(threads: list[ThreadCpu], samples: Samples, process_cpu_s: float) -> dict[str, float]:
    """CPU seconds per stage: each thread's CPU time split by its py-spy samples, or given whole to the stage
    of its native library; what no thread accounts for (threads that ended between reads) is 'unaccounted'."""
    stages: dict[str, float] = dict.fromkeys(STAGES, 0.0)
    for thread in threads:
        python = _python_split(samples, thread.tid)
        if python:
            total = sum(python.values())
            for stage, count in python.items():
                stages[stage] += thread.cpu_s * count / total
        elif thread.cpu_s > 0:
            stages[native_stage(thread.comm, samples.native.get(thread.tid, Counter()))] += thread.cpu_s
    stages["unaccounted"] = max(0.0, process_cpu_s - sum(t.cpu_s for t in threads))
    return stages


def thread_rows(threads: list[ThreadCpu], samples: Samples, limit: int = 40) -> list[dict[str, Any]]:
    """The busiest threads: their stages (py-spy), or their stage and busiest libraries (perf)."""
    rows: list[dict[str, Any]] = []
    for thread in threads[:limit]:
        row: dict[str, Any] = {"tid": thread.tid, "comm": thread.comm, "cpu_s": round(thread.cpu_s, 3)}
        python = _python_split(samples, thread.tid)
        if python:
            row["stages"] = [stage for stage, _ in python.most_common(3)]
        else:
            dsos = samples.native.get(thread.tid, Counter())
            row["stages"] = [native_stage(thread.comm, dsos)]
            row["libraries"] = [Path(dso).name for dso, _ in dsos.most_common(3)]
        rows.append(row)
    return rows


async def profile(
    path: Path,
    streams: int,
    bundles: list[Path],
    workdir: Path,
    beam_size: int,
    rate_hz: int,
    use_perf: bool,
    keep_dir: Path | None = None,
    receive_video: bool = False,
) -> dict[str, Any]:
    async with live_server(bundles, workdir, beam_size, receive_video=receive_video) as served:
        server, base, token = served
        await measure(server, base, token, path, 1)  # warm-up: first-use costs are not the steady state
        sampler = ThreadCpuSampler()
        with profilers(workdir, rate_hz, use_perf, keep_dir) as samples:
            sampler.start()
            cpu_before = cpu_s()
            row = await measure(server, base, token, path, streams)
            process_cpu_s = cpu_s() - cpu_before
            threads = sampler.stop()
    media_s = row["media_s_per_stream"] * streams
    stages = attribute(threads, samples, process_cpu_s)
    server_cpu_s = sum(cpu for stage, cpu in stages.items() if stage != "profiler")
    return {
        "streams": streams,
        "media_s": media_s,
        "server_cpu_s": server_cpu_s,
        "server_cpu_per_media_s": server_cpu_s / media_s,
        "stages": {
            stage: {
                "label": STAGES[stage],
                "cpu_s": round(cpu, 3),
                "cpu_per_media_s": cpu / media_s,
                "share": cpu / server_cpu_s if server_cpu_s else 0.0,
            }
            for stage, cpu in sorted(stages.items(), key=lambda item: -item[1])
            if cpu > 0
        },  # fmt: skip
        "python_samples": sum(sum(c.values()) for c in samples.python.values()),
        "perf_used": samples.perf_used,
        "threads": thread_rows(threads, samples),
        "live": {k: v for k, v in row.items() if k not in ("per_stream",)},
    }


def table(result: dict[str, Any]) -> str:
    lines = [f"{'stage':<48}  {'CPU s':>7}  {'CPU/media s':>11}  {'share':>6}"]
    for stage in result["stages"].values():
        lines.append(
            f"{stage['label']:<48}  {stage['cpu_s']:7.2f}  {stage['cpu_per_media_s']:11.4f}  {stage['share']:6.1%}"
        )
    live = result["live"]
    lines.append(
        f"{'server total (profiler excluded)':<48}  {result['server_cpu_s']:7.2f}  "
        f"{result['server_cpu_per_media_s']:11.4f}  {1:6.1%}"
    )
    lines.append(
        f"clients (child process, not in the table): {live['client_cpu_per_stream']:.4f} CPU/media s; "
        f"latency p50 {live['latency_p50_s']:.2f} s, p95 {live['latency_p95_s']:.2f} s, "
        f"shed {live['shed']} of {live['windows']} windows"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--rate", type=int, default=50, help="samples per second per thread (py-spy, perf)")
    add_server_options(parser)
    parser.add_argument("--no-perf", action="store_true", help="do not sample native threads with perf")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep-raw", type=Path, help="directory for the raw py-spy stacks and perf samples")
    args = parser.parse_args()
    if args.vision and args.out == RESULTS:
        args.out = RESULTS.with_name("profile_server_vision.json")
    cpu = cpu_info()
    with tempfile.TemporaryDirectory() as tmp:
        bundles, model = find_bundles(Path(tmp), vision=args.vision)
        print(f"profiling the server at {args.streams} streams of {args.file.name}; model: {model}; "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
        result = asyncio.run(profile(
            args.file.resolve(), args.streams, bundles, Path(tmp), args.beam_size, args.rate, not args.no_perf,
            args.keep_raw, args.receive_video,
        ))  # fmt: skip
    result = {"benchmark": "profile_server", "file": args.file.name, "model": model, "cpu": cpu.as_dict(),
              "loadavg_1min_at_end": os.getloadavg()[0], "whisper_beam_size": args.beam_size,
              "vision": args.vision, "receive_video": args.receive_video, "sample_rate_hz": args.rate,
              **result}  # fmt: skip
    print(f"\nCPU: {cpu.line()}; shared with other work (load average at end {result['loadavg_1min_at_end']:.1f})")
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
