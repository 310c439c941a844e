"""The labels CSV: labelled segments of recordings, read by the dataset builder and by evaluation.

Columns: ``file`` (relative to the recordings directory), ``start_s`` (empty = 0), ``end_s`` (empty = to the
end of the file), ``label``, optional ``label_T``/``label_A``/``label_V`` (unimodal labels), optional
``text`` (else Whisper transcribes), ``split`` (train/valid/test; needed only to build a dataset) and
optional ``clip_id`` (default: the segment's number within its file). Every problem is a LabelsError that
names the file, line and column.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from core.errors import ConfigError
from core.splits import SPLITS, Split
from core.text_input import read_text

REQUIRED_COLUMNS = ("file", "start_s", "end_s", "label")


class LabelsError(ConfigError):
    """A labels CSV that cannot be used; the message names the file, line and column."""


@dataclass(frozen=True, slots=True)
class LabelRow:
    """One labelled segment: one line of the CSV."""

    line: int  # in the CSV (header = 1), for error messages
    file: str
    start_s: float
    end_s: float  # math.inf = to the end of the file
    label: float
    clip_id: str
    label_t: float | None = None
    label_a: float | None = None
    label_v: float | None = None
    text: str | None = None
    split: Split | None = None  # None unless read for a dataset (read_labels(..., with_split=True))

    @property
    def video_id(self) -> str:
        return video_id_of(self.file)

    @property
    def id(self) -> str:
        """MMSA's sample id: "<video_id>$_$<clip_id>"."""
        return f"{self.video_id}$_${self.clip_id}"

    @property
    def labels(self) -> dict[str, float]:
        """Head (m = multimodal; t, a, v = unimodal) -> label, for the heads this row labels."""
        heads = {"m": self.label, "t": self.label_t, "a": self.label_a, "v": self.label_v}
        return {head: value for head, value in heads.items() if value is not None}


def video_id_of(file: str) -> str:
    """MMSA's video id of a recording: its path without the extension."""
    return str(Path(file).with_suffix("")).replace("\\", "/")


def read_labels(path: Path, *, with_split: bool = False) -> list[LabelRow]:
    """Parse and check a labels CSV; `with_split`: every row must name its split (to build a dataset)."""
    if not path.is_file():
        raise LabelsError(f"labels file not found: {path}")
    required = (*REQUIRED_COLUMNS, "split") if with_split else REQUIRED_COLUMNS
    with io.StringIO(read_text(path, "labels file"), newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            have = list(reader.fieldnames or [])
            missing = [c for c in required if c not in have]
            if missing:
                raise LabelsError(f"{path}: labels CSV lacks column(s) {', '.join(missing)}; add the missing "
                                  f"column(s) (have {', '.join(map(repr, have)) or 'none'})")  # fmt: skip
            counters: dict[str, int] = {}
            rows = [_row(raw, line, f"{path}:{line}", counters, with_split)
                    for line, raw in enumerate(reader, start=2)]  # fmt: skip
        except csv.Error as exc:  # e.g. a NUL byte, an unterminated quote at the end of the file
            raise LabelsError(f"{path}:{reader.line_num}: not a CSV line ({exc})") from None
    if not rows:
        raise LabelsError(f"{path}: no labelled segments (no rows after the header)")
    ids = [r.id for r in rows]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise LabelsError(f"{path}: id {duplicate!r} appears twice (file + clip_id must be unique)")
    return rows


def _row(raw: dict[str, str], line: int, where: str, counters: dict[str, int], with_split: bool) -> LabelRow:
    file = (raw.get("file") or "").strip()
    if not file:
        raise LabelsError(f"{where}: column file is empty")
    start_s = _number(raw, "start_s", where) or 0.0
    end_s = _number(raw, "end_s", where)
    if start_s < 0 or (end_s is not None and end_s <= start_s):
        raise LabelsError(f"{where}: need 0 <= start_s < end_s, got start_s={start_s} end_s={end_s}")
    split = (raw.get("split") or "").strip().lower()
    if with_split and split not in SPLITS:
        raise LabelsError(f"{where}: split must be one of {', '.join(SPLITS)}, got {raw.get('split')!r}")
    label = _number(raw, "label", where, required=True)
    assert label is not None
    text = (raw.get("text") or "").strip()
    video = video_id_of(file)
    counters[video] = counters.get(video, 0) + 1
    return LabelRow(
        line=line, file=file, start_s=start_s, end_s=math.inf if end_s is None else end_s, label=label,
        clip_id=(raw.get("clip_id") or "").strip() or str(counters[video]),
        label_t=_number(raw, "label_T", where), label_a=_number(raw, "label_A", where),
        label_v=_number(raw, "label_V", where), text=text or None,
        split=cast(Split, split) if with_split else None,
    )  # fmt: skip


def _number(raw: dict[str, str], column: str, where: str, *, required: bool = False) -> float | None:
    text = (raw.get(column) or "").strip()
    if not text:
        if required:
            raise LabelsError(f"{where}: column {column} is empty")
        return None
    try:
        value = float(text)
    except ValueError:
        raise LabelsError(f"{where}: column {column} is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise LabelsError(f"{where}: column {column} is not finite: {text!r}")
    return value
