"""MulT against MMSA 2.2.1's own MULT (AMIO, use_bert=false) on random inputs and identical weights: forward,
one accumulated training step, the state dict round trip and the presets; then our outer model (tokens ->
frozen encoder -> MulTCore), the refusals and an ONNX export."""

from __future__ import annotations

import inspect
import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from selfmm_testing import TINY_VOCAB, random_batch

from core.card import INPUT_NAMES
from models.errors import CheckpointError, ModelConfigError
from models.mult import MulT, MulTConfig, build_optimizer, build_scheduler, load_mmsa_state_dict, loss, mmsa_state_dict

SMALL = {"dst_feature_dim_nheads": (8, 2), "nlevels": 2}
OUTPUTS = ("M", "Feature_t", "Feature_a", "Feature_v", "Feature_f")


def _config(encoder_dir: Path, preset: str = "mosi", **overrides: Any) -> MulTConfig:
    return MulTConfig.preset(preset, text_encoder_dir=encoder_dir, **{**SMALL, **overrides})


def _mmsa_args(config: MulTConfig) -> Any:
    """MMSA's args for mult as get_config_regression builds them (unaligned feature_dims, use_bert false)."""
    from easydict import EasyDict

    args = EasyDict(
        model_name="mult",
        dataset_name=config.dataset,
        train_mode="regression",
        KeyEval="Loss",
        device=torch.device("cpu"),
    )
    for key, value in config.to_dict().items():
        args[key] = list(value) if isinstance(value, tuple) else value
    return args


def _pair(encoder_dir: Path, preset: str = "mosi", seed: int = 0, **overrides: Any) -> tuple[Any, MulT, MulTConfig]:
    """MMSA's AMIO(MULT) and our MulT built from one seed, ours then loaded with MMSA's state dict."""
    from MMSA.models.AMIO import AMIO

    config = _config(encoder_dir, preset, **overrides)
    torch.manual_seed(seed)
    reference = AMIO(_mmsa_args(config))
    mmsa_rng = torch.get_rng_state()
    torch.manual_seed(seed)
    ours = MulT(config, load_text_weights=False)
    # same creation order and draws: same initial weights, and the random stream left where MMSA leaves it
    state = reference.state_dict()
    assert all(torch.equal(v, state["Model." + k]) for k, v in ours.core.state_dict().items())
    assert torch.equal(torch.get_rng_state(), mmsa_rng)
    load_mmsa_state_dict(ours, state)
    return reference, ours, config


