"""MMSA "standard" pickle layout (docs/selfmm.md §6) of dataset-builder samples.

Top level ``{"train", "valid", "test"}`` (all present, maybe empty). Per split: ``raw_text``, ``id``
("<video_id>$_$<clip_id>"), ``text`` (zero placeholder, see below), ``text_bert`` float32 [N, 3, L]
([CLS] ... [SEP] then zeros; rows ids / mask / type ids), ``audio`` float32 [N, Ta, Da] and ``vision``
float32 [N, Tv, Dv] zero-padded at the end to the longest segment of the whole set, ``audio_lengths`` and
``vision_lengths`` int64 [N], ``annotations`` (Negative/Neutral/Positive by the label's sign),
``classification_labels`` int64 0/1/2, ``regression_labels`` float32 [N] and ``regression_labels_T/A/V``.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.features import FeatureSpec
from core.labels import LabelRow
from core.splits import SPLITS


@dataclass(frozen=True, slots=True)
class Sample:
    """One labelled segment's model inputs (what this module lays out)."""

    row: LabelRow
    raw_text: str
    input_ids: np.ndarray  # int64 [n <= L]
    audio: np.ndarray  # float32 [Ta, Da]
    vision: np.ndarray  # float32 [Tv, Dv]
    speech_ratio: float
    face_visible_ratio: float


def _annotation(label: float) -> tuple[str, int]:
    if label < 0:
        return "Negative", 0
    return ("Neutral", 1) if label == 0 else ("Positive", 2)


def _pad(arrays: list[np.ndarray], length: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad (or cut) [T, D] arrays at the end: float32 [N, length, dim] and int64 lengths [N]."""
    out = np.zeros((len(arrays), length, dim), dtype=np.float32)
    lengths = np.zeros(len(arrays), dtype=np.int64)
    for i, array in enumerate(arrays):
        n = min(len(array), length)
        out[i, :n] = array[:n]
        lengths[i] = n
    return out, lengths


def assemble_split(
    samples: list[Sample], spec: FeatureSpec, *, audio_len: int, vision_len: int, text_width: int
) -> dict[str, object]:
    """One split in MMSA layout (docs/selfmm.md §6)."""
    n, length = len(samples), spec.text_max_length
    text_bert = np.zeros((n, 3, length), dtype=np.float32)  # rows: input_ids, mask, type ids; zero-padded
    for i, sample in enumerate(samples):
        k = len(sample.input_ids)
        text_bert[i, 0, :k] = sample.input_ids
        text_bert[i, 1, :k] = 1.0
    audio, audio_lengths = _pad([s.audio for s in samples], audio_len, spec.audio_dim)
    vision, vision_lengths = _pad([s.vision for s in samples], vision_len, spec.vision_dim)
    labels = np.array([s.row.label for s in samples], dtype=np.float32)
    split: dict[str, object] = {
        "raw_text": [s.raw_text for s in samples],
        "id": [s.row.id for s in samples],
        # MMSA's frozen-BERT token features. Self-MM (use_bert) reads text_bert and never this array, so it is
        # a zero placeholder: [N, L, hidden] (or [N, L, 1] with compact_text) rather than hours of BERT runs.
        "text": np.zeros((n, length, text_width), dtype=np.float32),
        "text_bert": text_bert,
        "audio": audio,
        "vision": vision,
        "audio_lengths": audio_lengths,
        "vision_lengths": vision_lengths,
        "annotations": [_annotation(float(y))[0] for y in labels],
        "classification_labels": np.array([_annotation(float(y))[1] for y in labels], dtype=np.int64),
        "regression_labels": labels,
    }
    for key, attr in (("T", "label_t"), ("A", "label_a"), ("V", "label_v")):
        # Missing unimodal labels fall back to the multimodal one (what ULGM starts from), as documented.
        values = [getattr(s.row, attr) for s in samples]
        split[f"regression_labels_{key}"] = np.array(
            [s.row.label if v is None else v for s, v in zip(samples, values, strict=True)], dtype=np.float32
        )
    return split


def assemble(
    samples: list[Sample],
    spec: FeatureSpec,
    *,
    text_width: int,
    audio_cap: int | None = None,
    vision_cap: int | None = None,
) -> dict[str, dict[str, object]]:
    """The whole pickle: train/valid/test (each present, maybe empty), padded to common lengths."""
    audio_len = max((len(s.audio) for s in samples), default=1)
    vision_len = max((len(s.vision) for s in samples), default=1)
    audio_len = min(audio_len, audio_cap or audio_len)  # a cap cuts longer segments (lengths say so)
    vision_len = min(vision_len, vision_cap or vision_len)
    return {
        name: assemble_split(
            [s for s in samples if s.row.split == name],
            spec,
            audio_len=audio_len,
            vision_len=vision_len,
            text_width=text_width,
        )  # fmt: skip
        for name in SPLITS
    }


def write_pickle(data: dict[str, dict[str, object]], out: Path) -> None:
    """Write atomically: a crash never leaves a half-written pickle under the final name."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with open(partial, "wb") as handle:
        pickle.dump(data, handle, protocol=4)
    os.replace(partial, out)
