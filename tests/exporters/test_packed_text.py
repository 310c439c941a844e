"""The packed text encoder of the exported graph: same [CLS] as MMSA's padded BertModel, padding-blind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from tiny_selfmm import export_tiny_bundle, make_tiny_model

from core.card import ModelCard
from exporters.onnx import InferenceGraph
from exporters.packed_text import PackedBertCLS, can_pack
from models.config import default_text_encoder_dir
from models.selfmm import TextEncoder


def _padded_batch(lengths: list[int], vocab: int, width: int | None = None, seed: int = 0) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    width = width or max(lengths)
    ids = np.zeros((len(lengths), width), np.int64)
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(1, vocab, n)
        mask[row, :n] = 1
    types = np.zeros_like(ids)
    types[:, width // 2 :] = mask[:, width // 2 :]  # a second segment where there are tokens: types matter too
    return [torch.from_numpy(a) for a in (ids, mask, types)]


@pytest.mark.parametrize(
    "lengths,width", [([1], None), ([5], None), ([3, 9, 1, 14, 7], None), ([4, 4], 50), ([12, 2, 30], 31)]
)
def test_packed_cls_equals_minilm_padded_cls(lengths: list[int], width: int | None) -> None:
    encoder = TextEncoder(str(default_text_encoder_dir()), "bert", use_finetune=False, load_weights=True).eval()
    packed = PackedBertCLS(encoder.model).eval()  # type: ignore[arg-type]
    inputs = _padded_batch(lengths, encoder.model.config.vocab_size, width)  # type: ignore[union-attr]
    with torch.no_grad():
        want = encoder(*inputs)[:, 0, :]
        got = packed(*inputs)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)


@pytest.mark.parametrize("layers", [1, 3])
def test_packed_cls_equals_padded_cls_for_any_depth(layers: int, tmp_path: Path) -> None:
    from tiny_selfmm import make_tiny_encoder

    directory = make_tiny_encoder(tmp_path / "enc", layers=layers, seed=layers)
    encoder = TextEncoder(str(directory), "bert", use_finetune=False, load_weights=True).eval()
    inputs = _padded_batch([2, 7, 1, 5], encoder.model.config.vocab_size, width=9)  # type: ignore[union-attr]
    with torch.no_grad():
        want = encoder(*inputs)[:, 0, :]
        got = PackedBertCLS(encoder.model).eval()(*inputs)  # type: ignore[arg-type]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_packed_graph_scores_a_text_the_same_whatever_the_padding_and_batch(
    tiny_encoder: Path, tmp_path: Path
) -> None:
    bundle_dir = export_tiny_bundle(tiny_encoder, tmp_path / "b")
    card = ModelCard.read(bundle_dir)
    assert card.text_packed and card.validation.passed
    assert "NonZero" in {n.op_type for n in onnx.load(str(bundle_dir / "model.onnx")).graph.node}
    session = ort.InferenceSession(str(bundle_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    vocab = card.text_vocab_size
    ids, mask, types = (t.numpy() for t in _padded_batch([6, 2, 11], vocab, width=40, seed=1))
    rng = np.random.default_rng(2)
    audio = rng.standard_normal((3, 9, 5)).astype(np.float32)
    vision = rng.standard_normal((3, 4, 20)).astype(np.float32)
    lengths = {"audio_lengths": np.array([9, 3, 5]), "vision_lengths": np.array([4, 4, 1])}
    batch = session.run(["M"], dict(input_ids=ids, attention_mask=mask, token_type_ids=types, audio=audio,
                                    vision=vision, **lengths))[0].reshape(-1)
    for row, n in enumerate((6, 2, 11)):
        alone = dict(
            input_ids=ids[row : row + 1, :n], attention_mask=mask[row : row + 1, :n],
            token_type_ids=types[row : row + 1, :n], audio=audio[row : row + 1, : lengths["audio_lengths"][row]],
            vision=vision[row : row + 1, : lengths["vision_lengths"][row]],
            audio_lengths=lengths["audio_lengths"][row : row + 1],
            vision_lengths=lengths["vision_lengths"][row : row + 1],
        )
        assert abs(session.run(["M"], alone)[0].item() - batch[row]) <= 1e-5


def test_roberta_and_relative_positions_export_unpacked(tiny_encoder: Path) -> None:
    from transformers import RobertaConfig, RobertaModel

    tiny_roberta = RobertaConfig(vocab_size=40, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=16, max_position_embeddings=20)
    assert not can_pack(RobertaModel(tiny_roberta))  # its positions come from the ids, not the mask
    model = make_tiny_model(tiny_encoder)
    assert InferenceGraph(model).text_packed
    assert not InferenceGraph(model, pack_text=False).text_packed
    model.text_model.model.config.position_embedding_type = "relative_key"
    assert not can_pack(model.text_model.model)
    assert not InferenceGraph(model).text_packed
