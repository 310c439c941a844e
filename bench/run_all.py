"""Runs every benchmark in bench/ and gathers their results: bench/results/results.json and results.md.

Each benchmark is a module `bench/<name>.py` that prints a table and writes `bench/results/<name>.json`
(its own baseline measured in the same run). This runs them one after another (they share the machine's
cores; running them together would measure contention), each in its own process with a time limit, then
collects every JSON into one file and one markdown page (a table per benchmark). A benchmark that fails
keeps its row, marked failed, with the tail of its output; expected benchmarks that do not exist yet are
listed as missing. GPU results that bench/gpu.sh produced on a lent machine (bench/results/gpu/*.json,
copied back by whoever ran it) are included as they are.

    .venv/bin/python -m bench.run_all [--only asr,publish] [--skip default_model] [--quick] [--collect-only]

--quick passes small inputs (QUICK_ARGS) to check that every benchmark still runs; the scripts then overwrite
their bench/results/<name>.json with those small-input numbers, so rerun without it for numbers to quote.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench._report import result_tables

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
GPU_RESULTS = RESULTS / "gpu"
EXPECTED = ("asr", "train_step", "scoring", "publish", "live", "replay", "default_model")
# gpu_*, whisper_layout: GPU machine only (bench/gpu.sh); cluster_rehearsal: a deployment check (deploy/README.md)
NOT_BENCHMARKS = {"run_all", "gpu_check", "gpu_bench", "whisper_layout", "cluster_rehearsal"}
# --quick: smaller inputs, for checking that every benchmark still runs (numbers are not comparable)
QUICK_ARGS: dict[str, list[str]] = {
    "asr": [],
    "train_step": ["--steps", "2"],
    "publish": ["--messages", "500", "--streams", "4"],
    "replay": ["--repeats", "1"],
    "default_model": ["--per-corpus", "20", "--text-per-corpus", "200", "--limit", "20"],
    "scoring": ["--streams", "8", "--windows-per-stream", "2", "--rounds", "1"],
    "live": ["--streams", "1", "2"],
}
OUTPUT_TAIL_CHARS = 3000


def discover() -> list[str]:
    found = {p.stem for p in BENCH.glob("*.py")
             if not p.stem.startswith(("_", "cremad_"))} - NOT_BENCHMARKS  # cremad_*: default_model's parts
    return [name for name in EXPECTED if name in found] + sorted(found - set(EXPECTED))


def run_one(name: str, *, quick: bool, timeout_s: float) -> dict[str, Any]:
    """Run `python -m bench.<name>` from the repository root; its entry: status, wall time, exit code, output
    tail, and the JSON it wrote."""
    out = RESULTS / f"{name}.json"
    args = [sys.executable, "-m", f"bench.{name}", *(QUICK_ARGS.get(name, []) if quick else [])]
    print(f"\n=== {name}: {' '.join(args[1:])}", flush=True)
    started_at = time.time()
    started = time.monotonic()
    try:
        done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout_s, check=False)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        code, output = None, _text(exc.stdout) + _text(exc.stderr) + f"\n(killed after {timeout_s:.0f} s)"
    wall_s = round(time.monotonic() - started, 1)
    print(output[-OUTPUT_TAIL_CHARS:], flush=True)
    entry: dict[str, Any] = {
        "script": f"bench/{name}.py", "args": args[3:], "wall_s": wall_s, "exit_code": code
    }
    fresh = out.is_file() and out.stat().st_mtime >= started_at
    if code == 0 and fresh:
        entry.update(status="ok", result=json.loads(out.read_text(encoding="utf-8")))
    else:
        entry.update(status="failed" if code != 0 else "no_result", output_tail=output[-OUTPUT_TAIL_CHARS:])
        if out.is_file():
            entry["stale_result"] = _stale(out)
    return entry


def collect_one(name: str) -> dict[str, Any]:
    out = RESULTS / f"{name}.json"
    if not out.is_file():
        return {"script": f"bench/{name}.py", "status": "no_result"}
    return {"script": f"bench/{name}.py", "status": "collected", **_stale(out)}


def _stale(path: Path) -> dict[str, Any]:
    written = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).isoformat(timespec="seconds")
    return {"written_at": written, "result": json.loads(path.read_text(encoding="utf-8"))}


def _text(value: str | bytes | None) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def gpu_results() -> dict[str, Any]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(GPU_RESULTS.glob("*.json"))}


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Generated {report['generated_at']} on {report['machine']['platform']} "
        f"({report['machine']['cpus']} CPUs){' — quick mode: small inputs' if report['quick'] else ''}. "
        "Each benchmark compares against a baseline measured in the same run (see its script's docstring).",
        "",
        "| benchmark | status | wall (s) |",
        "|---|---|---|",
    ]
    for name, entry in report["benchmarks"].items():
        lines.append(f"| {name} | {entry['status']} | {entry.get('wall_s', '')} |")
    for name in report["missing"]:
        lines.append(f"| {name} | missing (no bench/{name}.py) | |")
    for name, entry in report["benchmarks"].items():
        lines += ["", f"## {name}", ""]
        if entry["status"] not in ("ok", "collected"):
            lines += [f"**{entry['status']}** (exit code {entry.get('exit_code')}). Output tail:", "", "```",
                      entry.get("output_tail", "").strip()[-1500:], "```"]
            if "stale_result" in entry:
                written = entry["stale_result"]["written_at"]
                lines += ["", f"Previous result (written {written}, NOT from this run):", ""]
                lines += result_tables(entry["stale_result"]["result"])
            continue
        if entry["status"] == "collected":
            lines += [f"Collected from an earlier run (written {entry['written_at']}).", ""]
        lines += result_tables(entry["result"])
    for name, result in report["gpu"].items():
        lines += ["", f"## GPU: {name}", "", "From bench/gpu.sh on a lent GPU machine.", ""]
        lines += result_tables(result)
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--skip", default="", help="comma-separated benchmark names")
    parser.add_argument("--quick", action="store_true", help="small inputs (checks they run)")
    parser.add_argument("--collect-only", action="store_true", help="run nothing; gather the existing JSON")
    parser.add_argument("--timeout-s", type=float, default=3600.0, help="per benchmark")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()

    names = discover()
    only = {n for n in args.only.split(",") if n}
    skip = {n for n in args.skip.split(",") if n}
    unknown = (only | skip) - set(names) - set(EXPECTED)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}; found: {', '.join(names)}")
    selected = [n for n in names if (not only or n in only) and n not in skip]
    RESULTS.mkdir(parents=True, exist_ok=True)
    benchmarks = {
        name: (collect_one(name) if args.collect_only
               else run_one(name, quick=args.quick, timeout_s=args.timeout_s))
        for name in selected
    }
    report = {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "quick": args.quick,
        "benchmarks": benchmarks,
        "missing": [n for n in EXPECTED if n not in names and (not only or n in only)],
        "gpu": gpu_results(),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "results.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out_dir / "results.md").write_text(markdown(report), encoding="utf-8")
    print(f"\nwrote {args.out_dir / 'results.json'} and {args.out_dir / 'results.md'}")
    for name, entry in benchmarks.items():
        print(f"  {name:<16} {entry['status']:<10} {entry.get('wall_s', '')}")
    for name in report["missing"]:
        print(f"  {name:<16} missing")
    failed = [n for n, e in benchmarks.items() if e["status"] not in ("ok", "collected")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
