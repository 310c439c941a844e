"""MMSA 'standard' pickles (docs/selfmm.md §6): a validating reader and a torch Dataset that also yields the index."""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from core.splits import SPLITS
from models.errors import DatasetError

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("id", "text_bert", "audio", "vision", "audio_lengths", "vision_lengths", "regression_labels")


@dataclass(frozen=True, slots=True)
class MMSASplit:
    """One split, with MMSA's loader conversions applied (float32, audio -inf -> 0)."""

    ids: tuple[str, ...]
    text_bert: np.ndarray  # float32 [N, 3, L]: input_ids, attention mask, token type ids
    audio: np.ndarray  # float32 [N, Ta, Da]
    vision: np.ndarray  # float32 [N, Tv, Dv]
    audio_lengths: np.ndarray  # int64 [N]
    vision_lengths: np.ndarray  # int64 [N]
    labels: np.ndarray  # float32 [N], regression_labels (y_m)
    unimodal_labels: dict[str, np.ndarray]  # human T/A/V labels where a dataset has them (NaN: none)
    # bool [N], ours: False where a row's text says nothing of its label (CREMA-D's twelve neutral sentences,
    # read in six emotions); MMSA pickles lack it (every row True)
    text_labelled: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def audio_dim(self) -> int:
        return int(self.audio.shape[2])

    @property
    def vision_dim(self) -> int:
        return int(self.vision.shape[2])


