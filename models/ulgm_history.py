"""How ULGM's label memories move during training: per epoch, a histogram and summary statistics of the
multimodal (human) labels and of the generated text, audio and vision labels over the train split.

Written to a run directory as `ulgm_labels.json` (models/runner.py) and drawn by models/ulgm_figure.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.ulgm import MODES

FORMAT_VERSION = 1
FILE_NAME = "ulgm_labels.json"  # in a run directory
DEFAULT_BINS = 24  # 0.25 wide on MOSI/MOSEI's -3..3, 1 on PHQ-8's 0..24


@dataclass(frozen=True, slots=True)
class ModalityLabels:
    """One modality's label memory at the end of one epoch (task scale)."""

    counts: tuple[int, ...]  # per bin of LabelHistory.bin_edges; values outside the range count in the end bins
    mean: float
    std: float  # population std
    mean_abs_diff_to_m: float  # mean |y_s - y_m| over the train split (0 for fusion)

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": list(self.counts),
            "mean": self.mean,
            "std": self.std,
            "mean_abs_diff_to_m": self.mean_abs_diff_to_m,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModalityLabels:
        return cls(
            tuple(int(c) for c in data["counts"]),
            float(data["mean"]),
            float(data["std"]),
            float(data["mean_abs_diff_to_m"]),
        )


@dataclass(frozen=True, slots=True)
class EpochLabels:
    epoch: int  # 1-based, as the trainer counts
    modalities: dict[str, ModalityLabels]  # keyed by models.ulgm.MODES


@dataclass(slots=True)
class LabelHistory:
    """ULGM's label distributions epoch by epoch, on fixed bins over the task's label range."""

    bin_edges: tuple[float, ...]
    epochs: list[EpochLabels] = field(default_factory=list)

    @classmethod
    def over_range(cls, label_min: float, label_max: float, bins: int = DEFAULT_BINS) -> LabelHistory:
        if not label_min < label_max or bins < 1:
            raise ValueError(f"need label_min < label_max and bins >= 1, got {label_min}, {label_max}, {bins}")
        return cls(tuple(float(e) for e in np.linspace(label_min, label_max, bins + 1)))

    @property
    def label_range(self) -> tuple[float, float]:
        return self.bin_edges[0], self.bin_edges[-1]

    def record(self, epoch: int, labels: dict[str, torch.Tensor]) -> EpochLabels:
        """Add the label memories (`ULGM.state_dict()`: task scale, one value per train sample) after `epoch`."""
        edges = np.asarray(self.bin_edges)
        y_m = labels["fusion"].detach().cpu().double().numpy()
        modalities = {}
        for mode in MODES:
            y = labels[mode].detach().cpu().double().numpy()
            counts, _ = np.histogram(np.clip(y, edges[0], edges[-1]), bins=edges)
            modalities[mode] = ModalityLabels(
                tuple(int(c) for c in counts),
                round(float(y.mean()), 6),
                round(float(y.std()), 6),
                round(float(np.abs(y - y_m).mean()), 6),
            )
        entry = EpochLabels(epoch, modalities)
        self.epochs.append(entry)
        return entry

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "modalities": list(MODES),
            "label_range": list(self.label_range),
            "bin_edges": list(self.bin_edges),
            "epochs": [
                {"epoch": e.epoch, "labels": {m: e.modalities[m].to_dict() for m in MODES}} for e in self.epochs
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelHistory:
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"ULGM label history version {data.get('version')!r}, expected {FORMAT_VERSION}")
        epochs = [
            EpochLabels(int(e["epoch"]), {m: ModalityLabels.from_dict(e["labels"][m]) for m in MODES})
            for e in data["epochs"]
        ]
        return cls(tuple(float(x) for x in data["bin_edges"]), epochs)

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def read(cls, path: str | Path) -> LabelHistory:
        return cls.from_dict(json.loads(Path(path).read_text()))
