"""Export + validation of Self-MM graphs: card contents, variants, and rejection of a corrupted graph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tiny_selfmm import export_tiny_bundle, make_tiny_model, tiny_feature_spec

from agent.bundle import ModelBundle
from core.card import ModelCard, sha256_file
from core.errors import ModelError
from exporters import bundle as bundle_module
from exporters.cases import random_cases, real_text_cases
from exporters.errors import ExportValidationError
from exporters.onnx import INPUT_NAMES, InferenceGraph, torch_runner


@pytest.fixture(scope="module")
def full_bundle(tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "full"
    return export_tiny_bundle(tiny_encoder, out, fp16=True, int8=True)


def test_bundle_holds_validated_graph_tokenizer_and_card(full_bundle: Path) -> None:
    card = ModelCard.read(full_bundle)
    assert card.graph.sha256 == sha256_file(full_bundle / "model.onnx")
    assert card.opset == 17 == onnx.load(str(full_bundle / "model.onnx")).opset_import[0].version
    assert [i.name for i in card.inputs] == list(INPUT_NAMES)
    assert card.input_info("audio").shape == ("batch", "audio_length", 5)
    assert [o.name for o in card.outputs] == ["M", "T", "A", "V"]
    assert card.validation.passed and card.validation.atol == 1e-4
    assert 0 < card.validation.max_abs_diff["M"] <= 1e-4
    assert {"random b=1 lengths=1", "random b=3 padded", "real text b=7 padded"} <= set(card.validation.cases)
    for name in card.tokenizer_files:
        assert (full_bundle / name).is_file()
    assert "tokenizer.json" in card.tokenizer_files
    assert card.tasks[0].name == "sentiment" and (card.tasks[0].label_min, card.tasks[0].label_max) == (-3, 3)
    assert json.loads((full_bundle / "card.json").read_text())["feature_source"] == "live"


def test_variants_are_measured_against_fp32(full_bundle: Path) -> None:
    card = ModelCard.read(full_bundle)
    fp16, int8 = card.variant("fp16"), card.variant("int8")
    assert fp16 is not None and int8 is not None
    assert fp16.graph.sha256 == sha256_file(full_bundle / "model.fp16.onnx")
    assert fp16.validation.passed and 0 < fp16.validation.max_abs_diff["M"] <= fp16.validation.atol
    assert int8.validation.max_abs_diff["M"] > 0 and int8.validation.mean_abs_diff["M"] > 0
    assert int8.validation.mean_abs_diff["M"] <= int8.validation.max_abs_diff["M"]
    # fp16 keeps float32 inputs and outputs: callers feed the same arrays to every variant
    session = ort.InferenceSession(str(full_bundle / "model.fp16.onnx"), providers=["CPUExecutionProvider"])
    assert {i.name: i.type for i in session.get_inputs()}["audio"] == "tensor(float)"
    assert session.get_outputs()[0].type == "tensor(float)"


def test_graph_handles_shapes_unlike_the_trace(full_bundle: Path, tiny_encoder: Path) -> None:
    model = make_tiny_model(tiny_encoder)
    graph = InferenceGraph(model)
    session = ort.InferenceSession(str(full_bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    vocab_size = model.text_model.model.config.vocab_size
    cases = random_cases(audio_dim=5, vision_dim=20, vocab_size=vocab_size, text_max_length=50, seed=42)
    cases += real_text_cases(tiny_encoder, audio_dim=5, vision_dim=20, text_max_length=12, seed=7)
    for case in cases:
        want = torch_runner(graph.reference())(case.feeds)["M"]
        got = session.run(["M"], case.feeds)[0].reshape(-1)
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=case.name)


def test_corrupted_weight_rejects_the_export(
    tiny_encoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_export = bundle_module.export_graph

    def export_then_corrupt(graph, example, path, *, opset):  # type: ignore[no-untyped-def]
        real_export(graph, example, path, opset=opset)
        model = onnx.load(str(path))
        weight = next(i for i in model.graph.initializer if i.name.endswith("post_fusion_layer_3.weight"))
        values = onnx.numpy_helper.to_array(weight) + np.float32(0.01)
        weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
        onnx.save(model, str(path))

    monkeypatch.setattr(bundle_module, "export_graph", export_then_corrupt)
    out = tmp_path / "rejected"
    with pytest.raises(ExportValidationError) as info:
        export_tiny_bundle(tiny_encoder, out)
    error = info.value
    assert error.abs_diff > error.atol == 1e-4
    assert error.output in {"M"} and error.case
    assert "worst |diff|" in str(error) and error.case in str(error)
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no bundle, no leftovers


def test_agent_picks_the_graph_variant(full_bundle: Path, tiny_encoder: Path, tmp_path: Path) -> None:
    spec = tiny_feature_spec()
    card = ModelCard.read(full_bundle)
    auto = ModelBundle.load(full_bundle, spec, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert auto.graph_name == "fp32"  # no CUDA here: the fp16 graph is for the CUDA provider
    int8 = ModelBundle.load(full_bundle, spec, variant="int8")
    fp16 = ModelBundle.load(full_bundle, spec, variant="fp16", providers=["CPUExecutionProvider"])
    assert (int8.graph_name, fp16.graph_name) == ("int8", "fp16")
    feeds = random_cases(audio_dim=5, vision_dim=20, vocab_size=card.text_vocab_size, text_max_length=50)[3].feeds
    reference = auto.run(feeds)["M"]
    int8_diff = float(np.abs(int8.run(feeds)["M"] - reference).max())
    assert 0 < int8_diff <= card.variant("int8").validation.atol  # type: ignore[union-attr]
    fp16_atol = card.variant("fp16").validation.atol  # type: ignore[union-attr]
    assert np.abs(fp16.run(feeds)["M"] - reference).max() <= fp16_atol
    no_variants = tmp_path / "plain"
    export_tiny_bundle(tiny_encoder, no_variants)
    with pytest.raises(ModelError, match="no int8 graph"):
        ModelBundle.load(no_variants, spec, variant="int8")


def test_real_samples_join_the_validation_cases(tiny_encoder: Path, tmp_path: Path) -> None:
    from exporters.cases import sample_cases
    from exporters.errors import ExportError

    feeds = random_cases(audio_dim=5, vision_dim=20, vocab_size=60, text_max_length=50, seed=3)[3].feeds
    samples = tmp_path / "samples.npz"
    np.savez(samples, **feeds)
    card = ModelCard.read(export_tiny_bundle(tiny_encoder, tmp_path / "b", samples=samples))
    assert {"samples samples.npz b=8", "samples samples.npz b=1"} <= set(card.validation.cases)
    partial = tmp_path / "partial.npz"
    np.savez(partial, input_ids=feeds["input_ids"])
    with pytest.raises(ExportError, match="missing arrays attention_mask"):
        sample_cases(partial)


def test_the_voices_audio_stage_exports_and_matches_torch(tiny_encoder: Path, tmp_path: Path) -> None:
    """Centring, standardisation, 8-frame steps and mean-pooled LSTM states (docs/selfmm.md §2.6) in the graph:
    the export's own validation compares it with torch on padded batches of every shape."""
    from tiny_selfmm import AUDIO_DIM

    config = {"audio_standardize": True, "audio_step_frames": 8, "audio_center_columns": (0, 2),
              "audio_voiced_column": 1, "audio_pool": "mean"}
    card = ModelCard.read(export_tiny_bundle(tiny_encoder, tmp_path / "voices", config=config))
    assert card.validation.cases and AUDIO_DIM > 2
    assert max(card.validation.max_abs_diff.values()) <= 1e-4, card.validation.max_abs_diff
