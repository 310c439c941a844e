"""Live score feed for browsers (Server-Sent Events), read from the scores topic: any pod serves any call.

A feed shows one call's windows, of one participant or of all: first those among the last
`ingest.feed_backlog_records` records of each partition (a viewer who opens the page mid-call sees the call so
far, as far back as that reaches), then an SSE comment `: live`, then every new one as it is published. All
open feeds of a process share one consumer (agent/topic_tail.py); each backlog is one short read
(agent/topic_reader.py) on a thread of the feed's own. The messages are the topic's own bodies, at least
once: a window re-sent after a broker outage can arrive twice (its (stream key, seq) tells).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from agent.errors import BrokerError
from agent.settings import KafkaSettings
from agent.topic_reader import TopicReadTimeout, TopicRecord, read_topic
from agent.topic_tail import Follower, TopicTail

log = logging.getLogger(__name__)

SUBSCRIBER_QUEUE = 256  # messages waiting for a slow subscriber; beyond this its oldest are dropped
# A comment line this often when no score comes: writing is how a subscriber that went away is noticed (and
# released), and it keeps proxies from closing a quiet stream.
HEARTBEAT_S = 15.0
BACKLOG_TIMEOUT_S = 10.0
BACKLOG_READERS = 2  # feeds opening at once beyond this wait for their backlog, never for analysis threads
LIVE = "live"  # sent (an SSE comment) once the backlog is out: every window after it comes as it is published
FeedItem = dict[str, Any] | str | None  # a score message, LIVE, or None: nothing came for a while


@dataclass(frozen=True)
class FeedScope:
    """The streams one feed shows: a call's participant, or (participant_id None) every participant."""

    call_id: str
    participant_id: str | None = None

    def accepts(self, key: str) -> bool:
        """Whether a record's key ("call/participant") is one of this feed's streams."""
        call_id, _, participant_id = key.partition("/")
        return call_id == self.call_id and (self.participant_id is None or participant_id == self.participant_id)


class ScoreFeed:
    """Subscriptions to the scores topic by call; a slow subscriber loses its oldest messages, nothing else."""

    def __init__(self, kafka: KafkaSettings, backlog_records: int) -> None:
        self.kafka = kafka
        self.backlog_records = backlog_records
        self._tail = TopicTail(kafka, kafka.topics.scores)
        self._scopes: list[FeedScope] = []  # of the open subscriptions
        self._readers: ThreadPoolExecutor | None = None

    def subscribers(self, stream_key: str) -> int:
        """Open feeds that show `stream_key`."""
        return sum(scope.accepts(stream_key) for scope in self._scopes)

    async def subscribe(self, scope: FeedScope, idle_s: float | None = None) -> AsyncGenerator[FeedItem, None]:
        """Score messages of `scope`: the backlog, LIVE, then live ones; None after each `idle_s` without one."""
        subscription = _Subscription(scope)
        self._scopes.append(scope)
        self._tail.follow(subscription.follower)
        backlog = asyncio.create_task(self._send_backlog(subscription), name=f"score-feed-backlog-{scope.call_id}")
        try:
            while True:
                try:
                    yield await asyncio.wait_for(subscription.queue.get(), idle_s)
                except TimeoutError:
                    yield None
        finally:
            backlog.cancel()
            self._tail.unfollow(subscription.follower)
            self._scopes.remove(scope)

    async def handle_sse(self, request: web.Request, scope: FeedScope) -> web.StreamResponse:
        """Server-Sent Events of `scope` (checked ids), one `score` event per window."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        await response.write(b": connected\n\n")
        try:
            async with contextlib.aclosing(self.subscribe(scope, HEARTBEAT_S)) as messages:
                async for message in messages:
                    if message is None:
                        await response.write(b": heartbeat\n\n")
                        continue
                    if isinstance(message, str):
                        await response.write(f": {message}\n\n".encode())
                        continue
                    payload = json.dumps(message, separators=(",", ":"))
                    await response.write(f"event: score\ndata: {payload}\n\n".encode())
        except ConnectionResetError:  # the page was closed: not an error
            log.debug("score feed subscriber of call %s went away", scope.call_id)
        return response

    async def close(self) -> None:
        await self._tail.close()
        if self._readers is not None:
            self._readers.shutdown(wait=False, cancel_futures=True)
            self._readers = None

    async def _send_backlog(self, subscription: _Subscription) -> None:
        """Once the shared consumer knows where live delivery starts, the scope's records before it."""
        follower = subscription.follower
        await follower.positioned.wait()
        assert follower.start is not None
        start = follower.start
        records: list[TopicRecord] = []
        try:
            if self.backlog_records > 0 and start:
                reader = self._backlog_readers()
                records = await asyncio.get_running_loop().run_in_executor(reader, self._read_backlog)
        except Exception as exc:  # whatever went wrong, the live records must not stay held back
            log.warning("score feed: no backlog (%s)", type(exc).__name__)
        subscription.backlog_done(
            [r for r in records if r.offset < start.get(r.partition, -1) and subscription.scope.accepts(r.key)]
        )

    def _read_backlog(self) -> list[TopicRecord]:
        try:
            return read_topic(
                self.kafka, self.kafka.topics.scores, timeout_s=BACKLOG_TIMEOUT_S, if_missing="empty",
                tail=self.backlog_records,
            )  # fmt: skip
        except TopicReadTimeout as exc:
            log.warning("score feed: backlog read incomplete (%d records)", len(exc.records))
            return exc.records
        except BrokerError as exc:
            log.warning("score feed: no backlog, Kafka unreachable (%s)", type(exc).__name__)
            return []

    def _backlog_readers(self) -> ThreadPoolExecutor:
        if self._readers is None:
            self._readers = ThreadPoolExecutor(max_workers=BACKLOG_READERS, thread_name_prefix="score-feed-backlog")
        return self._readers


class _Subscription:
    """One open feed: live records wait behind the backlog, then everything goes to its queue in order."""

    def __init__(self, scope: FeedScope) -> None:
        self.scope = scope
        self.queue: asyncio.Queue[dict[str, Any] | str] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE)
        self.follower = Follower(scope.accepts, self._live)
        self._held: deque[TopicRecord] | None = deque(maxlen=SUBSCRIBER_QUEUE)  # None once the backlog is out

    def backlog_done(self, backlog: list[TopicRecord]) -> None:
        held, self._held = self._held or deque(), None
        for record in backlog:
            self._put(record)
        self._offer(LIVE)
        for record in held:
            self._put(record)

    def _live(self, record: TopicRecord) -> None:
        if self._held is not None:
            self._held.append(record)
        else:
            self._put(record)

    def _put(self, record: TopicRecord) -> None:
        try:
            message = record.message
        except ValueError:  # not JSON: not ours to show (and never logged: it may be anything)
            log.debug("score feed: partition %d offset %d is not a JSON message", record.partition, record.offset)
            return
        if isinstance(message, dict):
            self._offer(message)

    def _offer(self, item: dict[str, Any] | str) -> None:
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(item)
