"""`affectstream serve`: WHIP ingest → pipeline → Kafka, with /healthz, /readyz and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from agent.http_auth import STATIC_TOKENS_WARNING
from agent.runtime import open_runtime
from agent.server import AgentServer
from cli.options import build_settings

log = logging.getLogger(__name__)


@dataclass
class ShutdownSignals:
    """SIGTERM or SIGINT: the first asks to drain, a second to end the remaining calls now."""

    draining: asyncio.Event = field(default_factory=asyncio.Event)
    cut_short: asyncio.Event = field(default_factory=asyncio.Event)

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._received, signum)

    def _received(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.draining.is_set():
            log.info("%s again: ending the remaining sessions now", name)
            self.cut_short.set()
        else:
            log.info("%s: draining (a second signal ends the remaining sessions now)", name)
            self.draining.set()


async def serve(settings) -> None:  # type: ignore[no-untyped-def]
    """Listen at once (/healthz answers, /readyz is 503 while models load), then load, attach and serve
    until SIGTERM/SIGINT: turn unready, take no new session, let the running calls end (at most
    ingest.drain_timeout_s, or until a second signal), end the rest (last windows flushed), flush the producer."""

    signals = ShutdownSignals()
    signals.install()
    server = AgentServer(settings)
    await server.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            loading = asyncio.create_task(stack.enter_async_context(open_runtime(settings)), name="load")
            stopping = asyncio.create_task(signals.draining.wait())
            await asyncio.wait([loading, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not loading.done():
                loading.cancel()
                log.info("stopped while loading models")
                return
            server.attach(loading.result())
            log.info("ready", extra={"url": server.url})
            await signals.draining.wait()
            await server.drain(settings.ingest.drain_timeout_s, signals.cut_short)
            log.info("shutting down: ending sessions, flushing windows and the producer")
            await server.close()  # sessions end; their last windows are scored and handed to the publisher
        # leaving the stack closed the runtime: scorer stopped, producer flushed and closed
    finally:
        await server.close()
    log.info("stopped")


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_command(
        port: Annotated[int | None, typer.Option(help="HTTP port (default: ingest.port)")] = None,
        host: Annotated[str | None, typer.Option(help="listen address (default: ingest.host)")] = None,
        tls_cert: Annotated[
            Path | None, typer.Option(help="PEM certificate (chain) to serve https (default: ingest.tls_cert_path)")
        ] = None,
        tls_key: Annotated[
            Path | None, typer.Option(help="its unencrypted PEM key (default: ingest.tls_key_path)")
        ] = None,
    ) -> None:
        """Accept calls over WHIP, score every window, publish to Kafka (needs ingest.token_secret, or ingest.tokens).

        Browsers give the camera only to secure origins: serve https here (--tls-cert/--tls-key) or behind a
        TLS reverse proxy to open the browser page from another machine."""

        settings = build_settings()
        if port is not None:
            settings.ingest.port = port
        if host is not None:
            settings.ingest.host = host
        if tls_cert is not None:
            settings.ingest.tls_cert_path = tls_cert
        if tls_key is not None:
            settings.ingest.tls_key_path = tls_key
        if settings.ingest.tokens:
            log.warning(STATIC_TOKENS_WARNING)
        asyncio.run(serve(settings))
