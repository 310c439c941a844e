"""WHIP (RFC 9725) signalling over aiohttp: POST an SDP offer, get a session resource; DELETE ends it.

    server = WhipServer(settings.ingest, on_session, vision_fps=settings.features.vision_fps)
    server.add_routes(app)          # or: url = await server.start() for a standalone listener
    ...
    await server.drain(timeout_s)   # optional: take no new session, let the running ones end by themselves
    await server.close()            # stop accepting, end every session, wait for on_session to return

A session's `Location` is absolute (agent/public_url.py): on `ingest.public_url` when set, else on the request's
own scheme and host, so a later DELETE reaches this process through a proxy that routes by host. A session this
process does not hold answers 404.

`on_session(session)` runs once per session, as its own task; it typically iterates `session.media()`, which
ends when the peer disconnects, DELETEs, or ICE fails. Bearer tokens (agent/http_auth.py): a publisher token
offers only the call and participant it names and ends only that stream's sessions. An offer carries one
participant: one sending audio track, at most one video track (agent/sdp_offer.py). A stream whose last
session is still closing answers 503 with a short Retry-After, so a quick reconnect knows to retry; a live one
answers 409.

`receive_video = False` (set it when no model looks at faces) answers a video track "inactive": the peer
sends no video, so the server neither receives, decrypts nor decodes it (most of a stream's packets), and
sessions deliver audio only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

from agent import metrics
from agent.http_auth import RequestAuth
from agent.http_limits import http_runner, read_body
from agent.loopback import configure_loopback
from agent.public_url import request_base_url, resolve_public_url
from agent.sdp_offer import OfferError, OfferSummary, check_offer, describe
from agent.sessions import (
    IngestSession,
    RegistryFull,
    SessionLimits,
    SessionRegistry,
    StreamBusy,
    StreamClosing,
)
from agent.settings import IngestSettings
from core.types import StreamId

log = logging.getLogger(__name__)

SDP_TYPE = "application/sdp"
WHIP_PATH = "/whip"
IDENTITY_FIELDS = {"call_id": "X-Call-Id", "participant_id": "X-Participant-Id", "role": "X-Role"}
SessionHandler = Callable[[IngestSession], Awaitable[None]]
CLOSING_RETRY_AFTER_S = 1  # a reconnect while the stream's last session flushes: that takes about a second
ANSWERING_POLL_S = 0.1  # drain: an offer being answered registers its session within moments
_COUNTED_WHERE_REFUSED = {401, 403, 503}  # auth in agent/http_auth.py; capacity and closing in _accept
_REJECT_REASONS = {408: "bad_request"}  # any other refusal of an offer: "bad_offer"


class WhipServer:
    """WHIP endpoint: authenticates, answers offers, supervises sessions and hands them to `on_session`."""

    def __init__(self, settings: IngestSettings, on_session: SessionHandler, *, vision_fps: float = 10.0) -> None:
        self.auth = RequestAuth(settings.tokens, settings.token_secret)  # also guards agent/server.py's feed
        self.settings = settings
        self._on_session = on_session
        self._limits = SessionLimits(
            vision_fps=vision_fps,
            ice_timeout_s=settings.ice_timeout_s,
            media_timeout_s=settings.media_timeout_s,
            media_buffer_s=settings.media_buffer_s,
        )
        self.registry = SessionRegistry(settings.max_sessions)
        self.receive_video = True  # False: answer video "inactive" (applies to offers answered from then on)
        self._supervisors: set[asyncio.Task[None]] = set()
        self._accepting = True
        self._runner: web.AppRunner | None = None
        self._public_url = resolve_public_url(settings.public_url) if settings.public_url else None
        configure_loopback(settings.ice_loopback)

    # -- wiring ---------------------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("POST", WHIP_PATH, self._guard(self._post))
        app.router.add_route("OPTIONS", WHIP_PATH, self._guard(self._options))
        app.router.add_route("DELETE", WHIP_PATH + "/{session_id}", self._guard(self._delete))
        app.router.add_route("OPTIONS", WHIP_PATH + "/{session_id}", self._guard(self._options))
        app.router.add_route("PATCH", WHIP_PATH + "/{session_id}", self._guard(self._patch))

    async def start(self) -> str:
        """Listen on settings.host:port (0 = any free port) on its own; returns the WHIP URL."""
        app = web.Application(client_max_size=self.settings.max_sdp_bytes)
        self.add_routes(app)
        self._runner = await http_runner(app, self.settings)
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        port = self._runner.addresses[0][1]
        return f"http://{self.settings.host}:{port}{WHIP_PATH}"

    @property
    def active_sessions(self) -> int:
        """Sessions not yet released: live ones and ended ones whose handler is still flushing."""
        return len(self.registry.sessions())

    @property
    def accepting(self) -> bool:
        return self._accepting

    def stop_accepting(self) -> None:
        self._accepting = False

    async def drain(self, timeout_s: float, cut_short: asyncio.Event | None = None) -> int:
        """Take no new session; wait until the running ones have ended and flushed, at most `timeout_s` or until
        `cut_short` is set. Returns how many are left (`close` ends them)."""
        self.stop_accepting()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        interrupted = asyncio.create_task((cut_short or asyncio.Event()).wait(), name="whip-drain-cut-short")
        try:
            while (self._supervisors or self.registry.answering) and not interrupted.done():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                step = min(remaining, ANSWERING_POLL_S) if self.registry.answering else remaining
                waiting = {*self._supervisors, interrupted}
                await asyncio.wait(waiting, timeout=step, return_when=asyncio.FIRST_COMPLETED)
        finally:
            interrupted.cancel()
        return self.active_sessions

    async def close(self, reason: str = "shutdown", *, handler_timeout_s: float = 30.0) -> None:
        """Stop accepting offers, end every session, give the handlers time to flush, then cancel them."""
        log.info("WHIP server closing (%s): %d sessions", reason, self.active_sessions)
        self.stop_accepting()
        await asyncio.gather(*(s.close("shutdown") for s in self.registry.sessions()))
        if self._supervisors:
            _, late = await asyncio.wait(self._supervisors, timeout=handler_timeout_s)
            for supervisor in late:
                log.error("session handler did not finish within %.0f s: cancelled", handler_timeout_s)
                supervisor.cancel()
            if late:
                await asyncio.wait(late)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        log.info("WHIP server closed")

    # -- handlers -------------------------------------------------------------------------------------------
    async def _post(self, request: web.Request) -> web.Response:
        try:
            response = await self._accept(request)
        except web.HTTPException as exc:
            if exc.status not in _COUNTED_WHERE_REFUSED:
                metrics.count_rejection(_REJECT_REASONS.get(exc.status, "bad_offer"))
            raise
        metrics.SESSIONS_STARTED.inc()
        return response

    async def _accept(self, request: web.Request) -> web.Response:
        grant = self.auth.authenticate(request)
        if not self._accepting:
            metrics.count_rejection("draining")
            raise _error(web.HTTPServiceUnavailable, "server is shutting down", self._retry_after())
        if request.content_type != SDP_TYPE:
            raise _error(web.HTTPUnsupportedMediaType, f"Content-Type must be {SDP_TYPE}", {"Accept-Post": SDP_TYPE})
        offer = await self._read_offer(request)
        stream = _stream_id(request)
        self.auth.permit(grant.refuses_publish(stream))
        try:
            summary = check_offer(offer)
        except OfferError as exc:
            raise _error(web.HTTPBadRequest, str(exc)) from None
        try:
            self.registry.reserve(stream)
        except RegistryFull as exc:
            metrics.count_rejection("capacity")
            raise _error(web.HTTPServiceUnavailable, str(exc), self._retry_after()) from None
        except StreamClosing as exc:
            metrics.count_rejection("closing")
            raise _error(web.HTTPServiceUnavailable, str(exc), {"Retry-After": str(CLOSING_RETRY_AFTER_S)}) from None
        except StreamBusy as exc:
            raise _error(web.HTTPConflict, str(exc)) from None
        try:
            session, answer = await self._answer(stream, offer, summary)
        finally:
            self.registry.unreserve(stream)
        self.registry.add(session)
        supervisor = asyncio.create_task(self._supervise(session), name=f"whip-session-{session.id}")
        self._supervisors.add(supervisor)
        supervisor.add_done_callback(self._supervisors.discard)
        location = f"{self._public_url or request_base_url(request)}{WHIP_PATH}/{session.id}"
        log.info("ingest session %s opened for %s", session.id, stream.key, extra=session.log_extra)
        return web.Response(
            status=201,
            text=answer,
            content_type=SDP_TYPE,
            headers={"Location": location, "ETag": f'"{session.id}"'},
        )

    async def _delete(self, request: web.Request) -> web.Response:
        grant = self.auth.authenticate(request)
        session = self.registry.get(request.match_info["session_id"])
        if session is None:
            raise _error(web.HTTPNotFound, "no such session")
        self.auth.permit(grant.refuses_session(session.stream))
        await session.close("delete")
        return web.Response(status=200)

    async def _patch(self, request: web.Request) -> web.Response:
        # Trickle ICE and ICE restarts are not supported: candidates travel in the offer (RFC 9725 §4.3.1).
        grant = self.auth.authenticate(request)
        session = self.registry.get(request.match_info["session_id"])
        if session is None:
            raise _error(web.HTTPNotFound, "no such session")
        self.auth.permit(grant.refuses_session(session.stream))
        raise web.HTTPMethodNotAllowed("PATCH", ["DELETE", "OPTIONS"], text="trickle ICE is not supported")

    async def _options(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={"Accept-Post": SDP_TYPE})

    # -- steps ----------------------------------------------------------------------------------------------
    async def _read_offer(self, request: web.Request) -> str:
        body = await read_body(
            request,
            limit_bytes=self.settings.max_sdp_bytes,
            timeout_s=self.settings.body_timeout_s,
            what="SDP offer",
        )
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise _error(web.HTTPBadRequest, "SDP offer is not UTF-8 text") from None

    async def _answer(self, stream: StreamId, offer: str, summary: OfferSummary) -> tuple[IngestSession, str]:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self._ice_servers()))
        video = summary.has_video and self.receive_video
        session_id = secrets.token_hex(16)  # also the windows' StreamId.session_id: an id's characters only
        stream = StreamId(stream.call_id, stream.participant_id, stream.role, session_id=session_id)
        session = IngestSession(session_id, stream, pc, self._limits, has_video=video)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            if summary.has_video and not video:
                for transceiver in pc.getTransceivers():
                    if transceiver.kind == "video":
                        transceiver.direction = "inactive"
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # aiortc raises assorted errors on offers it cannot use
            await session.close("error")
            log.info("rejected SDP offer for %s: %s: %s", stream.key, type(exc).__name__, exc)
            raise _error(web.HTTPBadRequest, f"unusable SDP offer: {describe(exc)}") from None
        assert pc.localDescription is not None
        return session, pc.localDescription.sdp

    def _ice_servers(self) -> list[RTCIceServer]:
        credential = self.settings.ice_credential
        return [
            RTCIceServer(
                urls=url,
                username=self.settings.ice_username if url.startswith("turn") else None,
                credential=credential.get_secret_value() if credential and url.startswith("turn") else None,
            )
            for url in self.settings.ice_servers
        ]

    def _retry_after(self) -> dict[str, str]:
        return {"Retry-After": str(self.settings.retry_after_s)}

    async def _supervise(self, session: IngestSession) -> None:
        """Run the handler, enforce the ICE and media timeouts, and release everything at the end."""
        handler = asyncio.create_task(self._run_handler(session), name=f"whip-handler-{session.id}")
        watchdog = asyncio.create_task(self._watch(session), name=f"whip-watchdog-{session.id}")
        try:
            await session.wait_closed()
            if session.closed in ("ice_timeout", "ice_failed"):
                metrics.ICE_FAILURES.inc()
            await handler
        finally:
            for task in (watchdog, handler):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            session.release()
            self.registry.remove(session.id)
            log.info(
                "ingest session %s released: %s %s",
                session.id,
                session.closed,
                session.stats(),
                extra=session.log_extra,
            )

    async def _run_handler(self, session: IngestSession) -> None:
        try:
            await self._on_session(session)
        except Exception:
            log.exception("session handler failed for %s", session.id, extra=session.log_extra)
            await session.close("error")

    async def _watch(self, session: IngestSession) -> None:
        limits = self._limits
        if not await session.wait_connected(limits.ice_timeout_s):
            log.warning(
                "ingest session %s: ICE did not complete within %.1f s",
                session.id,
                limits.ice_timeout_s,
                extra=session.log_extra,
            )
            await session.close("ice_timeout")
            return
        while session.closed is None:
            await asyncio.sleep(min(1.0, limits.media_timeout_s / 4))
            if session.seconds_since_media() > limits.media_timeout_s:
                log.warning(
                    "ingest session %s: no media for %.1f s",
                    session.id,
                    limits.media_timeout_s,
                    extra=session.log_extra,
                )
                await session.close("media_timeout")

    def _guard(
        self, handler: Callable[[web.Request], Awaitable[web.Response]]
    ) -> Callable[..., Awaitable[web.StreamResponse]]:
        """Add CORS headers to every answer, errors included."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                response: web.StreamResponse = await handler(request)
            except web.HTTPException as exc:
                response = web.Response(status=exc.status, text=exc.text, headers=exc.headers)
            response.headers.update(self._cors())
            return response

        return guarded

    def _cors(self) -> dict[str, str]:
        return {
            "Access-Control-Allow-Origin": self.settings.cors_allow_origin,
            "Access-Control-Allow-Methods": "POST, DELETE, PATCH, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match, "
            + ", ".join(IDENTITY_FIELDS.values()),
            "Access-Control-Expose-Headers": "Location, ETag, Retry-After, Accept-Post",
        }


def _error(kind: type[web.HTTPException], message: str, headers: dict[str, str] | None = None) -> web.HTTPException:
    return kind(text=message, headers=headers)


def _stream_id(request: web.Request) -> StreamId:
    values = {}
    for name, header in IDENTITY_FIELDS.items():
        value = request.query.get(name) or request.headers.get(header)
        if value is not None:
            values[name] = value
    missing = [name for name in ("call_id", "participant_id") if name not in values]
    if missing:
        raise _error(web.HTTPBadRequest, f"missing {', '.join(missing)} (query parameter or X- header)")
    try:
        return StreamId(**values)
    except ValueError as exc:
        raise _error(web.HTTPBadRequest, str(exc)) from None
