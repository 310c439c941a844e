"""Options every subcommand shares (--config, --log-level, --log-format) and the settings built from them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agent.logging_setup import configure_logging
from agent.settings import Settings, load_settings


class CliState:
    config_file: Path | None = None
    log_level: str | None = None
    log_format: str | None = None


state = CliState()


def global_options(
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
