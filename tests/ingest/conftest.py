"""Fixtures for ingest tests: a WHIP server on loopback whose session handler collects the media."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from whip_testing import TOKEN, Collector, ServerFactory

from agent.logging_setup import configure_logging
from agent.loopback import configure_loopback, current_mode
from agent.server import AgentServer
from agent.settings import IngestSettings, LoggingSettings, Settings
from agent.whip import SessionHandler, WhipServer


@pytest.fixture
async def whip_server() -> AsyncIterator[ServerFactory]:
    """Start WhipServers (loopback candidates only, port 0) with a Collector; closes them afterwards."""
    servers: list[WhipServer] = []
    previous = current_mode()

    async def start(
        handler: SessionHandler | None = None, **overrides: Any
    ) -> tuple[WhipServer, str, Collector]:
        vision_fps = overrides.pop("vision_fps", 10.0)
        settings = IngestSettings(port=0, tokens=[SecretStr(TOKEN)], ice_loopback="only", **overrides)
        collector = Collector()
        server = WhipServer(settings, handler or collector, vision_fps=vision_fps)
        servers.append(server)
        return server, await server.start(), collector

    yield start
    for server in servers:
        await server.close()
    configure_loopback(previous)


@pytest.fixture
async def agent_server() -> AsyncIterator[tuple[AgentServer, str]]:
    """The agent's whole HTTP server with no runtime attached (models "loading"): its health, metrics, static and
    score-feed routes answer; WHIP offers get 503."""
    previous = current_mode()
    settings = Settings(ingest=IngestSettings(port=0, tokens=[SecretStr(TOKEN)], ice_loopback="only"))
    server = AgentServer(settings)
    url = await server.start()
    yield server, url
    await server.close()
    configure_loopback(previous)


@pytest.fixture
def serve_logging() -> Iterator[Callable[[str], None]]:
    """Configure logging as `serve` does (to sys.stderr, which capsys captures); restores pytest's handlers."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}

    def configure(log_format: str = "json") -> None:
        configure_logging(LoggingSettings(level="DEBUG", format=log_format))  # type: ignore[arg-type]

    yield configure
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)
