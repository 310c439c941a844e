"""The optional audio input stage (docs/selfmm.md §2.6): off = MMSA's model; on = padding-blind."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.config import SelfMMConfig
from models.errors import ModelConfigError
from models.selfmm import AudioSteps, SelfMM
from models.train import shifted_audio


def _config(encoder: Path, **overrides: object) -> SelfMMConfig:
    return SelfMMConfig.preset("mosi", text_encoder_dir=encoder, audio_dim=5, vision_dim=3, **overrides)


def test_off_by_default_so_mmsa_parameter_names_are_unchanged(tiny_bert_dir: Path) -> None:
    model = SelfMM(_config(tiny_bert_dir))
    assert model.audio_steps is None
    assert not any(name.startswith("audio_steps") for name in model.state_dict())


def test_steps_are_masked_means_of_each_sequences_own_frames() -> None:
    steps = AudioSteps(2, step_frames=4, standardize=False)
    x = torch.arange(20, dtype=torch.float32).reshape(1, 10, 2)
    out, lengths = steps(x, torch.tensor([10]))
    assert lengths.tolist() == [3]
    assert torch.allclose(out[0, 0], x[0, :4].mean(0)) and torch.allclose(out[0, 2], x[0, 8:10].mean(0))


def test_statistics_standardise_and_a_zero_std_is_floored() -> None:
    steps = AudioSteps(2, step_frames=1, standardize=True)
    steps.set_statistics(torch.tensor([1.0, -2.0]), torch.tensor([2.0, 0.0]))
    out, _ = steps(torch.tensor([[[3.0, -2.0]]]), torch.tensor([1]))
    assert out[0, 0].tolist() == pytest.approx([1.0, 0.0])
    assert steps.std.tolist() == pytest.approx([2.0, 1e-3])


def test_a_window_scores_the_same_alone_and_padded_in_a_batch(tiny_bert_dir: Path) -> None:
    torch.manual_seed(0)
    model = SelfMM(_config(tiny_bert_dir, audio_standardize=True, audio_step_frames=8)).eval()
    assert model.audio_steps is not None
    model.audio_steps.set_statistics(torch.randn(5), torch.rand(5) + 0.5)
    lengths = torch.tensor([13, 40, 1])
    audio = torch.randn(3, 40, 5) * (torch.arange(40)[None, :, None] < lengths[:, None, None])
    vision, vision_lengths = torch.zeros(3, 1, 3), torch.ones(3, dtype=torch.long)
    ids = torch.tensor([[101, 7, 102]] * 3)
    mask, types = torch.ones_like(ids), torch.zeros_like(ids)
    with torch.no_grad():
        batched = model(ids, mask, types, audio, lengths, vision, vision_lengths)
        for i in range(3):
            n = int(lengths[i])
            alone = model(ids[i:i + 1], mask[i:i + 1], types[i:i + 1], audio[i:i + 1, :n], lengths[i:i + 1],
                          vision[i:i + 1], vision_lengths[i:i + 1])
            for head in "MA":
                assert torch.allclose(alone[head], batched[head][i:i + 1], atol=1e-5), (head, i)


def test_centring_removes_a_constant_per_window_offset_of_the_chosen_columns_only() -> None:
    """A microphone's gain adds a constant to the level and to mfcc_0: centred columns no longer see it."""
    steps = AudioSteps(3, step_frames=1, standardize=False, center_columns=(0,), voiced_column=2)
    voiced = torch.tensor([1.0, 1.0, 0.0, 1.0])
    x = torch.stack([torch.tensor([-3.0, -2.5, -9.0, -3.5]), torch.tensor([0.1, 0.2, 0.3, 0.4]), voiced], dim=-1)[None]
    louder = x.clone()
    louder[..., 0] += 1.5
    out, _ = steps(x, torch.tensor([4]))
    out_louder, _ = steps(louder, torch.tensor([4]))
    assert torch.allclose(out, out_louder)
    assert out[0, :, 0].tolist() == pytest.approx([0.0, 0.5, -6.0, -0.5])  # mean of the voiced frames: -3
    assert torch.equal(out[0, :, 1:], x[0, :, 1:])


