"""Replay benchmark: the whole ../shared/data speech + AV set through the live pipeline in fast mode, twice.

Every file of the manifest is a stream; all run concurrently through one runtime (Whisper, features, the
micro-batched scorer). Reported: the real-time factor (wall seconds per media second; the target is < 0.5 on
the 2-core dev machine), whether the two runs gave identical windows and scores, and per-stage latency. The
baseline, measured in the same run, is decoding alone (the same decoder and frame sampling, no analysis).
Prints a table and writes bench/results/replay.json.

    .venv/bin/python -m bench.replay [--bundle DIR] [--repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.evaluate import latency_stats, windows_from_messages
from agent.file_source import collect_sources, file_media
from agent.jsonl_sink import read_jsonl
from agent.replay import media_span_s, run_replay
from agent.settings import Settings

REPO = Path(__file__).resolve().parents[1]

DATA = (REPO / ".." / "shared" / "data").resolve()
RTF_TARGET = 0.5


async def _decode_only(manifest: Path, vision_fps: float) -> float:
    sources = collect_sources([manifest])

    async def drain(source: Any) -> None:
        async for _ in file_media(source, vision_fps):
            pass

    started = time.monotonic()
    await asyncio.gather(*(drain(s) for s in sources))
    return time.monotonic() - started


def _key(message: dict[str, Any]) -> tuple[Any, ...]:
    window = (message["stream"]["key"], message["seq"], message["start_s"], message["end_s"])
    return (*window, message["closed_by"], json.dumps(message["scores"], sort_keys=True))


def _child(out: Path, bundle: Path | None) -> None:
    """One replay of the whole manifest in this process (fresh runtime, as `affectstream replay` runs)."""
    settings = _settings(bundle)
    summary = asyncio.run(
        run_replay([DATA / "manifest.csv"], settings, output=out, publish=False, progress=False)
    )
    out.with_suffix(".summary.json").write_text(
        json.dumps({"wall_s": summary.wall_s, "rtf": summary.rtf, "ok": summary.ok}), encoding="utf-8"
    )


def _settings(bundle: Path | None) -> Settings:
    scoring: dict[str, Any] = {"providers": ["CPUExecutionProvider"]}
    if bundle is not None:
        scoring["bundles"] = [bundle]
    return Settings(scoring=scoring)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None, help="model bundle (default: the project's)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.child is not None:
        _child(args.child, args.bundle)
        return
    settings = _settings(args.bundle)
    manifest = DATA / "manifest.csv"
    sources = collect_sources([manifest])
    media_s = sum(media_span_s(s)[1] for s in sources)
    decode_s = asyncio.run(_decode_only(manifest, settings.features.vision_fps))
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.repeats):
            # Each run in its own process, as the CLI runs: one runtime per process (two runtimes in one
            # process make OpenMP spin-wait teams of Whisper compete, which is not what a user sees).
            out = Path(tmp) / f"run{index}.jsonl"
            command = [sys.executable, "-m", "bench.replay", "--child", str(out)]
            if args.bundle is not None:
                command += ["--bundle", str(args.bundle)]
            subprocess.run(command, check=True, cwd=REPO)
            summary = json.loads(out.with_suffix(".summary.json").read_text("utf-8"))
            messages = list(read_jsonl(out))
            runs.append({"summary": summary, "keys": sorted(_key(m) for m in messages), "messages": messages})
    identical = all(run["keys"] == runs[0]["keys"] for run in runs[1:])
    _report(args, settings, sources, media_s, decode_s, runs, identical)


def _report(args: argparse.Namespace, settings: Settings, sources: list[Any], media_s: float, decode_s: float,
            runs: list[dict[str, Any]], identical: bool) -> None:
    first = runs[0]["summary"]
    bundle = str(args.bundle) if args.bundle else "default (.affectstream/bundles/sentiment-default)"
    model = runs[0]["messages"][0]["scores"][0] if runs[0]["messages"] else {}
    result = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),  # other work on the machine skews timings
        "bundle": bundle,
        "model": f"{model.get('model_id')} {model.get('model_version')}",
        "files": len(sources),
        "media_s": round(media_s, 3),
        "windows": len(runs[0]["keys"]),
        "baseline_decode_only_s": round(decode_s, 3),
        "runs": [{"wall_s": round(r["summary"]["wall_s"], 3), "rtf": round(r["summary"]["rtf"], 4),
                  "ok": r["summary"]["ok"]} for r in runs],
        "identical_windows_and_scores": identical,
        "rtf_target": RTF_TARGET,
        "rtf_ratio_to_target": round(max(r["summary"]["rtf"] for r in runs) / RTF_TARGET, 4),
        "replay_over_decode_only": round(first["wall_s"] / decode_s, 3) if decode_s > 0 else None,
        "latency_ms": latency_stats(windows_from_messages(runs[0]["messages"])),
        "speech": {"model": "tiny.en", "compute_type": settings.speech.compute_type,
                   "cpu_threads": settings.speech.cpu_threads, "beam_size": settings.speech.beam_size},
    }
    print(f"{'':<28}{'wall_s':>10}{'RTF':>10}")
    print(f"{'decode only (baseline)':<28}{decode_s:>10.2f}{decode_s / media_s:>10.3f}")
    for index, run in enumerate(result["runs"], start=1):
        print(f"{f'replay run {index}':<28}{run['wall_s']:>10.2f}{run['rtf']:>10.3f}")
    print(f"{len(sources)} files, {media_s:.1f} s of media, {result['windows']} windows; identical across "
          f"runs: {'yes' if identical else 'NO'}; RTF target < {RTF_TARGET} "
          f"({'met' if result['rtf_ratio_to_target'] < 1 else 'MISSED'}); replay / decode-only = "
          f"{result['replay_over_decode_only']}")
    for stage, stats in result["latency_ms"].items():
        print(f"  latency {stage:<10} p50 {stats['p50']:>9.1f} ms  p95 {stats['p95']:>9.1f} ms  "
              f"max {stats['max']:>9.1f} ms")
    out = REPO / "bench" / "results" / "replay.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
