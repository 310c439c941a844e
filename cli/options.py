"""Options every subcommand shares (--config, --log-level, --log-format) and the settings built from them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agent.logging_setup import configure_logging
from agent.settings import LogFormat, LogLevel, Settings, load_settings


class CliState:
    config_file: Path | None = None
    log_level: LogLevel | None = None
    log_format: LogFormat | None = None


state = CliState()


def global_options(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file")] = None,
    log_level: Annotated[LogLevel | None, typer.Option(case_sensitive=False, help="a level name, any case")] = None,
    log_format: Annotated[LogFormat | None, typer.Option(case_sensitive=False)] = None,
) -> None:
    state.config_file = config
    state.log_level = log_level
    state.log_format = log_format


def build_settings(**overrides: object) -> Settings:
    """Settings for a subcommand: environment + config file + overrides; configures logging once."""
    logging = {name: value for name, value in (("level", state.log_level), ("format", state.log_format)) if value}
    if logging:  # merged over the logging section of the environment and file
        overrides = {"logging": logging, **overrides}
    settings = load_settings(state.config_file, **overrides)
    configure_logging(settings.logging)
    return settings
