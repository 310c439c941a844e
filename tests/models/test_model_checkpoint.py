"""MMSA .pth checkpoints in and out (strict), and our own checkpoint directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from selfmm_testing import TINY_VOCAB, mmsa_call, mmsa_model, random_batch

from models.checkpoint import (
    POSITION_IDS,
    load_checkpoint,
    load_mmsa_state_dict,
    save_checkpoint,
    save_mmsa_state_dict,
)
from models.config import SelfMMConfig
from models.errors import CheckpointError
from models.selfmm import SelfMM


@pytest.fixture(scope="module")
def config(tiny_bert_dir: Path) -> SelfMMConfig:
    return SelfMMConfig.preset("mosi", text_encoder_dir=tiny_bert_dir)


def test_mmsa_to_ours_to_mmsa_round_trip(config: SelfMMConfig, tmp_path: Path) -> None:
    torch.manual_seed(1)
    original = mmsa_model(config).eval()
    torch.save(original.cpu().state_dict(), tmp_path / "self_mm-mosi.pth")  # what MMSA writes

    ours = load_mmsa_state_dict(tmp_path / "self_mm-mosi.pth", config)
    save_mmsa_state_dict(ours, tmp_path / "back.pth")
    torch.manual_seed(2)  # different random init: only the loaded weights can make outputs equal
    reloaded = mmsa_model(config).eval()
    reloaded.load_state_dict(torch.load(tmp_path / "back.pth", weights_only=True), strict=True)

    batch = random_batch(config, TINY_VOCAB, seed=9)
    with torch.no_grad():
        a, b, c = mmsa_call(original, batch), ours(**batch), mmsa_call(reloaded, batch)
    for key in ("M", "T", "A", "V", "Feature_f"):
        torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=0)
        torch.testing.assert_close(c[key], a[key], atol=0, rtol=0)


def test_old_transformers_position_ids_are_accepted(config: SelfMMConfig) -> None:
    torch.manual_seed(3)
    state = mmsa_model(config).state_dict()
    state["Model." + POSITION_IDS] = torch.arange(512).unsqueeze(0)  # transformers < 4.31 saved it
    model = load_mmsa_state_dict(state, config)
    torch.testing.assert_close(model.post_fusion_layer_1.weight, state["Model.post_fusion_layer_1.weight"])


def test_mismatched_checkpoint_lists_the_keys(config: SelfMMConfig, tiny_bert_dir: Path) -> None:
    torch.manual_seed(4)
    state = mmsa_model(config).state_dict()
    del state["Model.post_text_layer_3.bias"]
    state["Model.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing \[1\]: post_text_layer_3.bias.*unexpected \[1\]: "
                                              r"extra.weight"):
        load_mmsa_state_dict(state, config)
    sims_config = SelfMMConfig.preset("sims", text_encoder_dir=tiny_bert_dir)
    with pytest.raises(CheckpointError, match=r"shape mismatch.*audio_model.rnn.weight_ih_l0: checkpoint "
                                              r"\(64, 5\) vs model \(64, 33\)"):
        load_mmsa_state_dict(mmsa_model(config).state_dict(), sims_config)
    with pytest.raises(CheckpointError, match="lack the 'Model.' prefix"):
        load_mmsa_state_dict({"post_fusion_layer_1.weight": torch.zeros(1)}, config)


def test_unreadable_files_are_named(config: SelfMMConfig, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="file not found"):
        load_mmsa_state_dict(tmp_path / "missing.pth", config)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth: not a readable torch state dict"):
        load_mmsa_state_dict(tmp_path / "junk.pth", config)
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        load_checkpoint(tmp_path)


def test_our_checkpoint_round_trip_is_self_contained(config: SelfMMConfig, tmp_path: Path) -> None:
    torch.manual_seed(5)
    model = SelfMM(config).eval()
    meta = {"dataset": {"name": "synthetic.pkl"}, "metrics": {"test": {"MAE": 0.5}},
            "informed_modalities": ["text", "audio"]}
    path = save_checkpoint(model, config, tmp_path / "ckpt", meta)
    assert (path / "text_encoder" / "vocab.txt").is_file()
    assert not (path / "text_encoder" / "model.safetensors").exists()  # weights live in our state dict
    loaded, loaded_config, loaded_meta = load_checkpoint(path)
    assert loaded_config.replace(text_encoder_dir=config.text_encoder_dir) == config
    assert Path(loaded_config.text_encoder_dir) == path / "text_encoder"
    assert loaded_meta["informed_modalities"] == ["text", "audio"] and loaded_meta["format_version"] == 1
    batch = random_batch(config, TINY_VOCAB, seed=10)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch)["M"], model(**batch)["M"], atol=0, rtol=0)
    raw = json.loads((path / "config.json").read_text())
    assert raw["audio_dim"] == 5 and raw["text_out"] == 32
