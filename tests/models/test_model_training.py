"""Training: convergence on a synthetic pickle with a known label function, optimiser groups, CLI."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from selfmm_testing import TINY_VOCAB
from typer.testing import CliRunner

from models.checkpoint import load_checkpoint
from models.config import SelfMMConfig
from models.datasets import MMSADataset, load_mmsa_pickle
from models.errors import ModelConfigError
from models.runner import run_training
from models.selfmm import SelfMM
from models.synthetic import write_synthetic_pickle
from models.train import LengthBucketBatches, Trainer, TrainOptions, build_optimizer


@pytest.fixture(scope="module")
def learnable_pickle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Label = 3 tanh(mean audio[:, :len, 0] + mean vision[:, :len, 0]) (models.synthetic's default)."""
    return write_synthetic_pickle(
        tmp_path_factory.mktemp("learnable") / "data.pkl", n_train=160, n_valid=48, n_test=48, L=8,
        vocab_size=TINY_VOCAB, audio_len=8, vision_len=6, seed=11,
    )


def test_training_converges_on_a_known_function(
    learnable_pickle: Path, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    config = SelfMMConfig.preset("mosi", text_encoder_dir=tiny_bert_dir, batch_size=8, use_finetune=False)
    before = SelfMM(config).text_model.state_dict()
    run = run_training(config, learnable_pickle, tmp_path, seed=3,
                       options=TrainOptions(max_epochs=20, device="cpu", progress=False))
    valid_labels = pickle.loads(learnable_pickle.read_bytes())["valid"]["regression_labels"]
    label_std = float(np.std(valid_labels))
    assert run.valid["MAE"] < 0.5 * label_std, (run.valid, label_std)
    assert run.test["MAE"] < 0.6 * label_std and run.test["Corr"] > 0.7, run.test

    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["history"]) == run.epochs and results["best_epoch"] == run.best_epoch
    assert results["metrics"]["valid"]["Loss"] == min(h["valid"]["Loss"] for h in results["history"])
    model, loaded_config, meta = load_checkpoint(tmp_path / "checkpoint")
    assert loaded_config.use_finetune is False and meta["informed_modalities"] == ["text", "audio", "vision"]
    for key, value in model.text_model.state_dict().items():  # frozen encoder (config_tune's setting)
        torch.testing.assert_close(value, before[key], atol=0, rtol=0, msg=key)


def test_depression_task_trains_on_the_phq8_scale(tiny_bert_dir: Path, tmp_path: Path) -> None:
    def phq8(ids, audio, audio_lengths, vision, vision_lengths):  # 0..24, about half >= 10
        return np.round(12 + 12 * np.tanh(audio[:, 0, 0]))

    data = write_synthetic_pickle(tmp_path / "phq.pkl", n_train=48, n_valid=16, n_test=16, L=8,
                                  vocab_size=TINY_VOCAB, audio_len=4, vision_len=3, label_fn=phq8, seed=2)
    config = SelfMMConfig.preset("mosi", text_encoder_dir=tiny_bert_dir, task="depression", batch_size=4,
                                 use_finetune=False)
    trainer = Trainer(config, TrainOptions(max_epochs=4, device="cpu", progress=False))
    splits = load_mmsa_pickle(data)
    fit = trainer.fit(SelfMM(config), MMSADataset(splits["train"]), MMSADataset(splits["valid"]))
    assert set(fit.best_valid) == {"MAE", "RMSE", "Pearson", "CCC", "Acc_2", "F1", "F1_weighted", "Loss"}
    labels = fit.generated_labels
    torch.testing.assert_close(labels["fusion"], torch.from_numpy(splits["train"].labels))
    for mode in ("text", "audio", "vision"):
        assert float(labels[mode].min()) >= 0.0 and float(labels[mode].max()) <= 24.0
        assert torch.isfinite(labels[mode]).all()
    assert (labels["text"] != labels["fusion"]).any()  # ULGM ran from epoch 2 on the centred scale


