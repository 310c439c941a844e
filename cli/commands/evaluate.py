"""`affectstream evaluate`: replayed scores vs a labels CSV -> report.json, report.md and PNG plots."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from agent.evaluate_run import run_evaluate
from cli.options import build_settings

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate_command(
        labels: Annotated[
            Path, typer.Option(help="CSV: file, start_s, end_s, label[, label_T, label_A, label_V]")
        ],
        out: Annotated[Path, typer.Option(help="directory for report.json, report.md and the plots")],
        scores: Annotated[Path | None, typer.Option(help="scores as JSON lines (replay --output)")] = None,
        topic: Annotated[str | None, typer.Option(help="read the scores from this Kafka topic")] = None,
        compare: Annotated[
            Path | None, typer.Option(help="a second run's scores (JSON lines) to compare side by side")
        ] = None,
        task: Annotated[str | None, typer.Option(help="task to evaluate if the scores hold several")] = None,
        dataset: Annotated[
            str | None, typer.Option(help="MMSA metric flavour: mosi, mosei or sims (default: by range)")
        ] = None,
    ) -> None:
        """Match scored windows to labelled segments and write a report with metrics, latency and plots."""

        settings = build_settings()
        if (scores is None) == (topic is None):
            raise typer.BadParameter("give exactly one of --scores FILE.jsonl or --topic T")
        report = run_evaluate(labels, out, scores=scores, topic=topic, compare=compare, task=task,
                              dataset=dataset, kafka=settings.kafka)
        metrics = report["run"]["metrics"].get("m", {})
        counts = report["run"]["counts"]
        typer.echo(f"{counts['matched_segments']}/{counts['segments']} segments matched by "
                   f"{counts['matched_windows']}/{counts['windows']} windows; "
                   + ", ".join(f"{k} {v}" for k, v in metrics.items()))
        typer.echo(f"report: {out / 'report.md'}")
