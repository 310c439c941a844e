"""`affectstream demo`: the main job on the embedded defaults."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_command() -> None:
        """Start the embedded broker and the agent, stream a generated sample call over WebRTC, print scores."""
        from agent.cli import build_settings
        from agent.demo import demo

        raise typer.Exit(code=demo(build_settings()))
