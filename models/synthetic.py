"""Synthetic data for tests and benchmarks: valid MMSA pickles and a tiny random BERT directory."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig, BertModel

from core.splits import SPLITS

# A label function gets (input_ids [N,L] int, audio [N,Ta,Da], audio_lengths [N], vision [N,Tv,Dv],
# vision_lengths [N]) and returns float labels [N].
LabelFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def mean_feature_label(
    input_ids: np.ndarray, audio: np.ndarray, audio_lengths: np.ndarray,
    vision: np.ndarray, vision_lengths: np.ndarray,
) -> np.ndarray:
    """Default label: a squashed sum of the mean of audio feature 0 and vision feature 0 over valid frames."""
    a = np.array([audio[i, : audio_lengths[i], 0].mean() for i in range(len(audio))])
    v = np.array([vision[i, : vision_lengths[i], 0].mean() for i in range(len(vision))])
    return 3.0 * np.tanh(a + v)


def _split(
    rng: np.random.Generator, n: int, seq_len: int, audio_dim: int, vision_dim: int,
    audio_len: int, vision_len: int, vocab_size: int, label_fn: LabelFn, prefix: str,
) -> dict[str, object]:
    text_lengths = rng.integers(3, seq_len + 1, size=n)
    text_bert = np.zeros((n, 3, seq_len), dtype=np.float32)
    for i, length in enumerate(text_lengths):
        text_bert[i, 0, :length] = np.r_[101 % vocab_size, rng.integers(5, vocab_size, length - 2),
                                          102 % vocab_size]
        text_bert[i, 1, :length] = 1
    audio_lengths = rng.integers(1, audio_len + 1, size=n)
    vision_lengths = rng.integers(1, vision_len + 1, size=n)
    audio = rng.normal(size=(n, audio_len, audio_dim)).astype(np.float32)
    vision = rng.normal(size=(n, vision_len, vision_dim)).astype(np.float32)
    for i in range(n):  # zero padding at the end, as MMSA's files
        audio[i, audio_lengths[i]:] = 0
        vision[i, vision_lengths[i]:] = 0
    labels = np.asarray(
        label_fn(text_bert[:, 0].astype(np.int64), audio, audio_lengths, vision, vision_lengths),
        dtype=np.float32,
    ).reshape(n)
    return {
        "raw_text": [f"synthetic utterance {i}" for i in range(n)],
        "id": [f"{prefix}$_${i}" for i in range(n)],
        "text": np.zeros((n, seq_len, 8), dtype=np.float32),  # unused frozen features; kept for schema
        "text_bert": text_bert,
        "audio": audio,
        "vision": vision,
        "audio_lengths": audio_lengths.astype(np.int64).tolist(),
        "vision_lengths": vision_lengths.astype(np.int64).tolist(),
        "annotations": ["Positive" if y > 0 else "Negative" if y < 0 else "Neutral" for y in labels],
        "classification_labels": np.where(labels > 0, 2, np.where(labels < 0, 0, 1)).astype(np.int64),
        "regression_labels": labels,
    }


def write_synthetic_pickle(
    path: str | Path,
    n_train: int = 64,
    n_valid: int = 16,
    n_test: int = 16,
    L: int = 16,  # noqa: N803 - MMSA's name for the text length
    audio_dim: int = 5,
    vision_dim: int = 20,
    seed: int = 0,
    label_fn: LabelFn = mean_feature_label,
    *,
    audio_len: int = 20,
    vision_len: int = 15,
    vocab_size: int = 30522,
    sims_unimodal_labels: bool = False,
) -> Path:
    """Write an MMSA 'standard' pickle (docs/selfmm.md §6) with random features and labels from `label_fn`."""
    rng = np.random.default_rng(seed)
    data: dict[str, dict[str, object]] = {}
    for split, n in zip(SPLITS, (n_train, n_valid, n_test), strict=True):
        data[split] = _split(rng, n, L, audio_dim, vision_dim, audio_len, vision_len, vocab_size,
                             label_fn, f"{split}_video")
        if sims_unimodal_labels:
            y = np.asarray(data[split]["regression_labels"])
            for m in "TAV":
                data[split][f"regression_labels_{m}"] = y.copy()
    path = Path(path)
    with path.open("wb") as f:
        pickle.dump(data, f, protocol=4)
    return path


def write_tiny_bert(
    path: str | Path, *, seed: int = 0, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 2,
    intermediate_size: int = 64, vocab_size: int = 30522, max_positions: int = 128,
) -> Path:
    """Save a randomly initialised small BertModel + a vocab.txt (so BertTokenizer loads it too)."""

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, intermediate_size=intermediate_size,
        max_position_embeddings=max_positions,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(path)
    special = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = [f"w{i}" for i in range(vocab_size - len(special))]
    (path / "vocab.txt").write_text("\n".join(special + words) + "\n")
    return path
