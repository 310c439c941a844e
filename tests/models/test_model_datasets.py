"""MMSA pickle reading (vs MMSA's own MMDataset), the synthetic writer, and clear errors on bad files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from selfmm_testing import mmsa_args
from torch.utils.data import DataLoader

from models.config import SelfMMConfig
from models.datasets import MMSADataset, load_mmsa_pickle
from models.errors import DatasetError
from models.synthetic import write_synthetic_pickle

SPLIT_KEYS = {"raw_text", "id", "text", "text_bert", "audio", "vision", "audio_lengths", "vision_lengths",
              "annotations", "classification_labels", "regression_labels"}


def test_synthetic_pickle_has_the_mmsa_schema(synthetic_pickle: Path) -> None:
    data = pickle.loads(synthetic_pickle.read_bytes())
    assert set(data) == {"train", "valid", "test"}
    train = data["train"]
    assert set(train) == SPLIT_KEYS
    assert train["text_bert"].shape == (40, 3, 10) and train["audio"].shape == (40, 20, 5)
    ids, mask = train["text_bert"][:, 0], train["text_bert"][:, 1]
    assert (ids[:, 0] == 101).all() and (train["text_bert"][:, 2] == 0).all()
    last = mask.sum(1).astype(int) - 1
    assert (ids[np.arange(40), last] == 102).all()  # [CLS] ... [SEP] then zero padding
    for i, length in enumerate(train["audio_lengths"]):
        assert not train["audio"][i, length:].any()


def test_reader_equals_mmsa_mmdataset(synthetic_pickle: Path, tiny_bert_dir: Path) -> None:
    from MMSA.data_loader import MMDataset

    config = SelfMMConfig.preset("mosi", text_encoder_dir=tiny_bert_dir)
    reference = MMDataset(mmsa_args(config, featurePath=str(synthetic_pickle)), mode="valid")
    ours = MMSADataset(load_mmsa_pickle(synthetic_pickle)["valid"])
    assert len(ours) == len(reference) == 12
    for i in (0, 5, 11):
        a, b = reference[i], ours[i]
        assert b["index"] == a["index"] == i and b["id"] == a["id"]
        torch.testing.assert_close(b["input_ids"], a["text"][0].long())
        torch.testing.assert_close(b["attention_mask"], a["text"][1].long())
        torch.testing.assert_close(b["audio"], a["audio"])
        torch.testing.assert_close(b["vision"], a["vision"])
        assert b["audio_lengths"] == a["audio_lengths"] and b["vision_lengths"] == a["vision_lengths"]
        torch.testing.assert_close(b["label"], a["labels"]["M"][0])
    batch = next(iter(DataLoader(ours, batch_size=4)))
    assert batch["audio_lengths"].dtype == torch.int64 and batch["index"].tolist() == [0, 1, 2, 3]


def _rewrite(src: Path, dst: Path, edit) -> Path:
    data = pickle.loads(src.read_bytes())
    edit(data)
    dst.write_bytes(pickle.dumps(data))
    return dst


def test_minus_inf_audio_becomes_zero(synthetic_pickle: Path, tmp_path: Path) -> None:
    def edit(data: dict) -> None:
        data["train"]["audio"][3, 0, :2] = -np.inf

    path = _rewrite(synthetic_pickle, tmp_path / "inf.pkl", edit)
    audio = load_mmsa_pickle(path)["train"].audio
    assert audio[3, 0, 0] == 0 and audio[3, 0, 1] == 0 and np.isfinite(audio).all()


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda d: d["train"].pop("vision_lengths"), r"\[train\]: missing keys vision_lengths"),
        (lambda d: d["valid"]["audio_lengths"].__setitem__(2, 0), r"audio_lengths must be in 1..20.*index 2"),
        (lambda d: d["test"]["vision_lengths"].__setitem__(0, 99), r"vision_lengths must be in 1..15"),
        (lambda d: d["train"]["vision"].__setitem__((1, 1, 1), np.nan), r"vision has 1 non-finite"),
        (lambda d: d.pop("test"), r"missing splits test"),
        (lambda d: d["train"].__setitem__("regression_labels", d["train"]["regression_labels"][:-1]),
         r"39 labels but"),
    ],
)
def test_bad_pickles_name_the_problem(synthetic_pickle: Path, tmp_path: Path, edit, message: str) -> None:
    path = _rewrite(synthetic_pickle, tmp_path / "bad.pkl", edit)
    with pytest.raises(DatasetError, match=message):
        load_mmsa_pickle(path)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="file not found"):
        load_mmsa_pickle(tmp_path / "none.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"\x00junk")
    with pytest.raises(DatasetError, match="not a readable pickle"):
        load_mmsa_pickle(tmp_path / "junk.pkl")


def test_custom_label_function_and_sims_keys(tmp_path: Path) -> None:
    def label_fn(ids, audio, audio_lengths, vision, vision_lengths):
        return audio_lengths.astype(np.float32) / 10

    path = write_synthetic_pickle(tmp_path / "s.pkl", 8, 4, 4, L=6, audio_dim=3, vision_dim=2,
                                  label_fn=label_fn, sims_unimodal_labels=True)
    split = load_mmsa_pickle(path)["train"]
    np.testing.assert_allclose(split.labels, split.audio_lengths / 10, rtol=1e-6)
    assert set(split.unimodal_labels) == {"T", "A", "V"}
