"""Fixtures for ingest tests: a WHIP server on loopback whose session handler collects the media."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr
from whip_testing import TOKEN, Collector, ServerFactory

from agent.loopback import configure_loopback, current_mode
from agent.settings import IngestSettings
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
