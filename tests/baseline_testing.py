"""Test support for the baselines (LMF, TFN, MulT) beside Self-MM: a synthetic MMSA pickle with the agent's
feature dims, and bundles made the way a user makes them (`affectstream train --model X`, `affectstream export`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BASELINES = ("lmf", "tfn", "mult")


def write_live_pickle(encoder_dir: Path, path: Path, *, seed: int = 0, **sizes: Any) -> Path:
    """A small MMSA-format pickle whose features have the agent's widths and whose tokens are in the encoder's
    vocabulary, so a model trained on it is served live (random features: what it learns is beside the point)."""
    from core.features import FeatureSpec
    from models.synthetic import write_synthetic_pickle

    spec = FeatureSpec.for_tokenizer(encoder_dir)
    vocab = int(json.loads((encoder_dir / "config.json").read_text())["vocab_size"])
    options: dict[str, Any] = dict(n_train=24, n_valid=8, n_test=8, L=12, audio_len=30, vision_len=10)
    options.update(sizes)
    return write_synthetic_pickle(
        path, audio_dim=spec.audio_dim, vision_dim=spec.vision_dim, vocab_size=vocab, seed=seed, **options
    )


def cli(*args: str) -> str:
    """Run `affectstream ARGS` in-process; its output (AssertionError with the output if it failed)."""
    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(app, list(args))
    if result.exit_code != 0:
        raise AssertionError(f"affectstream {' '.join(args)} -> {result.exit_code}: {result.output}") from (
            result.exception
        )
    return result.output


def train_args(model: str, data: Path, encoder_dir: Path, out: Path, *seeds: int, max_epochs: int = 1) -> list[str]:
    args = [
        "train",
        "--model",
        model,
        "--data",
        str(data),
        "--text-encoder",
        str(encoder_dir),
        "--out",
        str(out),
        "--max-epochs",
        str(max_epochs),
        "--batch-size",
        "8",
        "--no-progress",
        "--threads",
        "1",
    ]
    for seed in seeds or (1,):
        args += ["--seed", str(seed)]
    return args


def trained_bundle(model: str, root: Path, encoder_dir: Path, data: Path) -> Path:
    """`affectstream train --model MODEL` (one seed, one epoch) then `affectstream export` of its checkpoint with
    the agent's feature spec: a live bundle (fp32 graph only)."""
    from core.features import FeatureSpec

    cli(*train_args(model, data, encoder_dir, root / f"{model}-run"))
    spec_file = root / "feature_spec.json"
    spec_file.write_text(json.dumps(FeatureSpec.for_tokenizer(encoder_dir).to_dict()))
    bundle = root / f"{model}-bundle"
    cli(
        "export",
        str(root / f"{model}-run" / "checkpoint"),
        "--out",
        str(bundle),
        "--feature-spec",
        str(spec_file),
        "--no-fp16",
        "--no-int8",
    )
    return bundle
