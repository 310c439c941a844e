"""Fixtures for the model tests: a tiny random BERT, MiniLM, synthetic pickles and MMSA's own objects."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from selfmm_testing import TINY_VOCAB

from models.config import default_text_encoder_dir
from models.synthetic import write_synthetic_pickle, write_tiny_bert


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """The models here are tiny: one intra-op thread is faster, and far faster on a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT (hidden 32). Attention dropout 0: MMSA's default sdpa and our eager attention
    draw dropout masks differently; hidden dropout (nn.Dropout in both) stays on."""
    path = write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), vocab_size=TINY_VOCAB, seed=3)
    import json

    config = json.loads((path / "config.json").read_text())
    config["attention_probs_dropout_prob"] = 0.0
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return default_text_encoder_dir()


@pytest.fixture(scope="session")
def synthetic_pickle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_pickle(
        tmp_path_factory.mktemp("data") / "synthetic.pkl", n_train=40, n_valid=12, n_test=12, L=10,
        vocab_size=TINY_VOCAB, seed=5,
    )
