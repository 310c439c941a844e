"""Evaluation reports people can read: report.json, report.md (tables) and PNG plots; `--compare` of two runs.

Two runs are compared window by window, aligned by (stream key, seq): how many windows each has, how far the
aligned windows' boundaries and scores differ, and both runs' metrics side by side.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from agent.evaluate import MATCHING_RULE, MIN_OVERLAP_FRACTION, Evaluation, WindowScore
from agent.report_plots import plot_scatter, plot_segment_table, plot_timelines

log = logging.getLogger(__name__)

BOUNDARY_TOLERANCE_S = 0.04  # aligned windows whose start or end differ by more are "moved"


def compare_windows(a: list[WindowScore], b: list[WindowScore]) -> dict[str, Any]:
    """Per-window alignment of two runs by (stream key, seq): counts, boundary and score differences."""
    index_a = {(w.stream_key, w.seq): w for w in a}
    index_b = {(w.stream_key, w.seq): w for w in b}
    both = sorted(set(index_a) & set(index_b))
    boundary = [max(abs(index_a[k].start_s - index_b[k].start_s), abs(index_a[k].end_s - index_b[k].end_s))
                for k in both]
    score = [abs(index_a[k].outputs["m"] - index_b[k].outputs["m"]) for k in both]
    return {
        "windows_a": len(a),
        "windows_b": len(b),
        "aligned": len(both),
        "only_a": [list(k) for k in sorted(set(index_a) - set(index_b))],
        "only_b": [list(k) for k in sorted(set(index_b) - set(index_a))],
        "max_boundary_diff_s": round(max(boundary, default=0.0), 6),
        "moved_windows": sum(1 for d in boundary if d > BOUNDARY_TOLERANCE_S),
        "boundary_tolerance_s": BOUNDARY_TOLERANCE_S,
        "max_abs_m_diff": max(score, default=0.0),
        "mean_abs_m_diff": sum(score) / len(score) if score else 0.0,
        "identical_scores": bool(both) and all(d == 0.0 for d in score) and len(both) == len(a) == len(b),
    }


def run_dict(run: Evaluation) -> dict[str, Any]:
    return {
        "name": run.name,
        "task": run.task,
        "metric_set": run.task if run.task == "depression" else f"MMSA regression ({run.dataset})",
        "counts": {
            "windows": len(run.windows),
            "matched_windows": run.matched_windows,
            "segments": len(run.results),
            "matched_segments": run.matched_segments,
        },
        "metrics": run.metrics,
        "latency_ms": run.latency_ms,
        "segments": [
            {
                "file": r.segment.file, "line": r.segment.line, "start_s": r.segment.start_s,
                "end_s": r.segment.end_s if math.isfinite(r.segment.end_s) else None,
                "labels": r.segment.labels, "predictions": r.predictions,
                "windows": [{"stream": w.stream_key, "seq": w.seq, "overlap_s": round(o, 4)}
                            for w, o in r.windows],
            }
            for r in run.results
        ],  # fmt: skip
    }


def build_report(
    run: Evaluation, *, sources: dict[str, str], other: Evaluation | None = None
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "sources": sources,
        "matching_rule": MATCHING_RULE,
        "min_overlap_fraction": MIN_OVERLAP_FRACTION,
        "run": run_dict(run),
    }
    if other is not None:
        report["compare"] = {"run": run_dict(other), "windows": compare_windows(run.windows, other.windows)}
    return report


def write_report(
    run: Evaluation, out_dir: Path, *, sources: dict[str, str], other: Evaluation | None = None
) -> dict[str, Any]:
    """Write report.json, report.md and the PNGs into out_dir; returns the report (with plot paths)."""

    out_dir.mkdir(parents=True, exist_ok=True)
    report = build_report(run, sources=sources, other=other)
    plots = [*plot_timelines(run, out_dir, other), plot_scatter(run, out_dir)]
    plots.append(plot_segment_table(run, out_dir))
    report["plots"] = [p.name for p in plots]
    (out_dir / "report.json").write_text(json.dumps(_json_safe(report), indent=2) + "\n", encoding="utf-8")
    (out_dir / "report.md").write_text(markdown(report), encoding="utf-8")
    return report


def _json_safe(value: Any) -> Any:
    """NaN and infinity (e.g. a correlation over one segment) become null: JSON cannot carry them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def markdown(report: dict[str, Any]) -> str:
    run = report["run"]
    other = report.get("compare", {}).get("run")
    lines = [f"# Evaluation: {run['name']}", ""]
    lines += [f"- {name}: `{path}`" for name, path in report["sources"].items()]
    lines += [f"- task: {run['task']}; metrics: {run['metric_set']}",
              f"- matching: {report['matching_rule']}", ""]
    lines += ["## Counts", "", _table(["", *_names(run, other)],
              [[k, *[str(r["counts"][k]) for r in _runs(run, other)]] for k in run["counts"]]), ""]
    lines += ["## Metrics", ""]
    for head in run["metrics"]:
        title = "multimodal (M)" if head == "m" else f"unimodal {head.upper()} vs label_{head.upper()}"
        names = list(run["metrics"][head])
        rows = [[n, *[_fmt(r["metrics"].get(head, {}).get(n)) for r in _runs(run, other)]] for n in names]
        lines += [f"### {title}", "", _table(["metric", *_names(run, other)], rows), ""]
    lines += ["## Latency (ms per window)", ""]
    for r in _runs(run, other):
        rows = [[stage, *[_fmt(s[k]) for k in ("p50", "p95", "max", "mean")]]
                for stage, s in r["latency_ms"].items()]
        lines += [f"### {r['name']}", "", _table(["stage", "p50", "p95", "max", "mean"], rows), ""]
    lines += ["## Segments", "", _segment_table(run, other), ""]
    if "compare" in report:
        lines += _compare_lines(report["compare"]["windows"], run["name"], other["name"])
    if report.get("plots"):
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in report["plots"]] + [""]
    return "\n".join(lines)


