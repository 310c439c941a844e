"""LMF, TFN and MulT through the same bundle contract as Self-MM: exported, validated against torch (1e-4), the
card naming the model and only the outputs it has; the agent's loader serves them with t/a/v as null."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from baseline_testing import BASELINES
from tiny_selfmm import AUDIO_DIM, VISION_DIM, export_tiny_bundle, tiny_feature_spec

from agent.bundle import ModelBundle
from agent.scoring import split_scores
from core.card import ModelCard, TaskInfo
from exporters import bundle as bundle_module
from exporters.bundle import ExportRequest, export_bundle
from exporters.cases import random_cases, real_text_cases
from exporters.errors import ExportValidationError
from models.registry import model_spec

SMALL: dict[str, dict[str, Any]] = {
    "lmf": dict(hidden_dims=(16, 8, 12), rank=3),
    "tfn": dict(hidden_dims=(16, 8, 12), text_out=6, post_fusion_dim=10),
    "mult": dict(dst_feature_dim_nheads=(8, 2), nlevels=2),
}


def tiny_baseline(name: str, encoder: Path, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised baseline on the tiny encoder (MOSI dims), its BatchNorm statistics moved off their
    initial values so that the exported graph must carry them."""
    spec = model_spec(name)
    torch.manual_seed(seed)
    model = spec.build(spec.preset("mosi", text_encoder_dir=encoder, **SMALL[name]))
    for key, tensor in model.state_dict().items():
        if key.endswith(("running_mean", "running_var")):
            tensor.copy_(torch.rand_like(tensor) + 0.5)
    return model.eval()


def export(model: torch.nn.Module, encoder: Path, out: Path) -> ModelCard:
    return export_bundle(model, ExportRequest(
        out_dir=out, model_id=f"tiny-{out.name}", model_version="test", task=TaskInfo("sentiment", -3.0, 3.0),
        feature_spec=tiny_feature_spec(), feature_source="live", text_encoder_dir=encoder, text_max_length=50,
        audio_dim=AUDIO_DIM, vision_dim=VISION_DIM, training={"data": "none (random weights, test only)"},
        fp16=False, int8=False,
    ))  # fmt: skip


@pytest.fixture(scope="module")
def bundles(tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    root = tmp_path_factory.mktemp("baseline-bundles")
    out = {}
    for name in BASELINES:
        model = tiny_baseline(name, tiny_encoder)
        export(model, tiny_encoder, root / name)
        out[name] = (root / name, model)
    return out


@pytest.mark.parametrize("name", BASELINES)
def test_card_names_the_model_and_the_graph_has_only_m(name: str, bundles: dict[str, tuple[Path, Any]]) -> None:
    path, _ = bundles[name]
    card = ModelCard.read(path)
    assert card.model_name == name and card.architecture.startswith(model_spec(name).title.split(" (")[0])
    assert [o.name for o in card.outputs] == ["M"]
    assert card.tasks[0].output == "M" and card.tasks[0].unimodal_outputs == {}
    assert not card.text_packed  # they read every token's state, not [CLS] alone
    # the exporter validated against torch on every case, within 1e-4, on M alone
    check = card.validation
    assert check.passed and check.atol == 1e-4 and set(check.max_abs_diff) == {"M"}
    assert 0 <= check.max_abs_diff["M"] <= 1e-4
    assert {"random b=1 lengths=1", "random b=8 padded", "real text b=7 padded"} <= set(check.cases)
    graph_inputs = [i.name for i in onnx.load(str(path / "model.onnx")).graph.input]
    assert [i.name for i in card.inputs] == graph_inputs
    if name == "mult":  # MMSA's MULT never reads the lengths; its unpadded convolutions need 5 steps
        assert "audio_lengths" not in graph_inputs and "vision_lengths" not in graph_inputs
        assert card.min_lengths == {"text_length": 5, "audio_length": 5, "vision_length": 5}
    else:
        assert len(graph_inputs) == 7 and card.min_lengths == {}


@pytest.mark.parametrize("name", BASELINES)
def test_the_agents_loader_scores_as_torch_with_null_unimodal_heads(
    name: str, bundles: dict[str, tuple[Path, Any]], tiny_encoder: Path
) -> None:
    path, model = bundles[name]
    bundle = ModelBundle.load(path, tiny_feature_spec(), providers=["CPUExecutionProvider"])
    assert bundle.output_names == ("M",)
    cases = real_text_cases(tiny_encoder, audio_dim=AUDIO_DIM, vision_dim=VISION_DIM, text_max_length=50)
    cases += random_cases(
        audio_dim=AUDIO_DIM, vision_dim=VISION_DIM, vocab_size=bundle.card.text_vocab_size, text_max_length=50, seed=5
    )[:1]  # one token, one frame each
    for case in cases:
        feeds = case.feeds
        got = bundle.run(feeds)["M"]
        # torch on the same inputs, zero-padded to the card's minimum where the model needs it (MulT)
        padded = {k: torch.from_numpy(v) for k, v in _padded(feeds, bundle.card.min_lengths).items()}
        with torch.no_grad():
            want = model(**padded)["M"].numpy().reshape(-1)
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=case.name)
        assert np.ptp(got) > 0 or len(got) == 1
        rows = split_scores(bundle, {"M": got}, len(got))
        assert [s.model_id for (s,) in rows] == [f"tiny-{name}"] * len(got)
        assert all(
            s.m == pytest.approx(float(m)) and (s.t, s.a, s.v) == (None, None, None)
            for (s,), m in zip(rows, got, strict=True)
        )


