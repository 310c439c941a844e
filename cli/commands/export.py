"""`affectstream export`: a checkpoint (ours or MMSA's) -> a validated model bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.options import build_settings


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        out: Annotated[Path, typer.Option("--out", help="bundle directory to create")],
        checkpoint: Annotated[Path | None, typer.Argument(help="our checkpoint directory")] = None,
        mmsa: Annotated[Path | None, typer.Option(help="an MMSA 2.2.1 AMIO state dict (.pth) instead")] = None,
        preset: Annotated[str, typer.Option(help="MMSA preset of --mmsa: mosi, mosei or sims")] = "mosi",
        text_encoder: Annotated[Path | None, typer.Option(help="text encoder dir of --mmsa")] = None,
        task: Annotated[str, typer.Option(help="task of --mmsa: sentiment or depression")] = "sentiment",
        feature_spec: Annotated[Path | None, typer.Option(help="feature spec JSON (ours)")] = None,
        samples: Annotated[Path | None, typer.Option(help="real samples for validation (.npz or MMSA .pkl)")] = None,
        model_id: Annotated[str | None, typer.Option(help="model id for the card")] = None,
        model_version: Annotated[str | None, typer.Option(help="model version for the card")] = None,
        opset: Annotated[int, typer.Option(help="ONNX opset (>= 17)")] = 17,
        atol: Annotated[float, typer.Option(help="max |ONNX Runtime - torch| accepted")] = 1e-4,
        fp16: Annotated[bool, typer.Option(help="also write the fp16 graph for CUDA")] = True,
        int8: Annotated[bool, typer.Option(help="also write the int8 graph for CPU")] = True,
        overwrite: Annotated[bool, typer.Option(help="replace an existing bundle directory")] = False,
    ) -> None:
        """Export a model (Self-MM, LMF, TFN, MulT) to ONNX, validate it against torch, write model.onnx +
        tokenizer + card.json."""

        build_settings()
        # torch-side (train extra): imported here so that serving, which has no torch, can still load the CLI
        from exporters.bundle import export_bundle
        from exporters.checkpoints import checkpoint_export, mmsa_export, read_feature_spec
        from exporters.errors import ExportError

        options = dict(
            samples=samples,
            opset=opset,
            atol=atol,
            fp16=fp16,
            int8=int8,
            overwrite=overwrite,
            model_id=model_id,
            model_version=model_version,
        )
        if (checkpoint is None) == (mmsa is None):
            raise ExportError("give either a checkpoint directory or --mmsa FILE.pth (exactly one)")
        if mmsa is not None:
            if text_encoder is None:
                raise ExportError("--mmsa needs --text-encoder DIR (the BERT its weights belong to)")
            model, request = mmsa_export(
                mmsa, preset=preset, text_encoder_dir=text_encoder, out_dir=out, task=task, **options
            )
        else:
            assert checkpoint is not None
            spec = read_feature_spec(feature_spec) if feature_spec else None
            model, request = checkpoint_export(checkpoint, out_dir=out, feature_spec=spec, **options)
        card = export_bundle(model, request)
        worst = card.validation.max_abs_diff.get("M", 0.0)
        typer.echo(
            f"{out}: {card.model_name} {card.model_id} {card.model_version}, M within {worst:.2g} of torch "
            f"(atol {card.validation.atol:g}); graphs: fp32" + "".join(f", {v.name}" for v in card.variants)
        )
        if card.feature_source != "live":
            typer.echo(f"note: {card.live_scoring_note}")
