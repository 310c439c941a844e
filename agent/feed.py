"""Live score feed for browsers: each published score message fans out to subscribers of its stream (SSE)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import AsyncGenerator
from typing import Any

from aiohttp import web

from agent import messages
from core.types import Score

log = logging.getLogger(__name__)

SUBSCRIBER_QUEUE = 256
# A comment line this often when no score comes: writing is how a subscriber that went away is noticed (and
# released), and it keeps proxies from closing a quiet stream.
HEARTBEAT_S = 15.0


class ScoreFeed:
    """Keeps per-stream subscriber queues; a slow subscriber loses its oldest messages, never blocks scoring."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)

    async def sink(self, score: Score) -> None:
        subscribers = self._subscribers.get(score.window.stream.key)
        if not subscribers:
            return
        message = messages.score_message(score, replay=False)
        for queue in subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(message)

    def subscribers(self, stream_key: str) -> int:
        return len(self._subscribers.get(stream_key, ()))

    async def subscribe(
        self, stream_key: str, idle_s: float | None = None
    ) -> AsyncGenerator[dict[str, Any] | None, None]:
        """Score messages of `stream_key` as they are published; None after each `idle_s` without one."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE)
        self._subscribers[stream_key].add(queue)
        try:
            while True:
                try:
                    yield await asyncio.wait_for(queue.get(), idle_s)
                except TimeoutError:
                    yield None
        finally:
            self._subscribers[stream_key].discard(queue)
            if not self._subscribers[stream_key]:
                del self._subscribers[stream_key]

    async def handle_sse(self, request: web.Request, key: str) -> web.StreamResponse:
        """Server-Sent Events of stream `key` (a checked `StreamId.key`), one `score` event per window."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        await response.write(b": connected\n\n")
        try:
            async with contextlib.aclosing(self.subscribe(key, HEARTBEAT_S)) as messages:
                async for message in messages:
                    if message is None:
                        await response.write(b": heartbeat\n\n")
                        continue
                    payload = json.dumps(message, separators=(",", ":"))
                    await response.write(f"event: score\ndata: {payload}\n\n".encode())
        except ConnectionResetError:  # the page was closed: not an error
            log.debug("score feed subscriber of %s went away", key)
        return response
