"""`affectstream stream FILE --url URL --token T`: send a recording to a WHIP endpoint over WebRTC."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer

from agent.loopback import configure_loopback
from agent.stream_client import stream_file
from cli.options import build_settings

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    @app.command("stream")
    def stream(
        file: Annotated[Path, typer.Argument(help="recording to send (audio required, video optional)")],
        url: Annotated[
            str, typer.Option(help="WHIP endpoint, e.g. http://host:8080/whip?call_id=c&participant_id=p")
        ],
        token: Annotated[str, typer.Option(envvar="AFFECTSTREAM_TOKEN", help="bearer token")],
        realtime: Annotated[
            bool, typer.Option(help="pace the file in real time (--no-realtime: as fast as possible)")
        ] = True,
        codec: Annotated[str | None, typer.Option(help="force an audio codec: opus, PCMU or PCMA")] = None,
        connect_timeout_s: Annotated[
            float, typer.Option(help="seconds to wait for the WebRTC connection")
        ] = 15.0,
    ) -> None:
        """Stream a recording to a WHIP endpoint over real WebRTC, then end the session."""

        settings = build_settings()
        configure_loopback(settings.ingest.ice_loopback)
        result = asyncio.run(
            stream_file(
                file,
                url,
                token,
                realtime=realtime,
                audio_codec=codec,
                ice_servers=tuple(settings.ingest.ice_servers),
                connect_timeout_s=connect_timeout_s,
            )
        )
        typer.echo(
            f"streamed {file.name}: {result.audio_s:.2f} s audio, {result.video_frames} video frames, "
            f"connected in {result.connect_s:.2f} s, {result.wall_s:.2f} s wall -> {result.session_url}"
        )
