"""Forward parity with MMSA 2.2.1's own SELF_MM (AMIO) on identical weights and inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from selfmm_testing import TINY_VOCAB, mmsa_call, mmsa_model, random_batch

from models.config import SelfMMConfig
from models.selfmm import SelfMM

KEYS = ("M", "T", "A", "V", "Feature_f", "Feature_t", "Feature_a", "Feature_v")


def _pair(encoder_dir: Path, preset: str, seed: int) -> tuple[torch.nn.Module, SelfMM, SelfMMConfig]:
    config = SelfMMConfig.preset(preset, text_encoder_dir=encoder_dir)
    torch.manual_seed(seed)
    reference = mmsa_model(config).eval()
    ours = SelfMM(config, load_text_weights=False).eval()
    state = {k.removeprefix("Model."): v for k, v in reference.state_dict().items()}
    ours.load_state_dict(state, strict=True)
    return reference, ours, config


@pytest.mark.parametrize("preset", ["mosi", "sims"])
def test_tiny_bert_outputs_equal_mmsa(tiny_bert_dir: Path, preset: str) -> None:
    reference, ours, config = _pair(tiny_bert_dir, preset, seed=11)
    batch = random_batch(config, TINY_VOCAB, seed=1)
    with torch.no_grad():
        expected = mmsa_call(reference, batch)
        got = ours(**batch)
    for key in KEYS:
        assert got[key].shape == expected[key].shape, key
        torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=0, msg=key)
    assert expected["M"].abs().max() > 1e-3  # a non-trivial output, not all zeros


def test_minilm_outputs_equal_mmsa(minilm_dir: Path) -> None:
    reference, ours, config = _pair(minilm_dir, "mosi", seed=12)
    assert config.text_out == 384
    batch = random_batch(config, vocab=30522, seed=2)
    with torch.no_grad():
        expected = mmsa_call(reference, batch)
        got = ours(**batch)
    for key in KEYS:
        torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=0, msg=key)


def test_state_dict_names_are_mmsa_minus_prefix(tiny_bert_dir: Path) -> None:
    reference, ours, _ = _pair(tiny_bert_dir, "mosei", seed=0)
    expected = {k.removeprefix("Model."): tuple(v.shape) for k, v in reference.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == expected
    non_bert = [k for k in expected if not k.startswith("text_model.")]
    assert len(non_bert) == 36  # docs/selfmm.md §2.5


def test_gathered_lstm_equals_packed_final_state(tiny_bert_dir: Path) -> None:
    _, ours, config = _pair(tiny_bert_dir, "mosi", seed=4)
    batch = random_batch(config, TINY_VOCAB, seed=3)
    subnet = ours.audio_model
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        batch["audio"], batch["audio_lengths"], batch_first=True, enforce_sorted=False
    )
    with torch.no_grad():
        _, (h_n, _) = subnet.rnn(packed)
        expected = subnet.linear_1(h_n.squeeze(0))
        got = subnet(batch["audio"], batch["audio_lengths"])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_padding_content_does_not_change_outputs(tiny_bert_dir: Path) -> None:
    _, ours, config = _pair(tiny_bert_dir, "mosi", seed=5)
    batch = random_batch(config, TINY_VOCAB, seed=4)
    noisy = dict(batch)
    noisy["audio"] = batch["audio"].clone()
    noisy["audio"][1, 1:] = 100.0  # sample 1 has audio length 1
    with torch.no_grad():
        a, b = ours(**batch), ours(**noisy)
    torch.testing.assert_close(a["M"], b["M"], atol=0, rtol=0)


@pytest.mark.parametrize("lengths", [[0, 3, 3, 3, 3], [10, 3, 3, 3, 3]])
def test_invalid_lengths_are_refused(tiny_bert_dir: Path, lengths: list[int]) -> None:
    _, ours, config = _pair(tiny_bert_dir, "mosi", seed=6)
    batch = random_batch(config, TINY_VOCAB)
    batch["audio_lengths"] = torch.tensor(lengths)
    with pytest.raises(ValueError, match="sequence lengths must be in 1..9"):
        ours(**batch)


def test_frozen_encoder_gets_no_gradient(tiny_bert_dir: Path) -> None:
    config = SelfMMConfig.preset("mosi", text_encoder_dir=tiny_bert_dir, use_finetune=False)
    model = SelfMM(config).train()
    out = model(**random_batch(config, TINY_VOCAB))
    out["M"].sum().backward()
    assert all(p.grad is None for p in model.text_model.parameters())
    assert model.post_fusion_layer_1.weight.grad is not None
