"""`affectstream export` end to end: an MMSA 2.2.1 checkpoint and one of ours become validated bundles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from easydict import EasyDict
from tiny_selfmm import make_tiny_model, tiny_feature_spec
from typer.testing import CliRunner

from agent.bundle import ModelBundle
from cli.main import app
from core.card import ModelCard
from core.errors import ModelError
from exporters.cases import real_text_cases


def mmsa_args(encoder: Path) -> EasyDict:
    """MMSA 2.2.1 config_regression self_mm / mosi, with a local encoder in place of bert-base-uncased."""
    return EasyDict(
        model_name="self_mm",
        need_model_aligned=False,
        need_data_aligned=False,
        use_finetune=True,
        transformers="bert",
        pretrained=str(encoder),
        feature_dims=[32, 5, 20],
        text_out=32,
        a_lstm_hidden_size=16,
        v_lstm_hidden_size=32,
        a_lstm_layers=1,
        v_lstm_layers=1,
        audio_out=16,
        video_out=32,
        a_lstm_dropout=0.0,
        v_lstm_dropout=0.0,
        post_fusion_dim=128,
        post_text_dim=32,
        post_audio_dim=16,
        post_video_dim=32,
        post_fusion_dropout=0.0,
        post_text_dropout=0.1,
        post_audio_dropout=0.1,
        post_video_dropout=0.0,
    )


def test_mmsa_checkpoint_exports_to_mmsas_own_outputs(tiny_encoder: Path, tmp_path: Path) -> None:
    from MMSA.models.AMIO import AMIO

    torch.manual_seed(11)
    amio = AMIO(mmsa_args(tiny_encoder))
    for param in amio.parameters():  # move every weight off its init so a mis-mapped key shows
        param.data.add_(0.02 * torch.randn_like(param))
    amio.eval()
    pth = tmp_path / "self_mm-mosi.pth"
    torch.save(amio.state_dict(), pth)
    out = tmp_path / "mmsa-bundle"

    result = CliRunner().invoke(
        app,
        [
            "export",
            "--mmsa",
            str(pth),
            "--preset",
            "mosi",
            "--text-encoder",
            str(tiny_encoder),
            "--out",
            str(out),
            "--no-int8",
            "--no-fp16",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "live scoring is refused" in result.output

    case = real_text_cases(tiny_encoder, audio_dim=5, vision_dim=20, text_max_length=50)[0]
    feeds = case.feeds
    text = torch.from_numpy(
        np.stack([feeds["input_ids"], feeds["attention_mask"], feeds["token_type_ids"]], axis=1).astype(np.float32)
    )  # MMSA's [B, 3, L] float layout
    with torch.no_grad():
        want = amio(
            text,
            (torch.from_numpy(feeds["audio"]), torch.from_numpy(feeds["audio_lengths"])),
            (torch.from_numpy(feeds["vision"]), torch.from_numpy(feeds["vision_lengths"])),
        )["M"]
    got = ModelBundle.load(out, None).run(feeds)["M"]
    assert np.abs(got - want.numpy().reshape(-1)).max() <= 1e-4
    assert np.ptp(got) > 1e-3  # the rows differ: the comparison is not trivially constant

    card = ModelCard.read(out)
    assert card.feature_source == "mmsa_dataset" and card.text_max_length == 50
    assert card.feature_spec["audio_dim"] == 5 and "COVAREP" in card.feature_spec["audio_extractor"]
    with pytest.raises(ModelError, match="cannot compute them from a call"):
        ModelBundle.load(out, card.feature_spec)


def test_our_checkpoint_exports_with_uninformed_vision(tiny_encoder: Path, tmp_path: Path) -> None:
    from models.checkpoint import save_checkpoint

    model = make_tiny_model(tiny_encoder, seed=5)
    metadata = {
        "informed_modalities": ["text", "audio"],
        "feature_spec": tiny_feature_spec(),
        "metrics": {"test": {"MAE": 0.9}},
        "dataset": {"name": "toy.pkl"},
    }
    checkpoint = save_checkpoint(model, model.config, tmp_path / "ckpt", metadata)
    out = tmp_path / "ours"
    result = CliRunner().invoke(
        app,
        [
            "export",
            str(checkpoint),
            "--out",
            str(out),
            "--no-fp16",
            "--model-id",
            "toy-sentiment",
            "--model-version",
            "1.2",
        ],
    )
    assert result.exit_code == 0, result.output
    card = ModelCard.read(out)
    assert (card.model_id, card.model_version) == ("toy-sentiment", "1.2")
    assert card.feature_spec == tiny_feature_spec() and card.feature_source == "live"
    assert card.informed_modalities == ("text", "audio")
    assert card.uninformed_inputs["vision"].as_array().shape == (1, 20)
    assert "audio" not in card.uninformed_inputs
    assert card.training["metrics"] == {"test": {"MAE": 0.9}}
    assert card.variant("int8") is not None and card.variant("fp16") is None
    ModelBundle.load(out, tiny_feature_spec())  # the agent accepts it


def test_export_refuses_bad_arguments(tmp_path: Path, tiny_encoder: Path) -> None:
    runner = CliRunner()
    both = runner.invoke(
        app, ["export", str(tmp_path), "--mmsa", str(tmp_path / "x.pth"), "--out", str(tmp_path / "b")]
    )
    assert both.exit_code != 0
    missing = runner.invoke(
        app,
        [
            "export",
            "--mmsa",
            str(tmp_path / "none.pth"),
            "--text-encoder",
            str(tiny_encoder),
            "--out",
            str(tmp_path / "b"),
        ],
    )
    assert missing.exit_code != 0 and "none.pth" in str(missing.exception)
    assert not (tmp_path / "b").exists()
