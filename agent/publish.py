"""Publish scores (and, when enabled, transcripts) to Kafka without losing a window the broker never took.

One pump task is the only writer, so order holds: while the spool holds anything, new messages go behind
it; the spool drains, oldest first, whenever the broker answers again (topics are recreated first, since
the embedded broker forgets them on restart). `publish_*` returns once the broker acknowledged the message
or it is fsync'd in the spool. Delivery is at least once: consumers deduplicate by (stream key, seq).
kafka-python calls block, so they run in a worker thread, one at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from kafka import KafkaProducer
from kafka.errors import KafkaError

from agent import messages, metrics
from agent.errors import PublishError, SpoolFullError
from agent.messages import Envelope
from agent.producer import open_producer, send_all
from agent.settings import KafkaSettings, PublishSettings
from agent.spool import Spool
from agent.topics import topic_for, topic_names
from core.errors import AffectstreamError
from core.types import Score, Transcript

log = logging.getLogger(__name__)

Delivery = Literal["acked", "spooled"]
_BATCH = 500
_MAX_BACKOFF_S = 5.0


@dataclass
class PublisherStats:
    acked: int = 0  # acknowledged by the broker on first try
    spooled: int = 0  # written to the spool
    drained: int = 0  # delivered from the spool
    spool_full: int = 0  # refused by a full spool: each one also raised SpoolFullError to its caller
    send_failures: int = 0  # batches the broker did not acknowledge


def encode_record(env: Envelope) -> bytes:
    """An envelope as one spool record (byte-exact headers and value)."""
    return json.dumps(
        {"k": env.kind, "key": env.key, "h": [[n, v.decode("latin-1")] for n, v in env.headers],
         "v": env.value.decode()},
        separators=(",", ":"), ensure_ascii=False,
    ).encode()  # fmt: skip


def decode_record(record: bytes) -> Envelope:
    data = json.loads(record)
    headers = tuple((n, v.encode("latin-1")) for n, v in data["h"])
    return Envelope(data["k"], data["key"], data["v"].encode(), headers)


@dataclass
class _Item:
    env: Envelope
    done: asyncio.Future[Delivery]


def _resolve(item: _Item, delivery: Delivery) -> None:
    if not item.done.done():  # the caller may have been cancelled; the message is delivered regardless
        item.done.set_result(delivery)


def _fail(items: list[_Item], error: Exception) -> None:
    for item in items:
        if not item.done.done():
            item.done.set_exception(error)


class Publisher:
    def __init__(self, kafka: KafkaSettings, publish: PublishSettings, *, queue_size: int = 10_000) -> None:
        self.kafka = kafka
        self.settings = publish
        self.stats = PublisherStats()
        self._spool = Spool(publish.spool_dir, publish.spool_max_bytes)
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue(maxsize=queue_size)
        self._producer: KafkaProducer | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._spooled = asyncio.Event()  # set while the spool may hold records
        self._closing = False
        self._next_drain_s = 0.0
        self._backoff_s = publish.retry_backoff_ms / 1000

    # -- public API --------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the spool (draining a previous run's first) and connect; a down broker is not an error."""
        await asyncio.to_thread(self._spool.open)
        if self._spool.empty:
            await asyncio.to_thread(self._connect)
        else:
            self._spooled.set()
        self._pump_task = asyncio.create_task(self._pump(), name="publisher-pump")
        self._drain_task = asyncio.create_task(self._drainer(), name="publisher-drain")

    async def publish_score(self, score: Score, *, replay: bool = False) -> Delivery:
        env = messages.envelope("scores", messages.score_message(score, replay=replay))
        return await self._submit(env)

    async def publish_transcript(self, transcript: Transcript, *, replay: bool = False) -> Delivery | None:
        """Transcripts are health data: nothing happens unless publish.transcripts_enabled."""
        if not self.settings.transcripts_enabled:
            return None
        env = messages.envelope("transcripts", messages.transcript_message(transcript, replay=replay))
        return await self._submit(env)

    @property
    def connected(self) -> bool:
        """A producer is connected and nothing waits in the spool (messages go straight to the broker)."""
        return self._producer is not None and self._spool.empty

    @property
    def spool_pending(self) -> int:
        return self._spool.pending_records

    async def wait_drained(self, timeout_s: float) -> bool:
        """True once the spool is empty and nothing is queued (tests, benchmarks, orderly shutdown)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._spool.empty and self._queue.empty():
                return True
            await asyncio.sleep(0.05)
        return False

    async def close(self) -> None:
        """Deliver or spool everything queued, drain while the broker answers, then disconnect."""
        if self._pump_task is not None:
            await self._queue.put(None)
            await self._pump_task
            self._pump_task = None
        if self._drain_task is not None:
            self._closing = True
            self._spooled.set()
            await self._drain_task
            self._drain_task = None
        await asyncio.to_thread(self._disconnect)
        self._spool.close()
        if not self._spool.empty:
            log.warning("publisher closed with %d record(s) in the spool", self._spool.pending_records)

    # -- tasks -------------------------------------------------------------------------------------------

    async def _submit(self, env: Envelope) -> Delivery:
        if self._pump_task is None or self._pump_task.done():
            raise PublishError("publisher is not running (call start())", retryable=False)
        item = _Item(env, asyncio.get_running_loop().create_future())
        await self._queue.put(item)
        metrics.set_queue_depth("publish", self._queue.qsize())
        return await item.done

    async def _pump(self) -> None:
        """The only writer: sends directly while the spool is empty, else appends behind the spool."""
        closing = False
        while not closing:
            first = await self._queue.get()
            batch = [first] if first is not None else []
            closing = first is None
            while not self._queue.empty() and len(batch) < _BATCH:
                item = self._queue.get_nowait()
                if item is None:
                    closing = True
                else:
                    batch.append(item)
            if batch:
                await self._deliver(batch)

    async def _drainer(self) -> None:
        """Empties the spool, oldest first, whenever the broker answers; never holds up the pump."""
        while True:
            await self._spooled.wait()
            if self._closing and (self._spool.empty or self._producer is None):
                return
            delay_s = self._next_drain_s - time.monotonic()
            if delay_s > 0 and not self._closing:
                await asyncio.sleep(delay_s)
            await asyncio.to_thread(self._drain_once)
            self._spooled.clear()
            if not self._spool.empty or self._closing:
                self._spooled.set()

    async def _deliver(self, batch: list[_Item]) -> None:
        pending = batch
        if self._spool.empty and self._producer is not None:
            sent_s = time.monotonic()
            acked = await asyncio.to_thread(self._send, [item.env for item in batch])
            for _ in range(acked):
                metrics.observe_stage("publish_ack", time.monotonic() - sent_s)
            for item in batch[:acked]:
                _resolve(item, "acked")
            self.stats.acked += acked
            pending = batch[acked:]
        if pending:
            await self._spool_items(pending)
            self._spooled.set()

    async def _spool_items(self, items: list[_Item]) -> None:
        try:
            await asyncio.to_thread(self._spool.append, [encode_record(item.env) for item in items])
        except SpoolFullError as exc:
            self.stats.spool_full += len(items)
            metrics.SPOOL_FULL.inc(len(items))
            log.error("spool full: %d message(s) refused and reported to their callers: %s", len(items), exc)
            _fail(items, SpoolFullError(str(exc)))
            return
        except OSError as exc:  # a disk error: as loud as a full spool
            self.stats.spool_full += len(items)
            metrics.SPOOL_FULL.inc(len(items))
            log.error("spool write failed: %d message(s) refused: %s", len(items), exc.strerror)
            _fail(items, PublishError(f"spool write failed: {exc.strerror}", retryable=False))
            return
        self.stats.spooled += len(items)
        self._update_gauges()
        for item in items:
            _resolve(item, "spooled")

    # -- blocking work (worker thread) -------------------------------------------------------------------

    def _connect(self) -> bool:
        try:
            names = topic_names(self.kafka, transcripts=self.settings.transcripts_enabled)
            self._producer = open_producer(self.kafka, self.settings, names)
        except (AffectstreamError, KafkaError) as exc:
            self._producer = None
            self._schedule_retry()
            log.warning("Kafka unreachable, spooling (retry in %.1f s): %s", self._backoff_s, exc)
            return False
        self._backoff_s = self.settings.retry_backoff_ms / 1000
        log.info("connected to Kafka", extra={"bootstrap_servers": self.kafka.bootstrap_servers})
        return True

    def _update_gauges(self) -> None:
        metrics.SPOOL_MESSAGES.set(self._spool.pending_records)
        metrics.SPOOL_BYTES.set(self._spool.pending_bytes)

    def _disconnect(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=0)  # aborts unacknowledged sends: they are spooled, never sent twice late

    def _schedule_retry(self) -> None:
        self._next_drain_s = time.monotonic() + self._backoff_s
        self._backoff_s = min(_MAX_BACKOFF_S, max(0.05, self._backoff_s * 2))

    def _send(self, envs: Sequence[Envelope]) -> int:
        """Send in order and wait for acks; returns how many leading messages were acknowledged."""
        producer = self._producer
        if producer is None:
            return 0
        acks = send_all(producer, self.kafka, envs, self.settings.delivery_timeout_s + 1)
        acked = acks.acked
        for env in envs[:acked]:
            metrics.MESSAGES_PUBLISHED.labels(topic=topic_for(self.kafka, env.kind)).inc()
        if acked < len(envs):
            self.stats.send_failures += 1
            log.warning(
                "broker acknowledged %d of %d message(s) (%s); the rest go to the spool",
                acked,
                len(envs),
                type(acks.error).__name__ if acks.error else "timeout",
            )
            self._disconnect()
            self._schedule_retry()
        return acked

    def _drain_once(self) -> None:
        if self._producer is None and not self._connect():
            return
        records = self._spool.read_records(_BATCH)
        if not records:
            return
        acked = self._send([decode_record(payload) for payload, _cursor in records])
        if acked:
            self._spool.commit(records[acked - 1][1], acked)
            self.stats.drained += acked
            self._update_gauges()
        if self._spool.empty:
            log.info("spool drained", extra={"drained_total": self.stats.drained})
