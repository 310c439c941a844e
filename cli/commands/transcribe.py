"""`affectstream transcribe FILE`: decode, window and transcribe a recording into JSON lines (and Kafka)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from agent.transcribe_file import transcribe_file
from cli.options import build_settings
from core.atomic_output import AtomicOutput

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    @app.command("transcribe")
    def transcribe(
        file: Annotated[Path, typer.Argument(help="a recording: mp4, flv, mpg, wav, flac, mp3, ...")],
        mode: Annotated[
            Literal["utterance", "fixed"] | None,
            typer.Option(help="windowing mode (default: windows.mode setting)"),
        ] = None,
        output: Annotated[Path | None, typer.Option("--output", "-o", help="write JSON lines here")] = None,
        publish: Annotated[
            bool, typer.Option("--publish", help="also send each transcript to the affect.transcripts topic")
        ] = False,
    ) -> None:
        """Transcribe a recording: one JSON line per window (seq, start_s, end_s, closed_by, text, words)."""

        settings = build_settings()
        if mode is not None:
            settings.windows.mode = mode
        if output is None:
            transcripts = transcribe_file(file, settings, sys.stdout, publish=publish)
        else:  # an existing results file is replaced only once the whole recording is transcribed
            with AtomicOutput(output) as out, out.staging.open("w", encoding="utf-8") as handle:
                transcripts = transcribe_file(file, settings, handle, publish=publish)
        log.info("%s: %d windows transcribed", file, len(transcripts))
