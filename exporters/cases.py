"""Validation inputs: random cases (batch 1, odd, padded, length 1), real text, and real feature samples."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from exporters.errors import ExportError
from exporters.onnx import INPUT_NAMES, InputCase

# Real sentences of the kind a call carries; tokenised with the bundle's own tokenizer.
REAL_SENTENCES = (
    "Hi.",
    "I have been sleeping badly for the last two weeks and I feel tired all the time.",
    "Honestly, things are going much better since we changed the medication.",
    "I don't know.",
    "It was a really good day, we went to the park with the kids and had a picnic.",
    "Nothing really helps and I can't concentrate at work anymore, everything feels pointless.",
    "Okay, thank you doctor, see you next week.",
)


def _text_rows(lengths: Sequence[int], vocab_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    batch, width = len(lengths), max(lengths)
    ids = np.zeros((batch, width), np.int64)
    mask = np.zeros((batch, width), np.int64)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(1, vocab_size, n)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _frames(lengths: Sequence[int], dim: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros((len(lengths), max(lengths), dim), np.float32)  # zero padding, as MMSA
    for row, n in enumerate(lengths):
        out[row, :n] = rng.standard_normal((n, dim)).astype(np.float32)
    return out


def _case(
    name: str,
    text: dict[str, np.ndarray],
    audio_lengths: Sequence[int],
    vision_lengths: Sequence[int],
    audio_dim: int,
    vision_dim: int,
    rng: np.random.Generator,
) -> InputCase:
    feeds = dict(text)
    feeds["audio"] = _frames(audio_lengths, audio_dim, rng)
    feeds["audio_lengths"] = np.asarray(audio_lengths, np.int64)
    feeds["vision"] = _frames(vision_lengths, vision_dim, rng)
    feeds["vision_lengths"] = np.asarray(vision_lengths, np.int64)
    return InputCase(name, feeds)


def random_cases(
    *, audio_dim: int, vision_dim: int, vocab_size: int, text_max_length: int, seed: int = 0
) -> list[InputCase]:
    """Shapes other than the trace's: batch 1 at length 1, batch 1 full length, odd and padded batches."""
    rng = np.random.default_rng(seed)
    big = min(text_max_length, 50)
    layouts = [  # name, text lengths, audio lengths, vision lengths
        ("random b=1 lengths=1", [1], [1], [1]),
        ("random b=1 full", [big], [97], [23]),
        ("random b=3 padded", [big, 3, max(2, big // 2)], [40, 1, 17], [1, 12, 5]),
        (
            "random b=8 padded",
            [rng.integers(1, big + 1) for _ in range(8)],
            list(rng.integers(1, 120, 8)),
            list(rng.integers(1, 40, 8)),
        ),
    ]
    return [
        _case(
            name,
            _text_rows([int(n) for n in t], vocab_size, rng),
            [int(n) for n in a],
            [int(n) for n in v],
            audio_dim,
            vision_dim,
            rng,
        )
        for name, t, a, v in layouts
    ]


def real_text_cases(
    tokenizer_dir: Path, *, audio_dim: int, vision_dim: int, text_max_length: int, seed: int = 1
) -> list[InputCase]:
    """Real sentences through the bundle's tokenizer, one at a time and as one padded batch."""

    path = tokenizer_dir / "tokenizer.json"
    if not path.is_file():
        raise ExportError(f"{tokenizer_dir}: no tokenizer.json (a fast tokenizer is required)")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(text_max_length)
    tokenizer.no_padding()
    encoded = [tokenizer.encode(s) for s in REAL_SENTENCES]
    rng = np.random.default_rng(seed)
    width = max(len(e.ids) for e in encoded)
    ids = np.zeros((len(encoded), width), np.int64)
    mask = np.zeros_like(ids)
    for row, e in enumerate(encoded):
        ids[row, : len(e.ids)] = e.ids
        mask[row, : len(e.ids)] = 1
    text = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    n = len(encoded)
    batch = _case(
        "real text b=7 padded",
        text,
        list(rng.integers(1, 150, n)),
        list(rng.integers(1, 50, n)),
        audio_dim,
        vision_dim,
        rng,
    )
    single = {k: v[1:2, : len(encoded[1].ids)] for k, v in text.items()}
    return [batch, _case("real text b=1", single, [80], [30], audio_dim, vision_dim, rng)]


def sample_cases(path: Path, *, limit: int = 16) -> list[InputCase]:
    """Real feature samples: an .npz holding the seven inputs, or an MMSA pickle (its test split)."""
    if path.suffix == ".npz":
        with np.load(path) as data:
            missing = [n for n in INPUT_NAMES if n not in data]
            if missing:
                raise ExportError(f"{path}: missing arrays {', '.join(missing)}")
            feeds = {n: np.asarray(data[n][:limit]) for n in INPUT_NAMES}
    else:
        feeds = _mmsa_feeds(path, limit)
    feeds = {n: v.astype(np.float32 if n in ("audio", "vision") else np.int64) for n, v in feeds.items()}
    return [
        InputCase(f"samples {path.name} b={len(feeds['input_ids'])}", feeds),
        InputCase(f"samples {path.name} b=1", {n: v[:1] for n, v in feeds.items()}),
    ]


def _mmsa_feeds(path: Path, limit: int) -> dict[str, np.ndarray]:
    try:
        with open(path, "rb") as handle:
            split = pickle.load(handle)["test"]
        text = np.asarray(split["text_bert"][:limit], np.float32)  # [N, 3, L]
        audio = np.nan_to_num(np.asarray(split["audio"][:limit], np.float32), neginf=0.0)
        vision = np.asarray(split["vision"][:limit], np.float32)
        audio_lengths = np.asarray(split["audio_lengths"][:limit], np.int64).clip(1, audio.shape[1])
        vision_lengths = np.asarray(split["vision_lengths"][:limit], np.int64).clip(1, vision.shape[1])
    except (OSError, KeyError, pickle.UnpicklingError, ValueError) as exc:
        raise ExportError(f"{path}: not an MMSA dataset pickle ({type(exc).__name__}: {exc})") from None
    return {
        "input_ids": text[:, 0].astype(np.int64),
        "attention_mask": text[:, 1].astype(np.int64),
        "token_type_ids": text[:, 2].astype(np.int64),
        "audio": audio,
        "audio_lengths": audio_lengths,
        "vision": vision,
        "vision_lengths": vision_lengths,
    }