def test_centring_uses_every_valid_frame_when_none_is_voiced_and_leaves_padding_at_zero() -> None:
    steps = AudioSteps(2, step_frames=1, standardize=False, center_columns=(0,), voiced_column=1)
    x = torch.tensor([[[2.0, 0.0], [4.0, 0.0], [0.0, 0.0]]])
    out, _ = steps(x, torch.tensor([2]))
    assert out[0, :, 0].tolist() == pytest.approx([-1.0, 1.0, 0.0])


def test_centred_windows_score_the_same_alone_and_padded_and_columns_are_checked(tiny_bert_dir: Path) -> None:
    torch.manual_seed(1)
    config = _config(tiny_bert_dir, audio_standardize=True, audio_step_frames=4, audio_center_columns=(0, 3),
                     audio_voiced_column=4)
    model = SelfMM(config).eval()
    assert model.audio_steps is not None and "audio_steps.center_selected" not in model.state_dict()
    lengths = torch.tensor([9, 30])
    audio = torch.randn(2, 30, 5)
    audio[..., 4] = (audio[..., 4] > 0).float()
    audio = audio * (torch.arange(30)[None, :, None] < lengths[:, None, None])
    vision, vision_lengths = torch.zeros(2, 1, 3), torch.ones(2, dtype=torch.long)
    ids = torch.tensor([[101, 7, 102]] * 2)
    mask, types = torch.ones_like(ids), torch.zeros_like(ids)
    with torch.no_grad():
        batched = model(ids, mask, types, audio, lengths, vision, vision_lengths)
        alone = model(ids[:1], mask[:1], types[:1], audio[:1, :9], lengths[:1], vision[:1], vision_lengths[:1])
    assert torch.allclose(alone["M"], batched["M"][:1], atol=1e-5)
    with pytest.raises(Exception, match="out of range"):
        _config(tiny_bert_dir, audio_center_columns=(5,))


def test_mean_pooling_reads_every_valid_state_and_no_padding(tiny_bert_dir: Path) -> None:
    from models.selfmm import AuViSubNet

    torch.manual_seed(0)
    net = AuViSubNet(5, 4, 3, 0.0, pool="mean").eval()
    lengths = torch.tensor([6, 2])
    x = torch.randn(2, 6, 5)
    with torch.no_grad():
        pooled = net(x, lengths)
        states, _ = net.rnn(x)
        for i, n in enumerate(lengths.tolist()):
            assert torch.allclose(pooled[i], net.linear_1(states[i, :n].mean(0)), atol=1e-6)
        x_changed = x.clone()
        x_changed[1, 2:] = 99.0  # padding of the short sequence
        assert torch.allclose(net(x_changed, lengths)[1], pooled[1], atol=1e-6)
        # the last state alone (MMSA) is not the mean of the states
        last = AuViSubNet(5, 4, 3, 0.0)
        last.load_state_dict(net.state_dict())
        assert not torch.allclose(last.eval()(x, lengths), pooled, atol=1e-4)
    model = SelfMM(_config(tiny_bert_dir, audio_standardize=True, audio_pool="mean"))
    assert model.audio_model.pool == "mean" and model.video_model.pool == "last"


def test_an_unknown_audio_summary_is_refused(tiny_bert_dir: Path) -> None:
    with pytest.raises(ModelConfigError, match="audio_pool must be one of last, mean, got 'max'"):
        _config(tiny_bert_dir, audio_pool="max")


def test_shifted_audio_drops_up_to_a_step_of_leading_frames_per_row() -> None:
    torch.manual_seed(0)
    frames = torch.arange(1, 11, dtype=torch.float32)
    audio = torch.stack([frames, frames, frames])[..., None].repeat(1, 1, 2)  # [3, 10, 2], frame i holds i + 1
    lengths = torch.tensor([10, 7, 1])
    audio[1, 7:] = 0.0
    audio[2, 1:] = 0.0
    seen: set[int] = set()
    for _ in range(40):
        moved, shorter = shifted_audio(audio, lengths, steps=4)
        shift = lengths - shorter
        assert ((0 <= shift) & (shift <= 3)).all() and shorter[2] == 1  # a one-frame row keeps its frame
        for row in range(3):
            n, r = int(shorter[row]), int(shift[row])
            assert torch.equal(moved[row, :n], audio[row, r: r + n]) and not moved[row, n:].any()
        seen.update(shift[:2].tolist())
    assert seen == {0, 1, 2, 3}  # every phase of a 4-frame step is drawn
    assert torch.equal(shifted_audio(audio, lengths, steps=1)[0], audio)