def test_five_adam_groups_as_mmsa(tiny_bert_dir: Path) -> None:
    config = SelfMMConfig.preset("mosei", text_encoder_dir=tiny_bert_dir)
    model = SelfMM(config, load_text_weights=False)
    groups = build_optimizer(model, config).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    members = [[names[id(p)] for p in g["params"]] for g in groups]
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [
        (5e-5, 0.001), (5e-5, 0.0), (0.005, 0.0), (1e-4, 0.0), (0.001, 0.01)]
    assert all(n.startswith("text_model.") and "LayerNorm" not in n and "bias" not in n for n in members[0])
    assert all("bias" in n or "LayerNorm" in n for n in members[1])
    assert members[2] == [n for n in names.values() if n.startswith("audio_model.")]
    assert members[3] == [n for n in names.values() if n.startswith("video_model.")]
    assert len(members[4]) == 24 and all(n.startswith("post_") for n in members[4])
    assert sum(len(m) for m in members) == len(names)


def test_cli_train_then_test(tiny_bert_dir: Path, synthetic_pickle: Path, tmp_path: Path) -> None:
    from cli.main import app

    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(app, [
        "train", "--data", str(synthetic_pickle), "--preset", "sims", "--text-encoder", str(tiny_bert_dir),
        "--seed", "1", "--seed", "2", "--max-epochs", "2", "--batch-size", "8", "--out", str(out),
        "--no-progress", "--finetune-top-layers", "1",
    ])
    assert result.exit_code == 0, result.output
    assert "seed 2: best epoch" in result.output and "Mult_acc_3" in result.output  # SIMS metrics
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [1, 2] and set(summary["test"]) >= {"MAE", "Corr", "F1_score"}
    assert (out / "seed-1" / "results.json").is_file() and (out / "train.log").stat().st_size > 0
    _, config, meta = load_checkpoint(out / "checkpoint")
    assert config.dataset == "sims" and meta["seed"] == summary["best_seed"] and config.finetune_top_layers == 1

    checkpoint = str(out / "checkpoint")
    result = runner.invoke(app, ["test", "--checkpoint", checkpoint, "--data", str(synthetic_pickle),
                                 "--split", "valid", "--out", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert metrics["MAE"] == pytest.approx(meta["metrics"]["valid"]["MAE"], abs=1e-4)


def test_cli_test_scores_an_mmsa_pth(tiny_bert_dir: Path, synthetic_pickle: Path, tmp_path: Path) -> None:
    from selfmm_testing import mmsa_model

    from cli.main import app

    config = SelfMMConfig.preset("mosi", text_encoder_dir=tiny_bert_dir)
    torch.manual_seed(8)
    reference = mmsa_model(config).eval()
    torch.save(reference.state_dict(), tmp_path / "self_mm-mosi.pth")
    result = CliRunner().invoke(app, [
        "test", "--checkpoint", str(tmp_path / "self_mm-mosi.pth"), "--data", str(synthetic_pickle),
        "--preset", "mosi", "--text-encoder", str(tiny_bert_dir), "--out", str(tmp_path / "m.json"),
    ])
    assert result.exit_code == 0, result.output
    got = json.loads((tmp_path / "m.json").read_text())["metrics"]
    test = load_mmsa_pickle(synthetic_pickle)["test"]
    text = torch.from_numpy(test.text_bert)
    with torch.no_grad():
        pred = reference(text, (torch.from_numpy(test.audio), torch.from_numpy(test.audio_lengths)),
                         (torch.from_numpy(test.vision), torch.from_numpy(test.vision_lengths)))["M"]
    expected_mae = float(np.mean(np.abs(pred.view(-1).numpy() - test.labels)))
    assert got["MAE"] == pytest.approx(expected_mae, abs=1e-4)


def test_cli_refuses_mismatched_data(tiny_bert_dir: Path, synthetic_pickle: Path, tmp_path: Path) -> None:
    from cli.main import app

    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "nope.pkl"), "--out", str(tmp_path),
                                      "--text-encoder", str(tiny_bert_dir)])
    assert result.exit_code != 0 and "file not found" in str(result.exception)


