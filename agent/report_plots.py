"""PNG plots of an evaluation (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from agent.evaluate import Evaluation, SegmentResult, WindowScore
from agent.file_source import call_id_candidates, id_part
from core.errors import ConfigError

log = logging.getLogger(__name__)


def _pyplot():  # type: ignore[no-untyped-def]
    # matplotlib takes ~0.5 s to import and is an optional extra (affectstream[eval]): only plots pay for it
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("evaluation plots need matplotlib: pip install 'affectstream[eval]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_timelines(run: Evaluation, out_dir: Path, other: Evaluation | None = None) -> list[Path]:
    """One PNG per recording: the M score of every window over media time, labelled segments shaded."""
    paths = []
    for call_id in sorted({w.call_id for w in run.windows}):
        windows = [w for w in run.windows if w.call_id == call_id]
        results = [r for r in run.results if call_id in call_id_candidates(r.segment.file)]
        others = [w for w in other.windows if w.call_id == call_id] if other is not None else []
        path = out_dir / f"timeline_{id_part(call_id)}.png"
        _timeline(path, call_id, windows, results, run.name, others, other.name if other else "")
        paths.append(path)
    return paths


def _timeline(path: Path, title: str, windows: list[WindowScore], results: list[SegmentResult],
              name: str, others: list[WindowScore], other_name: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 3.6), dpi=100)
    low, high = windows[0].label_min, windows[0].label_max
    for result in results:
        seg = result.segment
        end_s = seg.end_s if math.isfinite(seg.end_s) else max(w.end_s for w in windows)
        label = seg.labels["m"]
        color = "tab:green" if label > 0 else "tab:red" if label < 0 else "tab:gray"
        ax.axvspan(seg.start_s, end_s, color=color, alpha=0.15, lw=0)
        ax.axvline(seg.start_s, color="gray", lw=0.6, ls=":")  # boundaries stay visible between equal labels
        ax.hlines(label, seg.start_s, end_s, colors=color, linestyles="dashed", lw=1.5)
        ax.text((seg.start_s + end_s) / 2, high, f"{label:+.2f}", ha="center", va="top", fontsize=8)
    _windows(ax, windows, "tab:blue", f"{name} (M per window)", width=5.0)
    if others:  # drawn thinner on top, so identical windows of both runs stay visible
        _windows(ax, others, "tab:orange", f"{other_name} (M per window)", width=1.5)
    ax.axhline(0.0, color="black", lw=0.5)
    ax.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
    ax.set_xlabel("media time (s)")
    ax.set_ylabel("score")
    ax.set_title(f"{title}: scores vs labelled segments (dashed, shaded)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _windows(ax, windows: list[WindowScore], color: str, label: str, width: float) -> None:  # type: ignore[no-untyped-def]
    for index, window in enumerate(windows):
        ax.hlines(window.outputs["m"], window.start_s, window.end_s, colors=color, lw=width,
                  label=label if index == 0 else None)
    ax.plot([(w.start_s + w.end_s) / 2 for w in windows], [w.outputs["m"] for w in windows], "o",
            color=color, ms=3)


def plot_scatter(run: Evaluation, out_dir: Path) -> Path:
    """Predicted (segment M) against true label, with the identity line."""
    plt = _pyplot()
    pairs = [(r.segment.labels["m"], r.predictions["m"]) for r in run.results if "m" in r.predictions]
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    low, high = run.windows[0].label_min, run.windows[0].label_max
    ax.plot([low, high], [low, high], color="gray", lw=1, ls="--", label="prediction = label")
    ax.scatter([p[0] for p in pairs], [p[1] for p in pairs], color="tab:blue", s=28, label="segment")
    margin = 0.05 * (high - low)
    ax.set_xlim(low - margin, high + margin)
    ax.set_ylim(low - margin, high + margin)
    ax.set_xlabel("label")
    ax.set_ylabel("prediction (duration-weighted M)")
    ax.set_title(f"{run.name}: predicted vs true ({len(pairs)} segments)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = out_dir / "scatter.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_segment_table(run: Evaluation, out_dir: Path, max_rows: int = 40) -> Path:
    """The per-segment table as an image (the full table is in report.md)."""
    plt = _pyplot()
    rows = [
        [Path(r.segment.file).name[:36], f"{r.segment.start_s:.2f}", _end(r.segment.end_s),
         f"{r.segment.labels['m']:+.3f}", f"{r.predictions['m']:+.3f}" if "m" in r.predictions else "-",
         str(len(r.windows))]
        for r in run.results[:max_rows]
    ]  # fmt: skip
    fig, ax = plt.subplots(figsize=(9, 0.9 + 0.28 * len(rows)), dpi=100)
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=["file", "start_s", "end_s", "label", "prediction", "windows"],
                     loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(6)))
    ax.set_title(f"{run.name}: per-segment predictions", fontsize=10)
    fig.tight_layout()
    path = out_dir / "segments.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def _end(end_s: float) -> str:
    return f"{end_s:.2f}" if math.isfinite(end_s) else "end"
