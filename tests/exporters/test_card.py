"""The model card round-trips through JSON and refuses malformed or foreign cards with a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.bundle import feature_spec_mismatch
from core.card import (
    GraphFile,
    ModelCard,
    TaskInfo,
    TensorInfo,
    UninformedInput,
    ValidationResult,
    Variant,
)
from core.errors import ModelError


def make_card() -> ModelCard:
    check = ValidationResult(True, "torch eval-mode forward", 1e-4, {"M": 2e-7}, {"M": 5e-8}, "b=3 (M)", ("b=1", "b=3"))
    return ModelCard(
        model_id="m",
        model_version="1",
        created_utc="2026-01-01T00:00:00Z",
        architecture="Self-MM",
        tasks=(TaskInfo("depression", 0.0, 24.0),),
        feature_spec={"audio_dim": 29, "vision_fps": 10.0},
        feature_source="live",
        text_encoder="minilm",
        text_max_length=50,
        text_vocab_size=30522,
        tokenizer_files=("tokenizer.json",),
        inputs=(TensorInfo("audio", "float32", ("batch", "audio_length", 29)),),
        outputs=(TensorInfo("M", "float32", ("batch", 1)),),
        opset=17,
        graph=GraphFile("model.onnx", "ab" * 32, 10),
        validation=check,
        training={"metrics": {"MAE": 3.1}},
        informed_modalities=("text", "audio"),
        uninformed_inputs={"vision": UninformedInput(((0.0, 0.0),), "no face data in training")},
        variants=(Variant("int8", GraphFile("model.int8.onnx", "cd" * 32, 5), "CPUExecutionProvider", check),),
    )


def test_card_round_trips_through_json(tmp_path: Path) -> None:
    card = make_card()
    card.write(tmp_path)
    assert ModelCard.read(tmp_path) == card
    assert ModelCard.read(tmp_path).uninformed_inputs["vision"].as_array().shape == (1, 2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(card_version=99), "version 99 is not supported"),
        (lambda d: d.pop("graph"), "malformed model card: KeyError: 'graph'"),
        (lambda d: d.update(feature_source="openface"), "feature_source must be"),
        (
            lambda d: d["uninformed_inputs"].update(text={"rows": [[0]], "reason": ""}),
            "must be audio or vision",
        ),
    ],
)
def test_malformed_cards_are_refused(tmp_path: Path, change, message: str) -> None:  # type: ignore[no-untyped-def]
    data = make_card().to_dict()
    change(data)
    (tmp_path / "card.json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match=message):
        ModelCard.read(tmp_path)


def test_unreadable_card_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "card.json").write_text("{not json")
    with pytest.raises(ModelError, match="card.json: not valid JSON"):
        ModelCard.read(tmp_path)


def test_feature_spec_mismatch_lists_every_difference() -> None:
    card = {"audio_dim": 29, "vision_fps": 10.0, "tokenizer_sha256": "aa"}
    agent = {"audio_dim": 29, "vision_fps": 5.0, "text_max_length": 50}
    assert feature_spec_mismatch(card, card) == []
    assert feature_spec_mismatch(card, agent) == [
        "text_max_length: the agent has 50, the model card has none",
        "tokenizer_sha256: the model needs 'aa', the agent has none",
        "vision_fps: model 10.0 != agent 5.0",
    ]
