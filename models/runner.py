"""One training run end to end: pickle -> seeded training of any registered model (models/registry.py) -> best
checkpoint + results JSON; several seeds -> MMSA's mean and std."""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.checkpoint import load_checkpoint, load_mmsa_state_dict, save_checkpoint
from models.config import SelfMMConfig
from models.datasets import MMSADataset, MMSASplit, load_mmsa_pickle
from models.errors import DatasetError
from models.registry import DEFAULT_MODEL, ModelConfig, model_spec
from models.train import TrainOptions, load_best, setup_seed
from models.ulgm_figure import write_label_files

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunResult:
    seed: int
    out_dir: Path
    checkpoint: Path
    best_epoch: int
    epochs: int
    valid: dict[str, float]
    test: dict[str, float]
    model_name: str = DEFAULT_MODEL


def informed_modalities(split: MMSASplit) -> list[str]:
    """Modalities whose inputs carry information (not constant) in this split."""
    found = []
    if np.unique(split.text_bert[:, 0]).size > 3:  # more than [PAD]/[CLS]/[SEP]
        found.append("text")
    if np.ptp(split.audio) > 0:
        found.append("audio")
    if np.ptp(split.vision) > 0:
        found.append("vision")
    return found


def check_data_fits(splits: dict[str, MMSASplit], config: ModelConfig, data_path: Path) -> None:
    """Fail early, naming the problem, when the pickle does not fit the model config."""
    first = next(iter(splits.values()))
    if (first.audio_dim, first.vision_dim) != (config.audio_dim, config.vision_dim):
        raise DatasetError(
            str(data_path), f"feature dims (audio {first.audio_dim}, vision {first.vision_dim}) differ "
            f"from the model config (audio {config.audio_dim}, vision {config.vision_dim})"
        )
    encoder = json.loads((Path(config.text_encoder_dir) / "config.json").read_text())
    for name, split in splits.items():
        max_id = int(split.text_bert[:, 0].max()) if len(split) else 0
        if max_id >= int(encoder["vocab_size"]):
            raise DatasetError(
                f"{data_path}[{name}]", f"token id {max_id} is outside the encoder's vocabulary "
                f"({encoder['vocab_size']}): tokenised for another text encoder?"
            )
        if split.text_bert.shape[2] > int(encoder.get("max_position_embeddings", 512)):
            raise DatasetError(f"{data_path}[{name}]", "text length exceeds the encoder's max positions")


def run_training(
    config: ModelConfig, data_path: str | Path, out_dir: str | Path, *, seed: int = 1111,
    options: TrainOptions | None = None,
) -> RunResult:
    """Train the model `config` belongs to with one seed; write `out_dir/checkpoint/` (best valid Loss),
    `out_dir/results.json` and, for Self-MM, ULGM's labels per epoch (`ulgm_labels.json`, `ulgm_labels.png`)."""
    data_path, out_dir = Path(data_path), Path(out_dir)
    splits = load_mmsa_pickle(data_path)
    check_data_fits(splits, config, data_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    setup_seed(seed)
    spec = model_spec(config.model_name)
    model = spec.build(config)
    trainer = spec.trainer(config, options)
    log.info("training %s, seed %d on %s (%s), %d train samples", spec.name, seed, data_path.name,
             trainer.device, len(splits["train"]))
    fit = trainer.fit(model, MMSADataset(splits["train"]), MMSADataset(splits["valid"]))
    load_best(model, fit)
    test = trainer.evaluate(model, MMSADataset(splits["test"]), desc="test")
    log.info("seed %d: best epoch %d, valid Loss %.4f, test %s", seed, fit.best_epoch,
             fit.best_valid["Loss"], test)
    metadata = {
        "model_name": spec.name,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": {"path": str(data_path.resolve()), "name": data_path.name,
                    "samples": {k: len(v) for k, v in splits.items()}},
        "task": config.task, "label_range": [config.task_spec.label_min, config.task_spec.label_max],
        "informed_modalities": informed_modalities(splits["train"]),
        "seed": seed, "best_epoch": fit.best_epoch, "epochs": fit.epochs,
        "metrics": {"valid": fit.best_valid, "test": test},
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }
    checkpoint = save_checkpoint(model, config, out_dir / "checkpoint", metadata)
    results = {**metadata, "config": config.to_dict(), "history": fit.history,
               "seconds": round(time.monotonic() - started, 1)}
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    if fit.label_history is not None:
        write_label_files(fit.label_history, out_dir)
    return RunResult(seed, out_dir, checkpoint, fit.best_epoch, fit.epochs, fit.best_valid, test, spec.name)


def summarize(runs: list[RunResult]) -> dict[str, Any]:
    """MMSA-style mean and population std of each test metric over seeds."""
    keys = runs[0].test.keys()
    return {
        "model_name": runs[0].model_name,
        "seeds": [r.seed for r in runs],
        "test": {k: {"mean": float(np.mean([r.test[k] for r in runs])),
                     "std": float(np.std([r.test[k] for r in runs]))} for k in keys},
        "best_seed": min(runs, key=lambda r: r.valid["Loss"]).seed,
    }


def run_test(
    checkpoint: str | Path, data_path: str | Path, split: str = "test", options: TrainOptions | None = None,
    *, preset: str = "mosi", text_encoder_dir: str | Path | None = None, task: str = "sentiment",
) -> dict[str, float]:
    """Evaluate a checkpoint on one split: our checkpoint directory of any model (its metadata names it), or a
    Self-MM MMSA `.pth` file (then `preset`, `text_encoder_dir` and `task` describe it; feature dims come from
    the data)."""
    checkpoint, data_path = Path(checkpoint), Path(data_path)
    splits = load_mmsa_pickle(data_path, splits=(split,))
    config: ModelConfig
    if checkpoint.is_file():
        data = splits[split]
        config = SelfMMConfig.preset(preset, text_encoder_dir=text_encoder_dir, audio_dim=data.audio_dim,
                                     vision_dim=data.vision_dim, task=task)
        model: torch.nn.Module = load_mmsa_state_dict(checkpoint, config)
    else:
        model, config, _ = load_checkpoint(checkpoint)
    check_data_fits(splits, config, data_path)
    trainer = model_spec(config.model_name).trainer(config, options)
    return trainer.evaluate(model, MMSADataset(splits[split]), desc=split)
