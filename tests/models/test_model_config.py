"""Presets equal MMSA 2.2.1's config_regression.json (self_mm); config serialisation and validation."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest

from models.config import SelfMMConfig
from models.errors import ModelConfigError
from models.tasks import make_task

RENAMED = {"excludeZero": "exclude_zero"}
NOT_FIELDS = {"transformers", "pretrained", "text_out", "need_data_aligned", "need_model_aligned",
              "need_normalized", "use_bert", "save_labels"}


def _mmsa_config() -> dict:
    return json.loads((files("MMSA") / "config" / "config_regression.json").read_text())


@pytest.mark.parametrize("dataset", ["mosi", "mosei", "sims"])
def test_presets_equal_mmsa_config(dataset: str, tiny_bert_dir: Path) -> None:
    mmsa = _mmsa_config()
    params = {**mmsa["self_mm"]["commonParams"], **mmsa["self_mm"]["datasetParams"][dataset]}
    config = SelfMMConfig.preset(dataset, text_encoder_dir=tiny_bert_dir).to_dict()
    checked = 0
    for key, value in params.items():
        if key in NOT_FIELDS:
            continue
        assert config[RENAMED.get(key, key)] == value, key
        checked += 1
    assert checked >= 30
    dims = mmsa["datasetCommonParams"][dataset]["unaligned"]["feature_dims"]
    assert [config["audio_dim"], config["vision_dim"]] == dims[1:]
    assert config["text_out"] == 32  # follows the encoder, not MMSA's 768


def test_text_out_follows_minilm(minilm_dir: Path) -> None:
    assert SelfMMConfig.preset("mosi", text_encoder_dir=minilm_dir).text_out == 384


def test_round_trip_and_overrides(tiny_bert_dir: Path) -> None:
    config = SelfMMConfig.preset("sims", text_encoder_dir=tiny_bert_dir, audio_dim=25, vision_dim=7,
                                 use_finetune=False, batch_size=8)
    assert (config.audio_dim, config.vision_dim, config.use_finetune, config.batch_size) == (25, 7, False, 8)
    assert (config.label_min, config.label_max, config.H) == (-1.0, 1.0, 1.0)
    assert SelfMMConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_depression_task_range_and_ulgm_bounds(tiny_bert_dir: Path) -> None:
    config = SelfMMConfig.preset("mosi", text_encoder_dir=tiny_bert_dir, task="depression")
    assert (config.label_min, config.label_max, config.label_center) == (0.0, 24.0, 10.0)
    assert config.generated_label_bounds == (-10.0, 14.0)  # PHQ-8 0..24 in units centred at the cut-point
    assert config.exclude_zero is False  # PHQ-8 == 10 belongs to the "depressed" centre
    mosi = SelfMMConfig.preset("mosi", text_encoder_dir=tiny_bert_dir)
    assert mosi.generated_label_bounds == (-3.0, 3.0)  # MMSA's [-H, H]
    assert make_task("sentiment", "sims").label_max == 1.0


@pytest.mark.parametrize(
    "kwargs,message",
    [({"name": "iemocap"}, "unknown preset"), ({"task": "anxiety"}, "unknown task"),
     ({"a_lstm_layers": 2}, "1-layer"), ({"bogus": 1}, "unknown SelfMMConfig fields"),
     ({"audio_dim": 0}, "audio_dim must be >= 1")],
)
def test_bad_configs_are_refused(tiny_bert_dir: Path, kwargs: dict, message: str) -> None:
    name = kwargs.pop("name", "mosi")
    with pytest.raises(ModelConfigError, match=message):
        SelfMMConfig.preset(name, text_encoder_dir=tiny_bert_dir, **kwargs)


def test_missing_encoder_dir_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="no config.json"):
        SelfMMConfig.preset("mosi", text_encoder_dir=tmp_path)
