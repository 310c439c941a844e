"""`affectstream train --model lmf|tfn|mult` and `affectstream test` on their checkpoints, as for Self-MM: several
seeds give MMSA's mean ± std table and summary.json; the checkpoint names its model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from baseline_testing import BASELINES, cli, train_args

from models.checkpoint import load_checkpoint
from models.errors import ModelConfigError
from models.lmf import LMF
from models.mult import MulT
from models.synthetic import write_synthetic_pickle
from models.tfn import TFN

MODEL_CLASSES = {"lmf": LMF, "tfn": TFN, "mult": MulT}


@pytest.fixture(scope="module")
def small_pickle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from selfmm_testing import TINY_VOCAB

    return write_synthetic_pickle(
        tmp_path_factory.mktemp("data") / "small.pkl",
        n_train=24,
        n_valid=8,
        n_test=8,
        L=8,
        vocab_size=TINY_VOCAB,
        audio_len=8,
        vision_len=6,
        seed=7,
    )


@pytest.mark.parametrize("model", BASELINES)
def test_train_two_seeds_prints_the_table_and_test_reads_the_checkpoint(
    model: str, small_pickle: Path, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    output = cli(*train_args(model, small_pickle, tiny_bert_dir, out, 1111, 1112, max_epochs=2))

    results = {seed: json.loads((out / f"seed-{seed}" / "results.json").read_text()) for seed in (1111, 1112)}
    assert {r["model_name"] for r in results.values()} == {model}
    assert all(len(r["history"]) == r["epochs"] <= 2 for r in results.values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_name"] == model and summary["seeds"] == [1111, 1112]
    for key in ("MAE", "Corr", "Has0_acc_2", "Loss"):
        values = [results[seed]["metrics"]["test"][key] for seed in (1111, 1112)]
        assert summary["test"][key]["mean"] == pytest.approx(np.mean(values))
        assert summary["test"][key]["std"] == pytest.approx(np.std(values))
    assert results[1111]["metrics"]["test"]["MAE"] != results[1112]["metrics"]["test"]["MAE"]  # seeds differ

    # the table: one row per metric, each seed's value and mean ± std, x 100 and 2 decimals as MMSA
    assert f"{model}: test metrics x 100 over 2 seeds" in output
    row = re.search(r"^\s+MAE\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+) ± ([\d.]+)$", output, re.MULTILINE)
    assert row is not None, output
    mae = summary["test"]["MAE"]
    assert [float(x) for x in row.groups()] == pytest.approx(
        [
            100 * results[1111]["metrics"]["test"]["MAE"],
            100 * results[1112]["metrics"]["test"]["MAE"],
            100 * mae["mean"],
            100 * mae["std"],
        ],
        abs=0.006,
    )

    trained, config, meta = load_checkpoint(out / "checkpoint")
    assert isinstance(trained, MODEL_CLASSES[model]) and type(config).model_name == model
    assert meta["model_name"] == model and meta["seed"] == summary["best_seed"]

    cli("test", "--checkpoint", str(out / "checkpoint"), "--data", str(small_pickle), "--out", str(tmp_path / "m.json"))
    tested = json.loads((tmp_path / "m.json").read_text())
    assert tested["model_name"] == model
    for key in ("MAE", "Corr", "Mult_acc_7"):  # Loss is a mean of batch means: it moves with the shuffle
        assert tested["metrics"][key] == pytest.approx(meta["metrics"]["test"][key], abs=1e-5)


def test_self_mm_stays_the_default_and_its_encoder_options_are_its_own(
    small_pickle: Path, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    args = train_args("lmf", small_pickle, tiny_bert_dir, tmp_path / "lmf")
    with pytest.raises(AssertionError) as refused:
        cli(*args, "--finetune-top-layers", "1")
    assert isinstance(refused.value.__cause__, ModelConfigError) and "Self-MM's" in str(refused.value.__cause__)
    with pytest.raises(AssertionError) as unknown:
        cli(*train_args("lstm", small_pickle, tiny_bert_dir, tmp_path / "x"))
    assert "expected one of self_mm, lmf, tfn, mult" in str(unknown.value.__cause__)

    args = train_args("self_mm", small_pickle, tiny_bert_dir, tmp_path / "selfmm")
    args.remove("--model")
    args.remove("self_mm")
    output = cli(*args, "--freeze-text")
    model, config, meta = load_checkpoint(tmp_path / "selfmm" / "checkpoint")
    assert meta["model_name"] == "self_mm" and type(config).model_name == "self_mm"
    assert config.use_finetune is False  # type: ignore[attr-defined]
    assert "seed 1: best epoch 1/1" in output and "test metrics x 100" not in output  # one seed: no table
