"""The agent's HTTP server: WHIP ingest, health and readiness, Prometheus metrics, browser page, score feed.

Each WHIP session becomes one stream through the shared pipeline. Shutdown is graceful: stop accepting offers,
end the sessions (each flushes its last window), then the runtime flushes the publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web

from agent import metrics
from agent.feed import ScoreFeed
from agent.http_limits import http_runner
from agent.pipeline import Pipeline, run_stream
from agent.runtime import Runtime
from agent.sessions import IngestSession
from agent.settings import Settings
from agent.tls import server_ssl_context
from agent.whip import WHIP_PATH, WhipServer
from core.types import StreamId

log = logging.getLogger(__name__)

STATIC_TYPES = {"js": "text/javascript", "css": "text/css"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


BROKER_PROBE_TIMEOUT_S = 1.0
BROKER_PROBE_TTL_S = 1.0


class AgentServer:
    """Serves as soon as it starts; takes offers and reports ready once a runtime is attached.

    `AgentServer(settings, runtime)` is ready at once; `AgentServer(settings)` answers /healthz and a 503
    /readyz (and 503 to WHIP offers) while the models load, until `attach(runtime)`. Its sessions run
    through the runtime's pipeline with the server's score feed as one more sink, after the runtime's.
    """

    def __init__(self, settings: Settings, runtime: Runtime | None = None) -> None:
        self.settings = settings
        self.runtime: Runtime | None = None
        self.pipeline: Pipeline | None = None  # the runtime's, feeding the SSE score feed too
        self.feed = ScoreFeed()
        self.whip = WhipServer(settings.ingest, self._on_session, vision_fps=settings.features.vision_fps)
        self._runner: web.AppRunner | None = None
        self._broker_probe: tuple[float, bool] = (-1e9, False)  # (monotonic time, reachable)
        self.url = ""
        if runtime is not None:
            self.attach(runtime)

    def attach(self, runtime: Runtime) -> None:
        """Models loaded and publisher started: start taking offers."""
        self.pipeline = runtime.pipeline.with_sinks(scores=[self.feed.sink])
        self.runtime = runtime
        # video is most of a call's packets: not sent at all when no model would look at it
        self.whip.receive_video = self.settings.ingest.video == "always" or self.pipeline.extractor.uses_vision

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.settings.ingest.max_sdp_bytes, middlewares=[self._not_ready]
        )
        self.whip.add_routes(app)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/streams/{call_id}/{participant_id}/scores", self._scores)
        return app

    async def start(self) -> str:
        """Listen on ingest.host:ingest.port (0 = a free port), over https when ingest.tls_cert_path and
        ingest.tls_key_path are set (ConfigError if they cannot be used); returns the base URL."""
        ingest = self.settings.ingest
        tls = server_ssl_context(ingest.tls_cert_path, ingest.tls_key_path)
        self._runner = await http_runner(self.app(), ingest, shutdown_timeout=2.0)
        site = web.TCPSite(self._runner, ingest.host, ingest.port, ssl_context=tls)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"{'https' if tls else 'http'}://{ingest.host}:{port}"
        log.info("serving", extra={"url": self.url})
        return self.url

    async def close(self) -> None:
        """Stop accepting, end every session and wait for its last window to be scored and published."""
        await self.whip.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _not_ready(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.runtime is None and request.method == "POST" and request.path == WHIP_PATH:
            retry = str(self.settings.ingest.retry_after_s)
            return web.Response(status=503, text="models are loading", headers={"Retry-After": retry})
        return await handler(request)

    async def _on_session(self, session: IngestSession) -> None:
        assert self.pipeline is not None  # offers are refused until a runtime is attached
        metrics.ACTIVE_SESSIONS.inc()
        try:
            await run_stream(session.stream, session.media(), self.pipeline, shed_on_overload=True)
        finally:
            metrics.ACTIVE_SESSIONS.dec()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        runtime = self.runtime
        publisher = runtime.publisher if runtime is not None else None
        checks = {
            "models": runtime is not None and bool(runtime.bundles),
            # reachable now, and not falling back to the spool (a connected producer is not proof enough:
            # kafka-python notices a dead broker only on the next send)
            "broker": runtime is not None
            and (publisher is None or (publisher.spool_pending == 0 and await self._broker_reachable())),
            "accepting": self.whip.accepting,
        }
        status = 200 if all(checks.values()) else 503
        details = {"publisher_connected": publisher is not None and publisher.connected}
        return web.json_response({"ready": status == 200, "checks": checks, **details}, status=status)

    async def _broker_reachable(self) -> bool:
        """A TCP connection to any bootstrap server opens (cached briefly: /readyz may be polled often)."""
        checked_s, reachable = self._broker_probe
        now = time.monotonic()
        if now - checked_s < BROKER_PROBE_TTL_S:
            return reachable
        reachable = False
        for server in self.settings.kafka.bootstrap_servers.split(","):
            host, _, port = server.strip().rpartition(":")
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(host.strip("[]"), int(port)), BROKER_PROBE_TIMEOUT_S
                )
            except (OSError, TimeoutError, ValueError):
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            reachable = True
            break
        self._broker_probe = (time.monotonic(), reachable)
        return reachable

    async def _metrics(self, request: web.Request) -> web.Response:
        body, content_type = metrics.render(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _scores(self, request: web.Request) -> web.StreamResponse:
        """The SSE score feed. Scores are health data: the ingest tokens guard it, as a bearer header or as
        `?token=` (a browser's EventSource cannot set headers)."""
        self.whip.tokens.check(request, query_param="token")
        try:
            stream = StreamId(request.match_info["call_id"], request.match_info["participant_id"])
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return await self.feed.handle_sse(request, stream.key)

    async def _index(self, request: web.Request) -> web.Response:
        page = resources.files("agent").joinpath("static/index.html").read_text(encoding="utf-8")
        return web.Response(text=page, content_type="text/html")

    async def _static(self, request: web.Request) -> web.Response:
        """The page's script and style files (package data in agent/static); nothing else is served."""
        name = request.match_info["name"]
        content_type = STATIC_TYPES.get(name.rpartition(".")[2])
        served = {entry.name for entry in resources.files("agent").joinpath("static").iterdir()}
        if content_type is None or name not in served:  # listed, not looked up: no path from the URL
            raise web.HTTPNotFound(text="no such static file")
        resource = resources.files("agent").joinpath("static", name)
        return web.Response(
            text=resource.read_text(encoding="utf-8"),
            content_type=content_type,
            headers={"Cache-Control": "no-cache"},
        )


async def serve_until_stopped(server: AgentServer, stop: asyncio.Event) -> None:
    await server.start()
    try:
        await stop.wait()
    finally:
        log.info("shutting down: no new sessions, flushing windows and the producer")
        await server.close()
