"""`affectstream demo`: the main job on the embedded defaults."""

from __future__ import annotations

import typer

from cli.demo import demo
from cli.options import build_settings


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_command() -> None:
        """Start the embedded broker and the agent, stream a generated sample call over WebRTC, print scores."""

        raise typer.Exit(code=demo(build_settings()))
