"""`affectstream train` (Self-MM on an MMSA pickle) and `affectstream test` (a checkpoint on one split)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Annotated

import typer

from cli.options import build_settings

log = logging.getLogger(__name__)


def _log_to_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def _print_metrics(title: str, metrics: dict[str, float]) -> None:
    typer.echo(title)
    for key, value in metrics.items():
        typer.echo(f"  {key:<16} {value:.4f}")


def _quiet_torch(threads: int | None, progress: bool) -> None:
    # torch-side (train extra): imported here so that serving, which has no torch, can still load the CLI
    import torch
    from transformers.utils import logging as hf_logging

    if threads:
        torch.set_num_threads(threads)
    if not progress:
        hf_logging.disable_progress_bar()


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        data: Annotated[Path, typer.Option(help="MMSA processed pickle (train/valid/test splits)")],
        out: Annotated[Path, typer.Option(help="output directory (checkpoint, results JSON, log)")],
        preset: Annotated[str, typer.Option(help="hyperparameters: mosi, mosei or sims")] = "mosi",
        text_encoder: Annotated[
            Path | None, typer.Option(help="BERT-family directory (default: all-MiniLM-L6-v2)")
        ] = None,
        seed: Annotated[list[int] | None, typer.Option(help="seed; repeat for several runs")] = None,
        task: Annotated[str, typer.Option(help="sentiment or depression (PHQ-8 0..24)")] = "sentiment",
        max_epochs: Annotated[
            int | None, typer.Option(help="cap on epochs (default: until early stopping)")
        ] = None,
        finetune_text: Annotated[
            bool, typer.Option("--finetune-text/--freeze-text", help="train the text encoder (MMSA: yes)")
        ] = True,
        finetune_top_layers: Annotated[
            int | None, typer.Option(min=1, help="with --finetune-text, train only the top N encoder layers")
        ] = None,
        batch_size: Annotated[int | None, typer.Option(help="override the preset's batch size")] = None,
        device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when present)")] = None,
        progress: Annotated[bool, typer.Option(help="progress bars")] = True,
        threads: Annotated[
            int | None, typer.Option(help="torch CPU threads (1 is fastest for tiny models on busy machines)")
        ] = None,
    ) -> None:
        """Train Self-MM with ULGM (MMSA 2.2.1's procedure) and keep the best-validation checkpoint."""
        # torch-side (train extra): imported here so that serving, which has no torch, can still load the CLI
        from models.config import SelfMMConfig
        from models.datasets import load_mmsa_pickle
        from models.runner import run_training, summarize
        from models.train import TrainOptions

        build_settings()
        _quiet_torch(threads, progress)
        out.mkdir(parents=True, exist_ok=True)
        handler = _log_to_file(out / "train.log")
        try:
            train_split = load_mmsa_pickle(data, splits=("train",))["train"]
            overrides: dict[str, int] = {"batch_size": batch_size} if batch_size else {}
            if finetune_top_layers is not None:
                overrides["finetune_top_layers"] = finetune_top_layers
            config = SelfMMConfig.preset(
                preset, text_encoder_dir=text_encoder, audio_dim=train_split.audio_dim,
                vision_dim=train_split.vision_dim, task=task, use_finetune=finetune_text, **overrides,
            )
            options = TrainOptions(max_epochs=max_epochs, device=device, progress=progress)
            seeds = seed or [1111]
            runs = [
                run_training(config, data, out / f"seed-{s}" if len(seeds) > 1 else out, seed=s,
                             options=options)
                for s in seeds
            ]
            if len(runs) > 1:
                summary = summarize(runs)
                (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
                best = next(r for r in runs if r.seed == summary["best_seed"])
                shutil.copytree(best.checkpoint, out / "checkpoint", dirs_exist_ok=True)
            for run in runs:
                _print_metrics(f"seed {run.seed}: best epoch {run.best_epoch}/{run.epochs}, test", run.test)
            typer.echo(f"checkpoint: {out / 'checkpoint'}")
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()

    @app.command("test")
    def test(
        checkpoint: Annotated[
            Path, typer.Option(help="checkpoint directory written by `train`, or an MMSA .pth file")
        ],
        data: Annotated[Path, typer.Option(help="MMSA processed pickle")],
        split: Annotated[str, typer.Option(help="train, valid or test")] = "test",
        preset: Annotated[str, typer.Option(help="MMSA .pth only: its preset (mosi, mosei, sims)")] = "mosi",
        text_encoder: Annotated[
            Path | None, typer.Option(help="MMSA .pth only: directory with its encoder's config.json")
        ] = None,
        task: Annotated[str, typer.Option(help="MMSA .pth only: sentiment or depression")] = "sentiment",
        out: Annotated[Path | None, typer.Option(help="write the metrics to this JSON file")] = None,
        device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when present)")] = None,
    ) -> None:
        """Evaluate a checkpoint on one split of a pickle with the task's metrics."""
        # torch-side (train extra): imported here so that serving, which has no torch, can still load the CLI
        from models.runner import run_test
        from models.train import TrainOptions

        build_settings()
        _quiet_torch(None, progress=False)
        metrics = run_test(checkpoint, data, split, TrainOptions(device=device, progress=False),
                           preset=preset, text_encoder_dir=text_encoder, task=task)
        _print_metrics(f"{split} ({data.name})", metrics)
        if out is not None:
            out.write_text(json.dumps({"checkpoint": str(checkpoint), "data": str(data), "split": split,
                                       "metrics": metrics}, indent=2) + "\n")