def _padded(feeds: dict[str, np.ndarray], min_lengths: dict[str, int]) -> dict[str, np.ndarray]:
    out = dict(feeds)
    text = max(out["input_ids"].shape[1], min_lengths.get("text_length", 0))
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        out[key] = np.pad(out[key], ((0, 0), (0, text - out[key].shape[1])))
    for key, axis in (("audio", "audio_length"), ("vision", "vision_length")):
        steps = max(out[key].shape[1], min_lengths.get(axis, 0))
        out[key] = np.pad(out[key], ((0, 0), (0, steps - out[key].shape[1]), (0, 0)))
    return out


def test_a_corrupted_baseline_graph_is_refused(
    tiny_encoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_export = bundle_module.export_graph

    def export_then_corrupt(graph, example, path, *, opset):  # type: ignore[no-untyped-def]
        real_export(graph, example, path, opset=opset)
        graph_proto = onnx.load(str(path))
        factor = next(i for i in graph_proto.graph.initializer if i.name.endswith("text_factor"))
        values = onnx.numpy_helper.to_array(factor) * np.float32(1.01)
        factor.CopyFrom(onnx.numpy_helper.from_array(values, factor.name))
        onnx.save(graph_proto, str(path))

    monkeypatch.setattr(bundle_module, "export_graph", export_then_corrupt)
    with pytest.raises(ExportValidationError) as info:
        export(tiny_baseline("lmf", tiny_encoder), tiny_encoder, tmp_path / "rejected")
    assert info.value.output == "M" and info.value.abs_diff > 1e-4
    assert list(tmp_path.iterdir()) == []


def test_self_mm_cards_keep_their_meaning(tiny_encoder: Path, tmp_path: Path) -> None:
    """A card written before model names exists is Self-MM's; a Self-MM exported without its unimodal heads
    says so in its task, and its windows carry t/a/v as null too."""
    full = export_tiny_bundle(tiny_encoder, tmp_path / "full")
    data = json.loads((full / "card.json").read_text())
    assert data["model_name"] == "self_mm" and data["tasks"][0]["unimodal_outputs"] == {"t": "T", "a": "A", "v": "V"}
    del data["model_name"], data["min_lengths"]
    (full / "card.json").write_text(json.dumps(data))
    assert ModelCard.read(full).model_name == "self_mm" and ModelCard.read(full).min_lengths == {}

    m_only = export_tiny_bundle(tiny_encoder, tmp_path / "m-only", unimodal_outputs=False)
    bundle = ModelBundle.load(m_only, tiny_feature_spec(), providers=["CPUExecutionProvider"])
    assert bundle.output_names == ("M",) and bundle.card.tasks[0].unimodal_outputs == {}
    (score,) = split_scores(bundle, {"M": np.array([0.5], np.float32)}, 1)[0]
    assert (score.m, score.t, score.a, score.v) == (0.5, None, None, None)
