"""The agent's HTTP server: WHIP ingest, health and readiness, Prometheus metrics, browser page, score feed.

Each WHIP session becomes one stream through the shared pipeline. /readyz means "this process can take a new
call": models loaded, accepting (not draining) and a free session slot. Kafka's reachability and the spool are
details of its body and gauges, not conditions: a Kafka outage is what the spool absorbs. Shutdown is graceful:
`drain` takes no new session and lets the running calls end by themselves (up to a timeout), then `close` ends
the rest (each flushes its last window), then the runtime flushes the publisher.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web

from agent import metrics
from agent.feed import FeedScope, ScoreFeed
from agent.http_limits import http_runner
from agent.kafka_probe import KafkaProbe
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


class AgentServer:
    """Serves as soon as it starts; takes offers and reports ready once a runtime is attached.

    `AgentServer(settings, runtime)` is ready at once; `AgentServer(settings)` answers /healthz and a 503
    /readyz (and 503 to WHIP offers) while the models load, until `attach(runtime)`. Its sessions run
    through the runtime's pipeline; its score feed reads what any agent published back from Kafka.
    """

    def __init__(self, settings: Settings, runtime: Runtime | None = None) -> None:
        self.settings = settings
        self.runtime: Runtime | None = None
        self.pipeline: Pipeline | None = None  # the runtime's
        self.feed = ScoreFeed(settings.kafka, settings.ingest.feed_backlog_records)
        self.whip = WhipServer(settings.ingest, self._on_session, vision_fps=settings.features.vision_fps)
        self._runner: web.AppRunner | None = None
        self.kafka_probe = KafkaProbe(settings.kafka.bootstrap_servers)
        self.url = ""
        if runtime is not None:
            self.attach(runtime)

    def attach(self, runtime: Runtime) -> None:
        """Models loaded and publisher started: start taking offers."""
        self.pipeline = runtime.pipeline
        self.runtime = runtime
        # video is most of a call's packets: not sent at all when no model would look at it
        self.whip.receive_video = self.settings.ingest.video == "always" or self.pipeline.extractor.uses_vision

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.ingest.max_sdp_bytes, middlewares=[self._not_ready])
        self.whip.add_routes(app)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/streams/{call_id}/{participant_id}/scores", self._scores)
        app.router.add_get("/calls/{call_id}/scores", self._scores)
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
        self.kafka_probe.start()
        log.info("serving", extra={"url": self.url})
        return self.url

    async def drain(self, timeout_s: float, cut_short: asyncio.Event | None = None) -> None:
        """Turn unready and take no new session; the running calls go on (HTTP still answers, so they can
        DELETE) until they end, `timeout_s` passes or `cut_short` is set. `close` then ends the rest."""
        metrics.DRAINING.set(1)
        log.info("draining: no new sessions; %d open, waiting up to %.0f s", self.whip.active_sessions, timeout_s)
        left = await self.whip.drain(timeout_s, cut_short)
        if left:
            why = "cut short" if cut_short is not None and cut_short.is_set() else "drain timeout"
            log.warning("%s: ending %d open session(s), flushing their last windows", why, left)
        else:
            log.info("drained: every session ended")

    async def close(self) -> None:
        """Stop accepting, end every session and wait for its last window to be scored and published."""
        await self.whip.close()
        await self.kafka_probe.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.feed.close()
        metrics.DRAINING.set(0)

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
        """200 when this process can take a new call; the body also reports sessions and Kafka (never awaited:
        a silent broker must not make the probe slow)."""
        runtime = self.runtime
        publisher = runtime.publisher if runtime is not None else None
        registry = self.whip.registry
        checks = {
            "models": runtime is not None and bool(runtime.bundles),
            "accepting": self.whip.accepting,
            "capacity": not registry.full,
        }
        ready = all(checks.values())
        body = {
            "ready": ready,
            "checks": checks,
            "sessions": {"open": len(registry), "max": registry.max_sessions},
            "kafka": {
                "reachable": self.kafka_probe.reachable,
                "publisher_connected": publisher is not None and publisher.connected,
                "spool_messages": publisher.spool_pending if publisher is not None else 0,
            },
        }
        return web.json_response(body, status=200 if ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        body, content_type = metrics.render(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _scores(self, request: web.Request) -> web.StreamResponse:
        """The SSE score feed of one participant, or of a whole call (/calls/{call_id}/scores). Scores are
        health data: a viewer token of that call (or a development token) as a bearer header, never in the URL."""
        grant = self.whip.auth.authenticate(request)
        participant_id = request.match_info.get("participant_id")
        try:  # a placeholder participant when the feed is the whole call's: the ids are checked by one rule
            stream = StreamId(request.match_info["call_id"], participant_id or "any")
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        self.whip.auth.permit(grant.refuses_view(stream.call_id, participant_id))
        return await self.feed.handle_sse(request, FeedScope(stream.call_id, participant_id))

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
