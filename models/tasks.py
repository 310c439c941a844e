"""Tasks: the same Self-MM model trained on different targets, each with a declared label range."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.task_metrics import PHQ8_CUTOFF
from models.errors import ModelConfigError

TaskName = Literal["sentiment", "depression"]


@dataclass(frozen=True, slots=True)
class Task:
    """A regression target. ULGM works on labels centred at `label_center` (0 for sentiment, as MMSA)."""

    name: TaskName
    label_min: float
    label_max: float
    label_center: float
    exclude_zero: bool  # centre membership: True = a centred label of exactly 0 belongs to no centre

    def __post_init__(self) -> None:
        if not self.label_min < self.label_center < self.label_max:
            raise ModelConfigError(
                f"task {self.name}: need label_min < label_center < label_max, got "
                f"{self.label_min}, {self.label_center}, {self.label_max}"
            )


def sentiment_task(dataset: str) -> Task:
    """MOSI/MOSEI sentiment is rated -3..3, CH-SIMS -1..1 (MMSA's excludeZero=true)."""
    bound = 1.0 if dataset == "sims" else 3.0
    return Task("sentiment", -bound, bound, 0.0, exclude_zero=True)


def depression_task() -> Task:
    """PHQ-8 total 0..24; centred at the cut-point so ULGM's positive centre means 'depressed' (>= 10)."""
    return Task("depression", 0.0, 24.0, PHQ8_CUTOFF, exclude_zero=False)


def make_task(name: str, dataset: str) -> Task:
    """The task called `name` with the label range that goes with `dataset`."""
    if name == "sentiment":
        return sentiment_task(dataset)
    if name == "depression":
        return depression_task()
    raise ModelConfigError(f"unknown task {name!r}: expected 'sentiment' or 'depression'")
