"""LMF and TFN against MMSA 2.2.1 itself: forward, training steps, checkpoints, presets, input preprocessing."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from selfmm_testing import TINY_VOCAB

from models import lmf, tfn
from models.errors import CheckpointError, ModelConfigError

MMSA_DIR = Path(str(importlib.util.find_spec("MMSA").origin)).parent  # type: ignore[union-attr]
MODULES = {"lmf": lmf, "tfn": tfn}
OUTPUTS = ("M", "Feature_t", "Feature_a", "Feature_v", "Feature_f")
# small widths; audio/vision are MOSI's 5 and 20, text the tiny BERT's 32
SMALL: dict[str, dict[str, Any]] = {
    "lmf": dict(hidden_dims=(16, 8, 12), rank=3),
    "tfn": dict(hidden_dims=(16, 8, 12), text_out=6, post_fusion_dim=10),
}


def _config(name: str, encoder_dir: Path) -> Any:
    config_class = lmf.LMFConfig if name == "lmf" else tfn.TFNConfig
    return config_class.preset("mosi", text_encoder_dir=encoder_dir, **SMALL[name])


def _mmsa_args(name: str, config: Any, tmp_path: Path) -> Any:
    """MMSA's own config for mosi (get_config_regression), with the small widths of `config`."""
    from MMSA.config import get_config_regression

    args = get_config_regression(name, "mosi")
    args.update(
        train_mode="regression",
        device=torch.device("cpu"),
        cur_seed=1,
        model_save_path=str(tmp_path / f"{name}.pth"),
        feature_dims=list(config.feature_dims),
        **{key: list(value) if isinstance(value, tuple) else value for key, value in SMALL[name].items()},
    )
    return args


def _pair(name: str, encoder_dir: Path, tmp_path: Path, seed: int) -> tuple[torch.nn.Module, Any, Any, Any]:
    """MMSA's AMIO with perturbed weights and BatchNorm statistics, and ours loaded from its state dict."""
    from MMSA.models.AMIO import AMIO

    config = _config(name, encoder_dir)
    args = _mmsa_args(name, config, tmp_path)
    torch.manual_seed(seed)
    reference = AMIO(args)
    with torch.no_grad():
        for key, tensor in reference.state_dict().items():
            if key.endswith(("output_range", "output_shift", "num_batches_tracked")):
                continue
            noise = torch.rand_like(tensor) + 0.5 if key.endswith("running_var") else torch.randn_like(tensor) * 0.1
            tensor.copy_(noise if "running" in key else tensor + noise)
    module = MODULES[name]
    ours = (module.LMF if name == "lmf" else module.TFN)(config, load_text_weights=False)
    module.load_mmsa_state_dict(ours, reference.state_dict())
    return reference, ours, config, args