def _array(raw: dict[str, Any], key: str, where: str, ndim: int) -> np.ndarray:
    try:
        array = np.asarray(raw[key], dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DatasetError(where, f"{key} is not numeric ({exc})") from None
    if array.ndim != ndim:
        raise DatasetError(where, f"{key} must have {ndim} dimensions, got shape {array.shape}")
    return array


def _lengths(raw: dict[str, Any], key: str, where: str, max_len: int) -> np.ndarray:
    lengths = np.asarray(raw[key]).reshape(-1)
    if lengths.size and not np.all(np.equal(np.mod(lengths, 1), 0)):
        raise DatasetError(where, f"{key} must be integers")
    lengths = lengths.astype(np.int64)
    bad = np.flatnonzero((lengths < 1) | (lengths > max_len))
    if bad.size:
        raise DatasetError(
            where, f"{key} must be in 1..{max_len} (the padded length); {bad.size} samples are not, "
            f"first at index {int(bad[0])} (value {int(lengths[bad[0]])})"
        )
    return lengths


def parse_split(raw: dict[str, Any], where: str) -> MMSASplit:
    """Validate one split dict of an MMSA pickle and convert it like MMSA's MMDataset."""
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise DatasetError(where, f"missing keys {', '.join(missing)}")
    text = _array(raw, "text_bert", where, 3)
    audio = _array(raw, "audio", where, 3)
    vision = _array(raw, "vision", where, 3)
    labels = _array(raw, "regression_labels", where, 1) if np.ndim(raw["regression_labels"]) == 1 else (
        _array(raw, "regression_labels", where, 2).reshape(-1)
    )
    n = len(labels)
    sizes = {"text_bert": len(text), "audio": len(audio), "vision": len(vision), "id": len(raw["id"]),
             "audio_lengths": len(raw["audio_lengths"]), "vision_lengths": len(raw["vision_lengths"])}
    wrong = {k: v for k, v in sizes.items() if v != n}
    if wrong:
        raise DatasetError(where, f"{n} labels but {wrong} samples")
    if text.shape[1] != 3:
        raise DatasetError(where, f"text_bert must be [N, 3, L], got {text.shape}")
    audio[audio == -np.inf] = 0  # MMSA's loader does exactly this
    for key, array in (("audio", audio), ("vision", vision), ("regression_labels", labels)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise DatasetError(where, f"{key} has {bad} non-finite values (NaN or inf)")
    unimodal = {m: np.asarray(raw[f"regression_labels_{m}"], dtype=np.float32).reshape(-1)
                for m in "TAV" if f"regression_labels_{m}" in raw}
    text_labelled = np.asarray(raw.get("text_labelled", np.ones(n, dtype=bool)), dtype=bool).reshape(-1)
    if len(text_labelled) != n:
        raise DatasetError(where, f"{n} labels but {len(text_labelled)} text_labelled flags")
    return MMSASplit(
        ids=tuple(str(i) for i in raw["id"]), text_bert=text, audio=audio, vision=vision,
        audio_lengths=_lengths(raw, "audio_lengths", where, audio.shape[1]),
        vision_lengths=_lengths(raw, "vision_lengths", where, vision.shape[1]),
        labels=labels, unimodal_labels=unimodal, text_labelled=text_labelled,
    )


def load_mmsa_pickle(path: str | Path, splits: tuple[str, ...] = SPLITS) -> dict[str, MMSASplit]:
    """Read an MMSA processed pickle (unaligned_50.pkl, unaligned_39.pkl, MMSA-FET output)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = pickle.load(f)
    except FileNotFoundError:
        raise DatasetError(str(path), "file not found") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        raise DatasetError(str(path), f"not a readable pickle ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetError(str(path), f"expected a dict of splits, got {type(data).__name__}")
    missing = [s for s in splits if s not in data]
    if missing:
        present = ", ".join(map(str, data))
        raise DatasetError(str(path), f"missing splits {', '.join(missing)} (has {present})")
    result = {s: parse_split(data[s], f"{path}[{s}]") for s in splits}
    dims = {(v.audio_dim, v.vision_dim, v.text_bert.shape[2]) for v in result.values()}
    if len(dims) > 1:
        raise DatasetError(str(path), f"splits disagree on (audio dim, vision dim, text length): {dims}")
    log.info("loaded %s: %s", path, ", ".join(f"{s}={len(v)}" for s, v in result.items()))
    return result


class MMSADataset(Dataset[dict[str, Any]]):
    """Samples as named tensors for SelfMM.forward, plus `index` (ULGM memory slot), `label` and `id`."""

    def __init__(self, split: MMSASplit) -> None:
        self.split = split
        self._text = torch.from_numpy(split.text_bert)
        self._audio = torch.from_numpy(split.audio)
        self._vision = torch.from_numpy(split.vision)
        self._labels = torch.from_numpy(split.labels)
        self._unimodal = {m: torch.from_numpy(v) for m, v in split.unimodal_labels.items()}
        labelled = split.text_labelled if split.text_labelled is not None else np.ones(len(split), dtype=bool)
        self._text_labelled = torch.from_numpy(np.asarray(labelled, dtype=bool))

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict[str, Any]:
        text = self._text[index]
        return {
            "index": index,
            "id": self.split.ids[index],
            "input_ids": text[0].long(),
            "attention_mask": text[1].long(),
            "token_type_ids": text[2].long(),
            "audio": self._audio[index],
            "audio_lengths": int(self.split.audio_lengths[index]),
            "vision": self._vision[index],
            "vision_lengths": int(self.split.vision_lengths[index]),
            "label": self._labels[index],
            "text_labelled": self._text_labelled[index],
            **{f"label_{m}": values[index] for m, values in self._unimodal.items()},  # NaN: no human label
        }


MODEL_INPUTS = (
    "input_ids", "attention_mask", "token_type_ids", "audio", "audio_lengths", "vision", "vision_lengths",
)


def model_inputs(batch: dict[str, Any], device: torch.device, *, trim: bool = False) -> dict[str, torch.Tensor]:
    """The forward() arguments of a collated batch, on `device`.

    trim: cut text, audio and vision to the batch's longest. The positions cut are padding that the attention
    mask and the lengths already exclude, so outputs are the same and the encoder no longer pays for the
    dataset's longest sentence; but dropout then draws its random masks over smaller tensors, so a training
    run no longer follows MMSA's random trajectory step for step (off by default for that parity)."""
    inputs = {k: batch[k] for k in MODEL_INPUTS}
    if trim:
        used = inputs["attention_mask"].any(dim=0).nonzero()
        text_len = int(used.max()) + 1 if len(used) else 1
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            inputs[name] = inputs[name][:, :text_len]
        for name in ("audio", "vision"):
            inputs[name] = inputs[name][:, : max(1, int(inputs[f"{name}_lengths"].max()))]
    return {k: v.to(device) for k, v in inputs.items()}
