"""The ULGM figure: one histogram panel per epoch (rows) and unimodal label (text, audio, vision columns), the
multimodal labels' histogram drawn behind each as an outline, like the paper's figure of generated labels."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models.ulgm_history import FILE_NAME, EpochLabels, LabelHistory

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

FIGURE_NAME = "ulgm_labels.png"  # in a run directory, beside models.ulgm_history.FILE_NAME
UNIMODAL = ("text", "audio", "vision")
COLOR_OF = {"text": "tab:blue", "audio": "tab:orange", "vision": "tab:green"}
MAX_ROWS = 12  # a long run shows this many epochs, evenly spaced, first and last included (the JSON has all)


def shown_epochs(history: LabelHistory, max_rows: int = MAX_ROWS) -> list[EpochLabels]:
    """All epochs, or `max_rows` of them evenly spaced from the first to the last."""
    epochs = history.epochs
    if len(epochs) <= max_rows:
        return list(epochs)
    picks = np.unique(np.round(np.linspace(0, len(epochs) - 1, max_rows)).astype(int))
    return [epochs[i] for i in picks]


def panel_title(epoch: int, modality: str) -> str:
    return f"epoch {epoch}: {modality}"


def draw_label_history(history: LabelHistory, *, max_rows: int = MAX_ROWS, title: str = "") -> Figure:
    """A figure with rows = shown epochs, columns = text/audio/vision (axes in row-major order)."""
    # matplotlib's object API without pyplot: no global figure state, no display backend needed
    from matplotlib.figure import Figure

    epochs = shown_epochs(history, max_rows)
    if not epochs:
        raise ValueError("the label history has no epochs to draw")
    edges = np.asarray(history.bin_edges)
    low, high = history.label_range
    fig = Figure(figsize=(9.0, 0.4 + 1.6 * len(epochs)), dpi=100, layout="constrained")
    axes = fig.subplots(len(epochs), len(UNIMODAL), sharex=True, sharey=True, squeeze=False)
    for row, entry in zip(axes, epochs, strict=True):
        fusion = entry.modalities["fusion"]
        for ax, modality in zip(row, UNIMODAL, strict=True):
            labels = entry.modalities[modality]
            ax.stairs(fusion.counts, edges, color="black", linewidth=1.0, zorder=1, label="multimodal $y_m$")
            ax.stairs(
                labels.counts,
                edges,
                fill=True,
                color=COLOR_OF[modality],
                alpha=0.6,
                zorder=2,
                label=f"generated $y_{modality[0]}$",
            )
            ax.set_title(panel_title(entry.epoch, modality), fontsize=9)
            stats = f"mean {labels.mean:+.2f}\nmean $|y_{modality[0]} - y_m|$ {labels.mean_abs_diff_to_m:.2f}"
            ax.text(0.02, 0.95, stats, transform=ax.transAxes, va="top", fontsize=7)
            ax.set_xlim(low, high)
            ax.tick_params(labelsize=7)
    for ax in axes[0]:
        ax.legend(fontsize=7, loc="upper right", frameon=False)
    for ax in axes[-1]:
        ax.set_xlabel("label", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("train samples", fontsize=8)
    n_train = sum(epochs[0].modalities["fusion"].counts)
    fig.suptitle(title or f"ULGM labels per epoch (train split, {n_train} samples)", fontsize=10)
    return fig


def save_label_figure(history: LabelHistory, path: str | Path, *, max_rows: int = MAX_ROWS, title: str = "") -> Path:
    """Draw the label history into a PNG at `path`."""
    path = Path(path)
    draw_label_history(history, max_rows=max_rows, title=title).savefig(path)
    return path


def write_label_files(history: LabelHistory, out_dir: str | Path) -> list[Path]:
    """`ulgm_labels.json` and, where matplotlib is installed, `ulgm_labels.png` in a run directory."""
    out_dir = Path(out_dir)
    written = [history.write(out_dir / FILE_NAME)]
    if not history.epochs:
        return written
    try:
        written.append(save_label_figure(history, out_dir / FIGURE_NAME))
    except ImportError:  # matplotlib comes with mediapipe in every install, but is declared only by [eval]
        log.warning("matplotlib is not installed: %s not drawn (pip install 'affectstream[eval]')", FIGURE_NAME)
    return written
