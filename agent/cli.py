"""The `affectstream` command: one entry point, a subcommand per job (see `affectstream --help`)."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Annotated

import typer

from agent.errors import AffectstreamError
from agent.logging_setup import configure_logging
from agent.settings import Settings, load_settings

log = logging.getLogger(__name__)

app = typer.Typer(
    name="affectstream",
    help="Streaming multimodal affect scoring of live calls (Self-MM, ONNX Runtime, Kafka).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# Each module defines `register(app)`; one module per job keeps this file free of job logic.
COMMAND_MODULES = (
    "agent.commands.broker",
    "agent.commands.transcribe",
    "agent.commands.serve",
    "agent.commands.stream",
    "agent.commands.replay",
    "agent.commands.evaluate",
    "agent.commands.monitor",
    "agent.commands.demo",
    "agent.commands.train",
    "agent.commands.export",
    "agent.commands.dataset",
    "agent.commands.model",
)


class CliState:
    config_file: Path | None = None
    log_level: str | None = None
    log_format: str | None = None


state = CliState()


@app.callback()
def _options(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file")] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = None,
    log_format: Annotated[str | None, typer.Option(help="text or json")] = None,
) -> None:
    state.config_file = config
    state.log_level = log_level
    state.log_format = log_format


def build_settings(**overrides: object) -> Settings:
    """Settings for a subcommand: environment + config file + overrides; configures logging once."""
    settings = load_settings(state.config_file, **overrides)
    if state.log_level:
        settings.logging.level = state.log_level.upper()  # type: ignore[assignment]
    if state.log_format:
        settings.logging.format = state.log_format  # type: ignore[assignment]
    configure_logging(settings.logging)
    return settings


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_commands()


def main() -> None:
    try:
        app()
    except AffectstreamError as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
