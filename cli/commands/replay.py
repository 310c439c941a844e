"""`affectstream replay PATH...`: replay recordings through the live pipeline to Kafka and/or JSON lines."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Literal

import typer

from agent.replay import run_replay
from cli.options import build_settings

DEFAULT_TOPIC = "affect.replay.scores"


def register(app: typer.Typer) -> None:
    @app.command("replay")
    def replay_command(
        paths: Annotated[list[Path], typer.Argument(help="media files, directories, or a manifest CSV")],
        pace: Annotated[
            Literal["realtime", "fast"], typer.Option(help="realtime: sleep to media time; fast: no pacing")
        ] = "fast",
        via: Annotated[
            Literal["direct", "webrtc"], typer.Option(help="webrtc: through the real WHIP ingest and client")
        ] = "direct",
        from_s: Annotated[float | None, typer.Option("--from", help="start of the part to replay, s")] = None,
        to_s: Annotated[float | None, typer.Option("--to", help="end of the part to replay, s")] = None,
        output: Annotated[Path | None, typer.Option(help="write one scored window per line (JSON)")] = None,
        transcripts: Annotated[
            Path | None, typer.Option(help="also write transcripts as JSON lines (health data: opt-in)")
        ] = None,
        kafka: Annotated[bool, typer.Option(help="--no-kafka: do not publish")] = True,
        topic: Annotated[
            str, typer.Option(help="Kafka topic for the scores (transcripts, if enabled: ...transcripts)")
        ] = DEFAULT_TOPIC,
        progress: Annotated[bool, typer.Option(help="progress bars per file and overall")] = True,
    ) -> None:
        """Replay recordings as streams (one per file) through the same pipeline as live calls."""

        settings = build_settings()
        if not kafka and output is None:
            raise typer.BadParameter("with --no-kafka, give --output FILE.jsonl (else the scores go nowhere)")
        settings.kafka.topics.scores = topic
        if topic.endswith("scores"):  # replayed transcripts (when enabled) stay beside the replayed scores
            settings.kafka.topics.transcripts = topic.removesuffix("scores") + "transcripts"
        summary = asyncio.run(
            run_replay(paths, settings, pace=pace, via=via, from_s=from_s, to_s=to_s, output=output,
                       transcripts=transcripts, publish=kafka, progress=progress)
        )
        typer.echo(summary.table())
        if not summary.ok:
            raise typer.Exit(1)

