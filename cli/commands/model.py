"""`affectstream model ...`: the project's default sentiment model.

- `model build`: rebuild it from scratch (corpus, espeak-ng speech, the CREMA-D voices, training, export; cold on
  2 cores 46.7 min on an Intel Xeon, 57.1 min on an AMD EPYC, README "Default model"); `--no-voices` builds 2.0.0's
  recipe, the rated sentences alone, into default_model/sentences_only (the baseline benches compare against)
- `model bundle`: export the committed artefacts in default_model/committed/ to the default bundle (never retrains)
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from cli.options import build_settings

log = logging.getLogger(__name__)

model_app = typer.Typer(help="The default sentiment model: rebuild it, or export its bundle.")


def _quiet_threads() -> None:
    # OpenMP threads that spin while waiting make training crawl when other processes share the cores.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@model_app.command("build")
def build(
    spoken_per_split: Annotated[
        int, typer.Option(help="spoken sentences per corpus in train and in valid (test: all spoken)")
    ] = 1000,
    spoken_all: Annotated[bool, typer.Option(help="speak every sentence")] = False,
    out: Annotated[Path | None, typer.Option(help="artefact directory (default: default_model/committed)")] = None,
    bundle_dir: Annotated[Path | None, typer.Option(help="bundle to export (default bundle)")] = None,
    work_dir: Annotated[Path, typer.Option(help="scratch space for the dataset pickle")] = Path(
        ".affectstream/build/default-model"
    ),
    max_epochs: Annotated[
        int | None, typer.Option(min=1, help="cap on training epochs (default: 4)")] = None,
    sentences_per_corpus: Annotated[
        int | None, typer.Option(min=1, help="use only N sentences per corpus and split (quick runs)")
    ] = None,
    voices: Annotated[bool, typer.Option(
        help="train on the CREMA-D voices too (the default); --no-voices: the rated sentences alone, 2.0.0's "
             "recipe, written to default_model/sentences_only")] = True,
    cremad: Annotated[Path | None, typer.Option(
        help="CREMA-D folder (clips.csv + audio/); default: ../shared/data/cremad")] = None,
    clips_per_split: Annotated[
        int | None, typer.Option(min=1, help="use only N CREMA-D clips per split (quick runs)")
    ] = None,
    seed: Annotated[int, typer.Option(help="split, subsample and training seed")] = 1234,
    workers: Annotated[int, typer.Option(min=1, help="espeak-ng/feature workers, torch threads")] = 2,
    export: Annotated[bool, typer.Option(help="export the bundle after training")] = True,
    progress: Annotated[
        bool, typer.Option(help="a bar with ETA per phase on stderr (in place in a terminal, a line a minute in logs)")
    ] = True,
) -> None:
    """Rebuild the default sentiment model from the vaderSentiment corpus and the CREMA-D voices (offline,
    reproducible); with --no-voices, the sentences-only baseline."""

    build_settings()
    _quiet_threads()
    # torch-side (train extra): imported here so that serving, which has no torch, can still load the CLI
    from default_model.artefacts import DEFAULT_BUNDLE_DIR, DEFAULT_DIR, SENTENCES_ONLY_BUNDLE_DIR, SENTENCES_ONLY_DIR
    from default_model.build import BuildOptions
    from default_model.build import build as run_build
    from default_model.cremad import DEFAULT_CREMAD_DIR

    if cremad is not None and not voices:
        raise typer.BadParameter("--cremad names the voices, which --no-voices leaves out")

    if spoken_per_split < 1 and not spoken_all:
        raise typer.BadParameter("--spoken-per-split must be >= 1 (or pass --spoken-all)")
    options = BuildOptions(
        out_dir=out or (DEFAULT_DIR if voices else SENTENCES_ONLY_DIR),
        bundle_dir=bundle_dir or (DEFAULT_BUNDLE_DIR if voices else SENTENCES_ONLY_BUNDLE_DIR),
        work_dir=work_dir,
        spoken_per_corpus=None if spoken_all else spoken_per_split,
        sentences_per_corpus=sentences_per_corpus,
        cremad_dir=(cremad or DEFAULT_CREMAD_DIR) if voices else None,
        clips_per_split=clips_per_split,
        max_epochs=max_epochs,
        seed=seed,
        workers=workers,
        export=export,
        progress=progress,
    )
    report = run_build(options)
    typer.echo(json.dumps({"out_dir": str(report.out_dir), "bundle_dir": str(report.bundle_dir),
                           "seconds": report.seconds, "quality": report.quality}, indent=2))


@model_app.command("bundle")
def bundle(
    out: Annotated[Path | None, typer.Option(help="bundle directory (default bundle)")] = None,
    source: Annotated[Path | None, typer.Option(help="committed artefacts (default: default_model/committed)")] = None,
    force: Annotated[bool, typer.Option(help="export even if the bundle is current")] = False,
    variants: Annotated[bool, typer.Option(help="also write the fp16 (CUDA) and int8 graphs")] = True,
) -> None:
    """Export the committed default model to its bundle if missing or stale (fast; never retrains)."""

    build_settings()
    # torch-side (train extra): imported here so that serving, which has no torch, can still load the CLI
    from default_model.artefacts import DEFAULT_BUNDLE_DIR, DEFAULT_DIR, export_default_bundle

    path, exported = export_default_bundle(out or DEFAULT_BUNDLE_DIR, source or DEFAULT_DIR, force=force,
                                           variants=variants)
    typer.echo(f"default bundle {'exported to' if exported else 'is current:'} {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")
