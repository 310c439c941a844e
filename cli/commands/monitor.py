"""`affectstream monitor --rules rules.yaml`: the alert monitor and its probes, until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from agent.monitor import Monitor
from agent.monitor_http import run_monitor_service
from agent.rules import load_rules
from cli.options import build_settings
from core.errors import ConfigError

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    @app.command("monitor")
    def monitor(
        rules: Annotated[
            Path | None, typer.Option(help="alert rules YAML (default: monitor.rules_path setting)")
        ] = None,
        group_id: Annotated[str | None, typer.Option(help="consumer group (default: monitor.group_id)")] = None,
        check: Annotated[bool, typer.Option(help="validate the rules file and exit")] = False,
    ) -> None:
        """Apply alert rules to affect.scores and publish one alert per episode to affect.alerts; serve
        /healthz, /readyz and /metrics on monitor.host:monitor.port."""

        settings = build_settings()
        rules_path = rules or settings.monitor.rules_path
        if rules_path is None:
            raise ConfigError("no rules file: pass --rules rules.yaml or set monitor.rules_path")
        loaded = load_rules(rules_path)
        if check:
            typer.echo(f"{rules_path}: {len(loaded)} rule(s) OK: {', '.join(r.name for r in loaded)}")
            return
        if group_id:
            settings.monitor.group_id = group_id
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        asyncio.run(run_monitor_service(Monitor(settings.kafka, settings.monitor, loaded), settings.monitor, stop))