def _runs(run: dict[str, Any], other: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [run] if other is None else [run, other]


def _names(run: dict[str, Any], other: dict[str, Any] | None) -> list[str]:
    return [r["name"] for r in _runs(run, other)]


def _segment_table(run: dict[str, Any], other: dict[str, Any] | None) -> str:
    header = ["file", "start_s", "end_s", "label", *[f"pred {n}" for n in _names(run, other)], "windows"]
    rows = []
    for index, seg in enumerate(run["segments"]):
        preds = [_fmt(r["segments"][index]["predictions"].get("m")) for r in _runs(run, other)]
        end = "end" if seg["end_s"] is None else f"{seg['end_s']:.3f}"
        rows.append([seg["file"], f"{seg['start_s']:.3f}", end, _fmt(seg["labels"]["m"]), *preds,
                     str(len(seg["windows"]))])
    return _table(header, rows)


def _compare_lines(diff: dict[str, Any], a: str, b: str) -> list[str]:
    rows = [["windows", str(diff["windows_a"]), str(diff["windows_b"])],
            ["only in this run", str(len(diff["only_a"])), str(len(diff["only_b"]))]]
    return [
        f"## Compare: {a} vs {b}", "", _table(["", a, b], rows), "",
        f"- aligned windows (same stream and seq): {diff['aligned']}",
        f"- largest boundary difference: {diff['max_boundary_diff_s'] * 1000:.1f} ms; windows moved by more "
        f"than {diff['boundary_tolerance_s'] * 1000:.0f} ms: {diff['moved_windows']}",
        f"- |ΔM| mean {diff['mean_abs_m_diff']:.6f}, max {diff['max_abs_m_diff']:.6f}; identical scores: "
        f"{'yes' if diff['identical_scores'] else 'no'}", "",
    ]


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)
