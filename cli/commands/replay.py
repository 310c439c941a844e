"""`affectstream replay PATH...`: replay recordings through the live pipeline to Kafka and/or JSON lines."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Literal

import typer

from agent.file_source import collect_sources
from agent.jsonl_sink import JsonlWriter
from agent.replay import ReplayOptions, replay
from agent.services import open_runtime
from agent.settings import Settings
from cli.options import build_settings

log = logging.getLogger(__name__)

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


async def run_replay(
    paths: list[Path],
    settings: Settings,
    *,
    pace: Literal["realtime", "fast"] = "fast",
    via: Literal["direct", "webrtc"] = "direct",
    from_s: float | None = None,
    to_s: float | None = None,
    output: Path | None = None,
    transcripts: Path | None = None,
    publish: bool = True,
    progress: bool = True,
):  # type: ignore[no-untyped-def]
    """Load the runtime once, replay every source, close sinks; returns the ReplaySummary."""

    sources = collect_sources(paths, start_s=from_s, end_s=to_s)  # bad paths fail before models load
    writers: list[JsonlWriter] = []
    async with open_runtime(settings, publish=publish, replay=True) as runtime:
        if output is not None:
            writer = JsonlWriter(output, "scores", replay=True)
            writers.append(writer)
            runtime.services.score_sinks.append(writer.score)
        if transcripts is not None:
            transcript_writer = JsonlWriter(transcripts, "transcripts", replay=True)
            writers.append(transcript_writer)
            runtime.services.transcript_sinks.append(transcript_writer.transcript)
        try:
            summary = await replay(sources, runtime.services, settings, ReplayOptions(pace, via, progress))
        finally:
            for writer in writers:
                writer.close()
    for writer in writers:
        log.info("wrote %d %s line(s) to %s", writer.lines, writer.kind, writer.path)
    return summary
