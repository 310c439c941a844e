"""`affectstream train` (Self-MM, LMF, TFN or MulT on an MMSA pickle; several seeds: MMSA's mean ± std table)
and `affectstream test` (a checkpoint of any of them on one split)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.options import build_settings

if TYPE_CHECKING:
    from models.runner import RunResult

log = logging.getLogger(__name__)

MODEL_CHOICES = "self_mm, lmf, tfn or mult"  # models/registry.py's names (not imported here: it loads torch)


def _log_to_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def _print_metrics(title: str, metrics: dict[str, float]) -> None:
    typer.echo(title)
    for key, value in metrics.items():
        typer.echo(f"  {key:<16} {value:.4f}")


def summary_table(summary: dict[str, Any], runs: list[RunResult]) -> str:
    """Each test metric per seed and its mean ± population std, times 100 and to 2 decimals as MMSA's run.py
    writes its results table."""
    seeds = [f"seed {r.seed}" for r in runs]
    width = max(16, *(len(k) for k in summary["test"]))
    lines = [f"{summary['model_name']}: test metrics x 100 over {len(runs)} seeds (as MMSA)",
             f"  {'metric':<{width}} " + " ".join(f"{s:>10}" for s in seeds) + f" {'mean ± std':>16}"]
    for key, stats in summary["test"].items():
        values = " ".join(f"{100 * r.test[key]:>10.2f}" for r in runs)
        mean_std = f"{round(100 * stats['mean'], 2):.2f} ± {round(100 * stats['std'], 2):.2f}"
        lines.append(f"  {key:<{width}} {values} {mean_std:>16}")
    return "\n".join(lines)


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
        model: Annotated[str, typer.Option(help=f"the model: {MODEL_CHOICES}")] = "self_mm",
        preset: Annotated[str, typer.Option(help="the model's MMSA hyperparameters: mosi, mosei or sims")] = "mosi",
        text_encoder: Annotated[
            Path | None, typer.Option(help="BERT-family directory (default: all-MiniLM-L6-v2)")
        ] = None,
        seed: Annotated[list[int] | None, typer.Option(help="seed; repeat for several runs")] = None,
        task: Annotated[str, typer.Option(help="sentiment or depression (PHQ-8 0..24)")] = "sentiment",
        max_epochs: Annotated[
            int | None, typer.Option(help="cap on epochs (default: until early stopping)")
        ] = None,
        finetune_text: Annotated[
            bool | None,
            typer.Option("--finetune-text/--freeze-text",
                         help="self_mm: train the text encoder (MMSA: yes); the others' encoder is frozen"),
        ] = None,
        finetune_top_layers: Annotated[
            int | None,
            typer.Option(min=1, help="self_mm with --finetune-text: train only the top N encoder layers"),
        ] = None,
        batch_size: Annotated[int | None, typer.Option(help="override the preset's batch size")] = None,
        device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when present)")] = None,
        progress: Annotated[bool, typer.Option(help="progress bars")] = True,
        threads: Annotated[
            int | None, typer.Option(help="torch CPU threads (1 is fastest for tiny models on busy machines)")
        ] = None,
    ) -> None:
        """Train a model with MMSA 2.2.1's procedure (Self-MM: with ULGM) and keep the best-validation checkpoint;
        with several seeds, print each test metric's mean ± std over them."""
        # torch-side (train extra): imported here so that serving, which has no torch, can still load the CLI
        from models.datasets import load_mmsa_pickle
        from models.errors import ModelConfigError
        from models.registry import model_spec
        from models.runner import run_training, summarize
        from models.train import TrainOptions

        spec = model_spec(model)
        overrides: dict[str, Any] = {"batch_size": batch_size} if batch_size else {}
        if spec.recipe is None:  # Self-MM's own encoder knobs
            overrides["use_finetune"] = True if finetune_text is None else finetune_text
            if finetune_top_layers is not None:
                overrides["finetune_top_layers"] = finetune_top_layers
        elif finetune_text or finetune_top_layers is not None:
            raise ModelConfigError(f"--finetune-text and --finetune-top-layers are Self-MM's: {spec.name} reads a "
                                   "frozen text encoder's states, as MMSA's precomputed text features")

        build_settings()
        _quiet_torch(threads, progress)
        out.mkdir(parents=True, exist_ok=True)
        handler = _log_to_file(out / "train.log")
        try:
            train_split = load_mmsa_pickle(data, splits=("train",))["train"]
            config = spec.preset(
                preset, text_encoder_dir=text_encoder, audio_dim=train_split.audio_dim,
                vision_dim=train_split.vision_dim, task=task, **overrides,
            )
            options = TrainOptions(max_epochs=max_epochs, device=device, progress=progress)
            seeds = seed or [1111]
            runs = [
                run_training(config, data, out / f"seed-{s}" if len(seeds) > 1 else out, seed=s,
                             options=options)
                for s in seeds
            ]
            for run in runs:
                _print_metrics(f"seed {run.seed}: best epoch {run.best_epoch}/{run.epochs}, test", run.test)
            if len(runs) > 1:
                summary = summarize(runs)
                (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
                best = next(r for r in runs if r.seed == summary["best_seed"])
                shutil.copytree(best.checkpoint, out / "checkpoint", dirs_exist_ok=True)
                typer.echo(summary_table(summary, runs))
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
        """Evaluate a checkpoint (any model: its metadata names it) on one split of a pickle with the task's
        metrics."""
        # torch-side (train extra): imported here so that serving, which has no torch, can still load the CLI
        from models.checkpoint import checkpoint_model_name
        from models.registry import DEFAULT_MODEL
        from models.runner import run_test
        from models.train import TrainOptions

        build_settings()
        _quiet_torch(None, progress=False)
        metrics = run_test(checkpoint, data, split, TrainOptions(device=device, progress=False),
                           preset=preset, text_encoder_dir=text_encoder, task=task)
        model_name = DEFAULT_MODEL if checkpoint.is_file() else checkpoint_model_name(checkpoint)
        _print_metrics(f"{model_name}, {split} ({data.name})", metrics)
        if out is not None:
            out.write_text(json.dumps({"checkpoint": str(checkpoint), "model_name": model_name, "data": str(data),
                                       "split": split, "metrics": metrics}, indent=2) + "\n")