def _tokens(batch: int, length: int, text_lengths: list[int], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = (torch.arange(length)[None, :] < torch.tensor(text_lengths)[:, None]).long()
    ids = torch.randint(5, TINY_VOCAB, (batch, length), generator=g) * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def _mmsa_normalized(features: torch.Tensor) -> torch.Tensor:
    """MMSA's data_loader `need_normalized` step itself, on [N, T, D] → [N, 1, D]."""
    from MMSA.data_loader import MMDataset

    dataset = MMDataset.__new__(MMDataset)
    dataset.audio = features.numpy().astype(np.float32)
    dataset.vision = features.numpy().astype(np.float32)
    dataset._MMDataset__normalize()  # type: ignore[attr-defined]
    return torch.from_numpy(dataset.audio)


def _text_states(model: Any, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model.text_model(**tokens)


@pytest.mark.parametrize("name", ["lmf", "tfn"])
def test_core_outputs_equal_mmsa(name: str, tiny_bert_dir: Path, tmp_path: Path) -> None:
    reference, ours, config, _ = _pair(name, tiny_bert_dir, tmp_path, seed=1)
    g = torch.Generator().manual_seed(2)
    text = torch.randn(6, 7, config.feature_dims[0], generator=g)
    audio = torch.randn(6, 1, config.audio_dim, generator=g)
    video = torch.randn(6, 1, config.vision_dim, generator=g)
    for train in (False, True):  # eval; then train mode, where both must draw the same dropout masks
        reference.train(train)
        ours.train(train)
        torch.manual_seed(3)
        with torch.no_grad():
            expected = reference(text, audio, video)
        torch.manual_seed(3)
        with torch.no_grad():
            got = ours.core(text, audio, video)
        for key in OUTPUTS:
            assert got[key].shape == expected[key].shape, key
            torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=0, msg=f"{key} train={train}")
        assert expected["M"].std() > 1e-3  # not a constant output


class _StopAfter:
    """A train loader that ends MMSA's do_train (which loops until early stop) after `n` batches."""

    class Done(Exception):
        pass

    def __init__(self, batches: list[dict[str, Any]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        yield from self.batches
        raise self.Done


@pytest.mark.parametrize("name", ["lmf", "tfn"])
def test_training_steps_equal_mmsa_trainer(name: str, tiny_bert_dir: Path, tmp_path: Path) -> None:
    """Three steps of MMSA's own do_train (its optimiser, criterion, dropout draws) and three of ours."""
    from MMSA.trains.singleTask.LMF import LMF as MMSALMFTrainer
    from MMSA.trains.singleTask.TFN import TFN as MMSATFNTrainer

    reference, ours, config, args = _pair(name, tiny_bert_dir, tmp_path, seed=4)
    module = MODULES[name]
    initial = {k: v.clone() for k, v in reference.state_dict().items()}
    g = torch.Generator().manual_seed(5)
    ours_batches, mmsa_batches = [], []
    for step in range(3):
        tokens = _tokens(8, 6, [6] * 8, seed=10 + step)  # no padding: MMSA's text features are these states
        audio = torch.randn(8, 9, config.audio_dim, generator=g)
        vision = torch.randn(8, 4, config.vision_dim, generator=g)
        labels = torch.rand(8, generator=g) * 6 - 3
        ours_batches.append(
            (
                {
                    **tokens,
                    "audio": audio,
                    "audio_lengths": torch.full((8,), 9),
                    "vision": vision,
                    "vision_lengths": torch.full((8,), 4),
                },
                labels,
            )
        )
        mmsa_batches.append(
            {
                "text": _text_states(ours, tokens),
                "audio": _mmsa_normalized(audio),
                "vision": _mmsa_normalized(vision),
                "labels": {"M": labels.view(-1, 1)},
            }
        )

    trainer = (MMSALMFTrainer if name == "lmf" else MMSATFNTrainer)(args)
    torch.manual_seed(6)
    with pytest.raises(_StopAfter.Done):
        trainer.do_train(reference, {"train": _StopAfter(mmsa_batches)})

    torch.manual_seed(6)
    ours.train()
    optimizer = module.build_optimizer(ours, config)
    for inputs, labels in ours_batches:
        optimizer.zero_grad()
        module.loss(ours(**inputs), labels).backward()
        optimizer.step()

    expected = reference.state_dict()
    got = module.mmsa_state_dict(ours)
    assert list(got) == list(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=0, msg=key)
    moved = [k for k in expected if not torch.equal(expected[k], initial[k])]
    assert "Model.audio_subnet.linear_1.weight" in moved and "Model.text_subnet.rnn.weight_hh_l0" in moved
    if name == "lmf":  # MMSA's parameter groups [:3] and [5:] leave these two out
        assert "Model.fusion_weights" not in moved and "Model.fusion_bias" not in moved
        assert "Model.text_factor" in moved
    else:
        assert "Model.post_fusion_layer_1.weight" in moved and "Model.output_range" not in moved


@pytest.mark.parametrize("name", ["lmf", "tfn"])
def test_mmsa_state_dict_round_trip_is_identical(name: str, tiny_bert_dir: Path, tmp_path: Path) -> None:
    from MMSA.models.AMIO import AMIO

    reference, ours, _, args = _pair(name, tiny_bert_dir, tmp_path, seed=7)
    original = reference.state_dict()
    back = MODULES[name].mmsa_state_dict(ours)
    assert list(back) == list(original)
    for key, tensor in original.items():
        assert back[key].dtype == tensor.dtype and torch.equal(back[key], tensor), key
    AMIO(args).load_state_dict(back, strict=True)
    # through a .pth file as well, and a foreign key is an error that names it
    path = tmp_path / "mmsa.pth"
    torch.save(original, path)
    MODULES[name].load_mmsa_state_dict(ours, path)
    with pytest.raises(CheckpointError, match="unexpected"):
        MODULES[name].load_mmsa_state_dict(ours, {**original, "Model.extra": torch.zeros(1)})


@pytest.mark.parametrize("name", ["lmf", "tfn"])
@pytest.mark.parametrize("dataset", ["mosi", "mosei", "sims"])
def test_presets_match_mmsa_config(name: str, dataset: str, minilm_dir: Path) -> None:
    mmsa = json.loads((MMSA_DIR / "config" / "config_regression.json").read_text())
    common, params = mmsa[name]["commonParams"], mmsa[name]["datasetParams"][dataset]
    config = (lmf.LMFConfig if name == "lmf" else tfn.TFNConfig).preset(dataset, text_encoder_dir=minilm_dir)
    assert type(config).model_name == name
    for key, value in params.items():
        ours = getattr(config, key)
        assert (list(ours) if isinstance(ours, tuple) else ours) == value, key
    assert config.early_stop == common["early_stop"]
    # what the model assumes: unaligned data, time means of audio/vision
    assert (common["need_normalized"], common["need_data_aligned"], common["need_model_aligned"]) == (
        True,
        False,
        False,
    )
    dims = mmsa["datasetCommonParams"][dataset]["unaligned"]["feature_dims"]
    assert list(config.feature_dims) == [384, *dims[1:]]
    assert (config.audio_dim, config.vision_dim) == tuple(dims[1:])
    assert type(config).from_dict(json.loads(json.dumps(config.to_dict()))) == config
    if isinstance(config, tfn.TFNConfig):
        assert (config.output_range, config.output_shift) == (6.0, -3.0)


def test_config_errors_and_task_ranges(minilm_dir: Path) -> None:
    with pytest.raises(ModelConfigError, match="unknown config fields: rnak"):
        lmf.LMFConfig.preset("mosi", text_encoder_dir=minilm_dir, rnak=4)
    with pytest.raises(ModelConfigError, match="dropouts"):
        tfn.TFNConfig.preset("mosi", text_encoder_dir=minilm_dir, dropouts=(0.1, 0.1, 0.1, 1.5))
    with pytest.raises(ModelConfigError, match="lacks field"):
        lmf.LMFConfig.from_dict({"text_encoder_dir": str(minilm_dir)})
    with pytest.raises(ModelConfigError, match="hidden_dims"):
        lmf.LMFConfig.from_dict({"text_encoder_dir": "x", "feature_dims": [4, 5, 6], "hidden_dims": [8, 0, 8]})
    depression = tfn.TFNConfig.preset("mosi", text_encoder_dir=minilm_dir, task="depression")
    assert (depression.output_range, depression.output_shift) == (24.0, 0.0)


@pytest.mark.parametrize("name", ["lmf", "tfn"])
def test_unpadded_batch_equals_mmsa_on_its_normalized_inputs(name: str, tiny_bert_dir: Path, tmp_path: Path) -> None:
    reference, ours, config, _ = _pair(name, tiny_bert_dir, tmp_path, seed=8)
    reference.eval()
    ours.eval()
    g = torch.Generator().manual_seed(9)
    tokens = _tokens(5, 6, [6] * 5, seed=9)
    audio, vision = torch.randn(5, 7, config.audio_dim, generator=g), torch.randn(5, 3, config.vision_dim, generator=g)
    batch = {
        **tokens,
        "audio": audio,
        "audio_lengths": torch.full((5,), 7),
        "vision": vision,
        "vision_lengths": torch.full((5,), 3),
    }
    with torch.no_grad():
        got = ours(**batch)
        expected = reference(_text_states(ours, tokens), _mmsa_normalized(audio), _mmsa_normalized(vision))
    for key in OUTPUTS:
        torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=0, msg=key)


@pytest.mark.parametrize("name", ["lmf", "tfn"])
def test_padded_batch_equals_core_on_each_unpadded_sample(name: str, tiny_bert_dir: Path, tmp_path: Path) -> None:
    """Each row of a padded batch scores what the core gives MMSA's inputs for that sample alone: the
    encoder's states of its own tokens and MMSA's time mean of its own frames. Padding content is ignored."""
    _, ours, config, _ = _pair(name, tiny_bert_dir, tmp_path, seed=10)
    ours.eval()
    g = torch.Generator().manual_seed(11)
    text_lengths, audio_lengths, vision_lengths = [6, 2, 4, 1, 5], [9, 1, 4, 6, 2], [1, 5, 3, 5, 2]
    tokens = _tokens(5, 6, text_lengths, seed=12)
    audio = torch.randn(5, 9, config.audio_dim, generator=g)
    vision = torch.randn(5, 5, config.vision_dim, generator=g)
    for features, lengths in ((audio, audio_lengths), (vision, vision_lengths)):
        for row, length in enumerate(lengths):
            features[row, length:] = float("nan") if row % 2 else 100.0
    batch = {
        **tokens,
        "audio": audio,
        "audio_lengths": torch.tensor(audio_lengths),
        "vision": vision,
        "vision_lengths": torch.tensor(vision_lengths),
    }
    with torch.no_grad():
        got = ours(**batch)
        for row in range(5):
            alone = {k: v[row : row + 1, : text_lengths[row]] for k, v in tokens.items()}
            expected = ours.core(
                _text_states(ours, alone),
                _mmsa_normalized(audio[row : row + 1, : audio_lengths[row]]),
                _mmsa_normalized(vision[row : row + 1, : vision_lengths[row]]),
            )
            for key in ("M", "Feature_t", "Feature_a", "Feature_v"):
                torch.testing.assert_close(got[key][row], expected[key][0], atol=1e-5, rtol=0, msg=f"{key}[{row}]")
    assert torch.isfinite(got["M"]).all() and got["M"].std() > 1e-4


def test_mmsa_mean_over_padding_is_ours_scaled_by_length() -> None:
    """The one difference of the time mean (models/tfn_family.py): MMSA divides by the padded length."""
    from models.tfn_family import valid_frame_mean

    g = torch.Generator().manual_seed(13)
    lengths = torch.tensor([8, 3, 1])
    frames = torch.randn(3, 8, 4, generator=g) * (torch.arange(8)[None, :, None] < lengths[:, None, None])
    ours = valid_frame_mean(frames, lengths)
    torch.testing.assert_close(_mmsa_normalized(frames), ours * lengths.view(-1, 1, 1) / 8, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours[0], _mmsa_normalized(frames[:1])[0], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="sequence lengths"):
        valid_frame_mean(frames, torch.tensor([8, 0, 1]))