def test_finetune_top_layers_trains_only_those_layers(learnable_pickle: Path, tiny_bert_dir: Path) -> None:
    config = SelfMMConfig.preset("mosi", text_encoder_dir=tiny_bert_dir, batch_size=8, finetune_top_layers=1)
    model = SelfMM(config)
    before = {k: v.clone() for k, v in model.text_model.state_dict().items()}
    top = len(model.text_model.model.encoder.layer) - 1
    assert model.text_model.trainable_parameter_names()
    assert all(n.startswith((f"model.encoder.layer.{top}.", "model.pooler."))
               for n in model.text_model.trainable_parameter_names())
    splits = load_mmsa_pickle(learnable_pickle)
    Trainer(config, TrainOptions(max_epochs=2, device="cpu", progress=False)).fit(
        model, MMSADataset(splits["train"]), MMSADataset(splits["valid"]))
    after = model.text_model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(f"model.encoder.layer.{top}.") for k in changed), sorted(changed)
    with pytest.raises(ModelConfigError, match="finetune_top_layers"):
        SelfMMConfig.preset("mosi", text_encoder_dir=tiny_bert_dir, finetune_top_layers=0)
    with pytest.raises(ModelConfigError, match="layers"):
        SelfMM(SelfMMConfig.preset("mosi", text_encoder_dir=tiny_bert_dir, finetune_top_layers=top + 2))


def test_model_inputs_cut_padding_without_changing_outputs(learnable_pickle: Path, tiny_bert_dir: Path) -> None:
    from torch.utils.data import DataLoader

    from models.datasets import MODEL_INPUTS, model_inputs

    config = SelfMMConfig.preset("mosi", text_encoder_dir=tiny_bert_dir)
    model = SelfMM(config).eval()
    batch = next(iter(DataLoader(MMSADataset(load_mmsa_pickle(learnable_pickle)["test"]), batch_size=6)))
    batch["attention_mask"][:, 5:] = 0  # every row shorter than the stored length
    batch["audio_lengths"] = torch.clamp(batch["audio_lengths"], max=3)
    assert model_inputs(batch, torch.device("cpu"))["input_ids"].shape == batch["input_ids"].shape  # MMSA's way
    cut = model_inputs(batch, torch.device("cpu"), trim=True)
    assert cut["input_ids"].shape[1] <= 5 < batch["input_ids"].shape[1] and cut["audio"].shape[1] <= 3
    with torch.no_grad():
        full = model(**{k: batch[k] for k in MODEL_INPUTS})
        short = model(**cut)
    for name in ("M", "T", "A", "V"):
        torch.testing.assert_close(short[name], full[name], atol=1e-6, rtol=1e-5)


def test_length_buckets_batch_every_row_once_with_less_padding() -> None:
    rng = np.random.default_rng(0)
    text, audio = rng.integers(3, 50, 1000), rng.integers(1, 500, 1000)
    sampler = LengthBucketBatches(text, audio, batch_size=16, pool_batches=10)
    torch.manual_seed(0)
    first = list(sampler)
    assert len(first) == len(sampler) == -(-1000 // 16)  # as many batches as a shuffling loader
    assert sorted(i for batch in first for i in batch) == list(range(1000))
    assert sum(len(b) < 16 for b in first) == 1  # only the last pool's remainder is short
    second = list(sampler)
    assert second != first and sorted(i for b in second for i in b) == list(range(1000))  # reshuffled per pass
    torch.manual_seed(0)
    assert list(sampler) == first  # the global seed decides, as for DataLoader(shuffle=True)
    # what a batch trimmed to its longest text computes: far less than with a plain shuffle
    bucketed = sum(len(b) * int(text[b].max()) for b in first)
    plain = sum(len(b) * int(text[b].max()) for b in torch.randperm(1000).split(16))
    assert bucketed < 0.75 * plain, (bucketed, plain)
    with pytest.raises(ValueError, match="one text and audio length per row"):
        LengthBucketBatches(text, audio[:10], batch_size=16, pool_batches=10)


def test_training_with_length_buckets_still_learns(learnable_pickle: Path, tiny_bert_dir: Path,
                                                   tmp_path: Path) -> None:
    config = SelfMMConfig.preset("mosi", text_encoder_dir=tiny_bert_dir, batch_size=8, use_finetune=False)
    run = run_training(config, learnable_pickle, tmp_path, seed=3,
                       options=TrainOptions(max_epochs=20, device="cpu", progress=False, trim_padding=True,
                                            length_buckets=4))
    label_std = float(np.std(pickle.loads(learnable_pickle.read_bytes())["valid"]["regression_labels"]))
    assert run.valid["MAE"] < 0.5 * label_std and run.test["Corr"] > 0.7, (run.valid, run.test)
