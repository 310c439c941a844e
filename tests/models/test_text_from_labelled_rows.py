"""text_from_labelled_rows (docs/selfmm.md §4.5): rows whose text says nothing of their label (text_labelled
False) train neither the text encoder nor the text head, and stay out of ULGM's text centres."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from selfmm_testing import TINY_VOCAB

from models.config import SelfMMConfig
from models.datasets import MMSADataset, load_mmsa_pickle
from models.errors import DatasetError
from models.selfmm import SelfMM
from models.synthetic import write_synthetic_pickle
from models.train import Trainer, TrainOptions
from models.ulgm import ULGM


def _ulgm(n: int = 4) -> ULGM:
    dims = {"fusion": 2, "text": 2, "audio": 2, "vision": 2}
    return ULGM(n, dims, exclude_zero=True, label_bounds=(-3.0, 3.0))


def test_an_unlabelled_row_weighs_nothing_and_stays_out_of_the_centres() -> None:
    ulgm = _ulgm()
    rows = torch.arange(4)
    ulgm.init_labels(rows, torch.tensor([1.0, 2.0, -1.0, -2.0]))
    features = {f"Feature_{k}": torch.tensor([[1.0, 0.0], [9.0, 9.0], [-1.0, 0.0], [-9.0, -9.0]]) for k in "ftav"}
    ulgm.update_features(features, rows)
    ulgm.update_centers()
    assert ulgm.center_map["text"]["pos"].tolist() == pytest.approx([5.0, 4.5])  # rows 0 and 1

    ulgm.drop_labels("text", rows, torch.tensor([False, True, False, True]))
    ulgm.update_centers()
    assert ulgm.center_map["text"]["pos"].tolist() == pytest.approx([1.0, 0.0])  # row 0 alone
    assert ulgm.center_map["text"]["neg"].tolist() == pytest.approx([-1.0, 0.0])
    assert ulgm.center_map["audio"]["pos"].tolist() == pytest.approx([5.0, 4.5])  # other modalities unchanged

    ulgm.label_map["text"][rows] = torch.tensor([0.0, 0.0, 0.0, 0.0])  # every row now weighs tanh(|0 - y_m|) > 0
    pred = torch.full((4,), 3.0)
    only_labelled = torch.tanh(torch.tensor([1.0, 1.0])) * 3.0  # rows 0 and 2, |3 - 0| each
    assert float(ulgm.weighted_loss(pred, "text", rows)) == pytest.approx(float(only_labelled.sum()) / 4)
    before = ulgm.label_map["text"].clone()
    ulgm.update_labels(features, epoch=2, indexes=rows)
    assert ulgm.label_map["text"][1] == before[1] and ulgm.label_map["text"][3] == before[3]
    assert (ulgm.label_map["text"][[0, 2]] != before[[0, 2]]).all()
    with pytest.raises(ValueError, match="fusion"):
        ulgm.drop_labels("fusion", rows, torch.ones(4, dtype=torch.bool))


def _pickle_with_flags(tmp_path: Path, flags: np.ndarray | None) -> Path:
    path = write_synthetic_pickle(tmp_path / "data.pkl", n_train=16, n_valid=8, n_test=8, L=8,
                                  vocab_size=TINY_VOCAB, audio_len=5, vision_len=4, seed=7)
    data = pickle.loads(path.read_bytes())
    if flags is not None:
        data["train"]["text_labelled"] = flags
    path.write_bytes(pickle.dumps(data))
    return path


def test_the_flag_is_read_from_the_pickle_and_defaults_to_labelled(tmp_path: Path) -> None:
    plain = load_mmsa_pickle(_pickle_with_flags(tmp_path, None))
    assert plain["train"].text_labelled is not None and plain["train"].text_labelled.all()
    flags = np.arange(16) % 2 == 0
    split = load_mmsa_pickle(_pickle_with_flags(tmp_path, flags))["train"]
    assert split.text_labelled.tolist() == flags.tolist()
    assert [bool(MMSADataset(split)[i]["text_labelled"]) for i in range(3)] == [True, False, True]
    with pytest.raises(DatasetError, match="text_labelled"):
        load_mmsa_pickle(_pickle_with_flags(tmp_path, flags[:5]))


def _encoder_grad_norm(config: SelfMMConfig, data: Path) -> float:
    """The text encoder's gradient after one training batch of every train row."""
    torch.manual_seed(0)
    model = SelfMM(config)
    trainer = Trainer(config, TrainOptions(max_epochs=1, device="cpu", progress=False))
    split = load_mmsa_pickle(data)["train"]
    trainer.ulgm = ulgm = trainer._new_ulgm(len(split))
    batch = next(iter(torch.utils.data.DataLoader(MMSADataset(split), batch_size=len(split))))
    indexes = batch["index"].view(-1)
    ulgm.init_labels(indexes, batch["label"].view(-1))
    if config.text_from_labelled_rows:
        ulgm.drop_labels("text", indexes, ~batch["text_labelled"].view(-1))
    model.train()
    ulgm.loss(trainer._forward_train(model, batch), indexes).backward()
    grads = [p.grad.norm() for p in model.text_model.parameters() if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


def test_unlabelled_rows_send_no_gradient_into_the_text_encoder(tiny_bert_dir: Path, tmp_path: Path) -> None:
    config = SelfMMConfig.preset("mosi", text_encoder_dir=tiny_bert_dir, use_finetune=True)
    flagged = SelfMMConfig.preset("mosi", text_encoder_dir=tiny_bert_dir, use_finetune=True,
                                  text_from_labelled_rows=True)
    none_labelled = _pickle_with_flags(tmp_path, np.zeros(16, dtype=bool))
    assert _encoder_grad_norm(config, none_labelled) > 0  # MMSA: every row trains the encoder
    assert _encoder_grad_norm(flagged, none_labelled) == 0.0
    assert _encoder_grad_norm(flagged, _pickle_with_flags(tmp_path, np.arange(16) < 8)) > 0