def _features(config: MulTConfig, seed: int, lengths: tuple[int, int, int] = (11, 9, 7)) -> list[torch.Tensor]:
    """Unaligned text/audio/vision features [B, T, D]: what MMSA's MULT takes."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, steps, dim, generator=g) for steps, dim in zip(lengths, config.feature_dims, strict=True)]


@pytest.mark.parametrize("dataset", ["mosi", "mosei", "sims"])
def test_presets_equal_mmsa_config(dataset: str, tiny_bert_dir: Path) -> None:
    mmsa = json.loads((files("MMSA") / "config" / "config_regression.json").read_text())
    params = {**mmsa["mult"]["commonParams"], **mmsa["mult"]["datasetParams"][dataset]}
    config = MulTConfig.preset(dataset, text_encoder_dir=tiny_bert_dir).to_dict()
    for key, value in params.items():
        if key == "pretrained":  # the BERT behind the pickles' text features; ours is text_encoder_dir
            continue
        assert config[key] == (tuple(value) if isinstance(value, list) else value), key
    assert set(config) - set(params) == {"text_encoder_dir", "feature_dims", "dataset", "task"}
    dims = mmsa["datasetCommonParams"][dataset]["unaligned"]["feature_dims"]
    assert config["feature_dims"] == (32, *dims[1:])  # text follows the encoder, not MMSA's 768


@pytest.mark.parametrize(
    ("preset", "overrides"),
    [("mosi", {}), ("mosei", {"attn_mask": False}), ("sims", {"audio_dim": 8})],  # sims: audio is d wide
)
def test_forward_equals_mmsa(tiny_bert_dir: Path, preset: str, overrides: dict[str, Any]) -> None:
    reference, ours, config = _pair(tiny_bert_dir, preset, seed=3, **overrides)
    reference.eval()
    ours.eval()
    features = _features(config, seed=1)
    with torch.no_grad():
        expected = reference(*features)
        got = ours.core(*features)
    assert set(got) == set(expected) == set(OUTPUTS)
    for key in OUTPUTS:
        assert got[key].shape == expected[key].shape, key
        torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=0, msg=key)
    assert expected["M"].abs().max() > 1e-3
    assert ours.core.state_dict().keys() == {k.removeprefix("Model.") for k in reference.state_dict()}


def test_one_accumulated_step_equals_mmsa(tiny_bert_dir: Path) -> None:
    """MMSA's do_train, batch by batch: zero_grad, forward (dropout on), L1, backward, clip_grad_value_ after
    each backward, Adam step after update_epochs (2 here) batches."""
    from MMSA.trains.singleTask.MULT import MULT as MMSATrainer

    source = inspect.getsource(MMSATrainer.do_train)
    assert "optim.Adam(model.parameters(), lr=self.args.learning_rate)" in source
    assert "ReduceLROnPlateau(optimizer, mode='min', factor=0.1, verbose=True, patience=self.args.patience)" in source
    assert "nn.utils.clip_grad_value_([param for param in model.parameters() if param.requires_grad]" in source

    reference, ours, config = _pair(tiny_bert_dir, "mosi", seed=5, update_epochs=2)
    criterion = MMSATrainer(_mmsa_args(config)).criterion
    batches = [random_batch(config, TINY_VOCAB, seed=s) for s in (1, 2)]  # type: ignore[arg-type]
    labels = [torch.empty(5).uniform_(-3, 3, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    with torch.no_grad():
        texts = [ours.text_model(b["input_ids"], b["attention_mask"], b["token_type_ids"]) for b in batches]

    def run(model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: Any) -> list[torch.Tensor]:
        torch.manual_seed(42)
        model.train()
        optimizer.zero_grad()
        outputs = []
        for i in range(config.update_epochs):
            output, value = step(i)
            value.backward()
            torch.nn.utils.clip_grad_value_([p for p in model.parameters() if p.requires_grad], config.grad_clip)
            outputs.append(output.detach())
        optimizer.step()
        return outputs

    def mmsa_step(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        b = batches[i]
        output = reference(texts[i], b["audio"], b["vision"])["M"]
        return output, criterion(output, labels[i].view(-1, 1))

    def our_step(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = ours(**batches[i])
        return outputs["M"], loss(outputs, labels[i])

    before = {k: v.clone() for k, v in ours.core.state_dict().items()}
    mmsa_optimizer = torch.optim.Adam(reference.parameters(), lr=config.learning_rate)
    expected = run(reference, mmsa_optimizer, mmsa_step)
    got = run(ours, build_optimizer(ours, config), our_step)
    for e, g in zip(expected, got, strict=True):  # the same dropout masks
        torch.testing.assert_close(g, e, atol=1e-5, rtol=0)
    assert max(p.grad.abs().max() for p in reference.parameters() if p.grad is not None) == config.grad_clip
    after = reference.state_dict()
    for key, value in ours.core.state_dict().items():
        torch.testing.assert_close(value, after["Model." + key], atol=1e-5, rtol=0, msg=key)
    moved = [k for k, v in ours.core.state_dict().items() if not torch.equal(v, before[k])]
    assert len(moved) > 100
    assert all(p.grad is None for p in ours.text_model.parameters())


def test_optimizer_and_scheduler_settings(tiny_bert_dir: Path) -> None:
    config = _config(tiny_bert_dir, "mosei")
    model = MulT(config, load_text_weights=False)
    optimizer = build_optimizer(model, config)
    (group,) = optimizer.param_groups
    assert isinstance(optimizer, torch.optim.Adam)
    assert (group["lr"], group["weight_decay"], group["betas"], group["eps"]) == (0.0005, 0, (0.9, 0.999), 1e-8)
    assert [id(p) for p in group["params"]] == [id(p) for p in model.core.parameters()]
    scheduler = build_scheduler(optimizer, config)
    scheduler.step(1.0)
    for _ in range(config.patience):  # 20 epochs without improvement: lr kept
        scheduler.step(1.0)
    assert group["lr"] == 0.0005
    scheduler.step(1.0)  # the 21st: lr x 0.1
    assert group["lr"] == pytest.approx(0.00005)
    outputs = {"M": torch.tensor([[1.0], [-1.0]])}
    assert loss(outputs, torch.tensor([0.5, 1.0])).item() == pytest.approx(1.25)


def test_state_dict_round_trip_is_identical(tiny_bert_dir: Path) -> None:
    from MMSA.models.AMIO import AMIO

    reference, ours, config = _pair(tiny_bert_dir, "sims", seed=7)
    for value in reference.parameters():  # weights no initialiser would give
        value.data.normal_()
    original = reference.state_dict()
    load_mmsa_state_dict(ours, original)
    back = mmsa_state_dict(ours)
    assert list(back) == list(original)
    assert all(torch.equal(back[k], original[k]) for k in original)
    AMIO(_mmsa_args(config)).load_state_dict(back, strict=True)

    other = MulT(_config(tiny_bert_dir, "sims", nlevels=3), load_text_weights=False)
    with pytest.raises(CheckpointError, match=r"missing \[72\]: trans_a_with_l.layers.2"):
        load_mmsa_state_dict(other, original)
    with pytest.raises(CheckpointError, match="lack the 'Model.' prefix"):
        load_mmsa_state_dict(ours, ours.core.state_dict())


def test_outer_model_equals_core_on_encoder_features(tiny_bert_dir: Path) -> None:
    config = _config(tiny_bert_dir, "mosi")
    model = MulT(config).train()
    assert not model.text_model.training  # frozen features, as MMSA's precomputed ones
    batch = random_batch(config, TINY_VOCAB, seed=3)  # type: ignore[arg-type]
    torch.manual_seed(8)
    got = model(**batch)
    with torch.no_grad():
        text = model.text_model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert text.shape == (5, 12, 32)
    torch.manual_seed(8)
    expected = model.core(text, batch["audio"], batch["vision"])
    for key in OUTPUTS:
        assert torch.equal(got[key], expected[key]), key
    got["M"].sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in model.text_model.parameters())
    assert model.core.proj1.weight.grad is not None
    # lengths are not read (MMSA's MULT attends to the padded sequences whole)
    model.eval()
    with torch.no_grad():
        a = model(**batch)["M"]
        b = model(**{**batch, "audio_lengths": torch.ones(5, dtype=torch.long)})["M"]
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"use_bert": True}, "use_bert/use_bert_finetune are not supported"),
        ({"need_model_aligned": True}, "need_model_aligned is not supported"),
        ({"dst_feature_dim_nheads": (10, 3)}, "width 10 is not divisible by 3 heads"),
        ({"grad_clip": 0.0}, "grad_clip must be > 0"),
        ({"text_dropout": 1.5}, "text_dropout must be a probability"),
        ({"conv1d_kernel_size_v": 0}, "conv1d_kernel_size must be >= 1"),
    ],
)
def test_unsupported_configs_are_refused(tiny_bert_dir: Path, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelConfigError, match=message):
        _config(tiny_bert_dir, **overrides)


def test_sequence_checks(tiny_bert_dir: Path) -> None:
    model = MulT(_config(tiny_bert_dir, "mosi", need_data_aligned=True), load_text_weights=False).eval()
    batch = random_batch(model.config, TINY_VOCAB)  # type: ignore[arg-type]
    with pytest.raises(
        ModelConfigError,
        match="need_data_aligned=true needs text, audio and vision of one length; got 12, 9 and 7 steps",
    ):
        model(**batch)
    aligned = {
        **batch,
        "audio": batch["audio"][:, :7],
        "input_ids": batch["input_ids"][:, :7],
        "attention_mask": batch["attention_mask"][:, :7],
        "token_type_ids": batch["token_type_ids"][:, :7],
    }
    assert model(**aligned)["M"].shape == (5, 1)
    short = {**batch, "audio": batch["audio"][:, :4]}
    model = MulT(_config(tiny_bert_dir, "mosi"), load_text_weights=False)
    with pytest.raises(ValueError, match=r"audio has 4 steps, fewer than its conv1d kernel \(5\)"):
        model(**short)


def test_config_json_round_trip(tiny_bert_dir: Path) -> None:
    config = _config(tiny_bert_dir, "sims", audio_dim=25, vision_dim=7, batch_size=8)
    assert (config.audio_dim, config.vision_dim, config.text_out, config.batch_size) == (25, 7, 32, 8)
    assert config.task_spec.label_max == 1.0
    assert MulTConfig.preset("mosi").text_out == 384  # the default encoder, all-MiniLM-L6-v2
    assert MulTConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ModelConfigError, match="unknown MulTConfig fields: bogus"):
        MulTConfig.from_dict({**config.to_dict(), "bogus": 1})
    with pytest.raises(ModelConfigError, match="unknown MulTConfig fields: bogus"):
        MulTConfig.preset("mosi", text_encoder_dir=tiny_bert_dir, bogus=1)


def test_exports_to_onnx_with_dynamic_lengths(tiny_bert_dir: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    model = MulT(_config(tiny_bert_dir, "mosi"), load_text_weights=False).eval()
    trace = random_batch(model.config, TINY_VOCAB, seed=1)  # type: ignore[arg-type]
    axes = {
        "input_ids": {0: "b", 1: "l"},
        "attention_mask": {0: "b", 1: "l"},
        "token_type_ids": {0: "b", 1: "l"},
        "audio": {0: "b", 1: "ta"},
        "audio_lengths": {0: "b"},
        "vision": {0: "b", 1: "tv"},
        "vision_lengths": {0: "b"},
        "M": {0: "b"},
    }
    path = tmp_path / "mult.onnx"

    class OnlyM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(*inputs)["M"]

    with torch.no_grad():
        torch.onnx.export(
            OnlyM().eval(),
            tuple(trace[n] for n in INPUT_NAMES),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=["M"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    graph_inputs = {i.name for i in session.get_inputs()}
    assert graph_inputs == set(INPUT_NAMES) - {"audio_lengths", "vision_lengths"}  # unread, so pruned
    for seed, (length, audio, vision) in ((2, (6, 15, 5)), (3, (20, 5, 30))):  # shapes other than the trace's
        g = torch.Generator().manual_seed(seed)
        batch = {
            "input_ids": torch.randint(5, TINY_VOCAB, (2, length), generator=g),
            "attention_mask": (torch.arange(length)[None, :] < torch.tensor([[length], [3]])).long(),
            "token_type_ids": torch.zeros(2, length, dtype=torch.long),
            "audio": torch.randn(2, audio, 5, generator=g),
            "audio_lengths": torch.tensor([audio, 5]),
            "vision": torch.randn(2, vision, 20, generator=g),
            "vision_lengths": torch.tensor([vision, 5]),
        }
        with torch.no_grad():
            expected = model(**batch)["M"].numpy()
        (got,) = session.run(None, {n: v.numpy() for n, v in batch.items() if n in graph_inputs})
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
