"""BaselineTrainer's epoch against MMSA 2.2.1's own do_train (trains/singleTask/{LMF,TFN,MULT}.py): the same
batches, dropout draws and starting weights give the same weights after one epoch, so the trainer applies each
module's optimiser and loss as MMSA does, and MulT's gradient accumulation and value clipping."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from selfmm_testing import TINY_VOCAB
from torch.utils.data import DataLoader, Dataset

from models.datasets import MMSADataset, MMSASplit
from models.registry import model_spec
from models.train import TrainOptions
from models.train_baseline import BaselineTrainer

SMALL: dict[str, dict[str, Any]] = {
    "lmf": dict(hidden_dims=(16, 8, 12), rank=3),
    "tfn": dict(hidden_dims=(16, 8, 12), text_out=6, post_fusion_dim=10),
    # 3 batches, a step every 2: the third batch's gradient is never applied (MMSA); clipping at 0.01 binds
    "mult": dict(dst_feature_dim_nheads=(8, 2), nlevels=2, update_epochs=2, grad_clip=0.01),
}
N, TEXT, AUDIO, VISION = 24, 7, 9, 6  # every sequence full length: MMSA's mean over padding is then ours


def _split(config: Any, seed: int) -> MMSASplit:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, TINY_VOCAB, (N, TEXT))
    text = np.stack([ids, np.ones_like(ids), np.zeros_like(ids)], axis=1).astype(np.float32)
    return MMSASplit(
        ids=tuple(f"s{i}" for i in range(N)),
        text_bert=text,
        audio=rng.standard_normal((N, AUDIO, config.audio_dim)).astype(np.float32),
        vision=rng.standard_normal((N, VISION, config.vision_dim)).astype(np.float32),
        audio_lengths=np.full(N, AUDIO),
        vision_lengths=np.full(N, VISION),
        labels=rng.uniform(-3, 3, N).astype(np.float32),
        unimodal_labels={},
    )


class _MMSASamples(Dataset[dict[str, Any]]):
    """The same samples as MMSA's MMDataset yields them: the frozen encoder's states as `text`, audio and vision
    averaged over time for LMF/TFN (need_normalized), `labels` {"M": [1]}."""

    def __init__(self, model: Any, split: MMSASplit, normalized: bool) -> None:
        text = torch.from_numpy(split.text_bert).long()
        with torch.no_grad():
            self.text = model.text_model(text[:, 0], text[:, 1], text[:, 2])
        audio, vision = torch.from_numpy(split.audio), torch.from_numpy(split.vision)
        self.audio = audio.mean(dim=1, keepdim=True) if normalized else audio
        self.vision = vision.mean(dim=1, keepdim=True) if normalized else vision
        self.labels = torch.from_numpy(split.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "text": self.text[i],
            "audio": self.audio[i],
            "vision": self.vision[i],
            "labels": {"M": self.labels[i : i + 1]},
        }


class _OneEpoch:
    """A train loader that ends MMSA's do_train (which loops until early stopping) after one pass."""

    class Done(Exception):
        pass

    def __init__(self, loader: DataLoader[Any]) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        yield from self.loader
        raise self.Done


def _mmsa(name: str, config: Any, tmp_path: Any) -> tuple[Any, Any]:
    """MMSA's model and trainer for `config` (its args from MMSA's own config, our values over them)."""
    from MMSA.config import get_config_regression
    from MMSA.models.AMIO import AMIO
    from MMSA.trains.singleTask.LMF import LMF
    from MMSA.trains.singleTask.MULT import MULT
    from MMSA.trains.singleTask.TFN import TFN

    args = get_config_regression(name, "mosi")
    args.update({k: list(v) if isinstance(v, tuple) else v for k, v in config.to_dict().items()})
    args.update(
        train_mode="regression", device=torch.device("cpu"), cur_seed=1, model_save_path=str(tmp_path / f"{name}.pth")
    )
    trainer = {"lmf": LMF, "tfn": TFN, "mult": MULT}[name](args)
    return AMIO(args), trainer


@pytest.mark.parametrize("name", ["lmf", "tfn", "mult"])
def test_one_epoch_equals_mmsas_do_train(
    name: str, tiny_bert_dir: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    importlib.import_module("MMSA.trains.singleTask.MULT")
    mmsa_mult = sys.modules["MMSA.trains.singleTask.MULT"]  # the package's MULT attribute is the class
    # MMSA passes verbose=True, which torch 2.13's ReduceLROnPlateau no longer takes (it only logged)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau
    monkeypatch.setattr(mmsa_mult, "ReduceLROnPlateau", lambda *a, verbose=False, **k: plateau(*a, **k))
    spec = model_spec(name)
    config = spec.preset("mosi", text_encoder_dir=tiny_bert_dir, batch_size=8, **SMALL[name])
    torch.manual_seed(3)
    ours = spec.build(config, load_text_weights=False)
    reference, mmsa_trainer = _mmsa(name, config, tmp_path)
    mmsa_state_dict = importlib.import_module(f"models.{name}").mmsa_state_dict
    reference.load_state_dict(mmsa_state_dict(ours), strict=True)
    initial = {k: v.clone() for k, v in reference.state_dict().items()}
    train, valid = _split(config, seed=1), _split(config, seed=2)

    samples = _MMSASamples(ours, train, normalized=name != "mult")
    torch.manual_seed(9)  # the loaders draw the same permutation, then the same dropout masks
    with pytest.raises(_OneEpoch.Done):
        mmsa_trainer.do_train(reference, {"train": _OneEpoch(DataLoader(samples, batch_size=8, shuffle=True))})

    trainer = BaselineTrainer(config, spec.recipe, TrainOptions(max_epochs=1, device="cpu", progress=False))  # type: ignore[arg-type]
    torch.manual_seed(9)
    fit = trainer.fit(ours, MMSADataset(train), MMSADataset(valid))
    assert fit.epochs == 1 and fit.best_epoch == 1

    expected, got = reference.state_dict(), mmsa_state_dict(ours)
    assert list(got) == list(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=2e-5, rtol=0, msg=key)
    moved = [k for k in expected if not torch.equal(expected[k], initial[k])]
    assert len(moved) > len(expected) // 2, moved  # the epoch trained: most weights moved
