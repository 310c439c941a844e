"""`affectstream broker`: run the embedded Kafka-compatible broker until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated

import typer

from agent.broker import EmbeddedBroker
from cli.options import build_settings

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    @app.command("broker")
    def broker(
        port: Annotated[int | None, typer.Option(help="TCP port (default: broker.port setting)")] = None,
        host: Annotated[str | None, typer.Option(help="listen address (default: broker.host, 127.0.0.1)")] = None,
    ) -> None:
        """Run the embedded tansu broker (memory storage) on 127.0.0.1 until interrupted."""

        settings = build_settings()
        embedded = EmbeddedBroker(
            host or settings.broker.host,
            port or settings.broker.port,
            start_timeout_s=settings.broker.start_timeout_s,
        )
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        with embedded:
            typer.echo(f"broker ready on {embedded.bootstrap_servers} (Ctrl-C to stop)")
            while not stop.wait(0.5):
                if not embedded.running:
                    raise typer.Exit(code=1)
        typer.echo("broker stopped")
