"""The dataset splits: every labels CSV, MMSA pickle and corpus split names its parts these three ways."""

from __future__ import annotations

from typing import Literal

Split = Literal["train", "valid", "test"]
SPLITS: tuple[Split, ...] = ("train", "valid", "test")
