"""Publish scores (and, when enabled, transcripts) to Kafka without losing a window the broker never took.

Hand a message over and move on: `enqueue_score` returns at once, and the publisher owns waiting for the
broker, retrying and spooling, so analysis never waits on Kafka. `publish_score` hands over the same way and
then waits for the outcome, for callers that need it (tests, benchmarks, a one-off producer): "acked" once
the broker acknowledged it, "spooled" once it is fsync'd in the spool, SpoolFullError when neither happened.

A message waits for its ack at most the producer's delivery timeout: the smaller of
`publish.delivery_timeout_s` and `kafka.request_timeout_ms` (agent/kafka_config.py). A broker that answers
nothing for a whole request timeout is treated as down: the unacknowledged messages go to the spool, the
producer is closed, and the drainer reconnects with backoff. Waiting longer gains nothing (kafka-python's own
retries meet the same silent broker) and costs a CPU: once a request to a hung broker timed out,
kafka-python 3.0's sender busy-polls while it reconnects, which took half a core from the analysis of a live
call (tests/kafka/test_broker_freeze.py measures the analysis through such a freeze).

One pump task is the only writer, so order holds: while the spool holds anything, new messages go behind it;
the spool drains, oldest first, whenever the broker answers again (topics are recreated first, since the
embedded broker forgets them on restart). What waits in memory is bounded by `queue_size` messages: beyond
that the pump moves the backlog to the spool, the batch still waiting for its acks included, rather than
let it grow (a late ack of that batch only makes duplicates). Delivery is at least once: consumers
deduplicate by (stream key, seq). kafka-python calls block, so they run one at a time on the publisher's
own thread, never on the thread pool that analysis shares.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from kafka import KafkaProducer
from kafka.errors import KafkaError

from agent import messages, metrics
from agent.errors import PublishError, SpoolFullError
from agent.kafka_config import delivery_timeout_ms
from agent.messages import Envelope
from agent.producer import open_producer, send_all
from agent.settings import KafkaSettings, PublishSettings
from agent.spool import Spool
from agent.topics import topic_for, topic_names
from core.errors import AffectstreamError
from core.types import Score, Transcript

log = logging.getLogger(__name__)

Delivery = Literal["acked", "spooled"]
Result = TypeVar("Result")
_BATCH = 500
_MAX_BACKOFF_S = 5.0


@dataclass
class PublisherStats:
    acked: int = 0  # acknowledged by the broker on first try
    spooled: int = 0  # written to the spool
    drained: int = 0  # delivered from the spool
    spool_full: int = 0  # refused by a full spool (or a disk error): logged, counted, raised to a waiting caller
    send_failures: int = 0  # batches the broker did not acknowledge
    spilled: int = 0  # moved to the spool because the backlog reached `queue_size` while the broker was silent


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
    done: asyncio.Future[Delivery] | None  # None: handed over by `enqueue_*`, nobody waits for the outcome


class Publisher:
    def __init__(self, kafka: KafkaSettings, publish: PublishSettings, *, queue_size: int = 10_000) -> None:
        self.kafka = kafka
        self.settings = publish
        self.stats = PublisherStats()
        self.queue_size = queue_size
        self._spool = Spool(publish.spool_dir, publish.spool_max_bytes)
        self._pending: deque[_Item] = deque()  # handed over, not yet taken by the pump
        self._unsettled = 0  # handed over and neither acknowledged, spooled nor refused
        self._wakeup = asyncio.Event()  # the pump has work (or is asked to stop)
        self._backlog_full = asyncio.Event()  # set while `_unsettled` >= queue_size
        self._kafka = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-publisher")
        self._producer: KafkaProducer | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._spooled = asyncio.Event()  # set while the spool may hold records
        self._stopping = False  # close(): no more hand-overs; the pump stops once nothing is pending
        self._closing = False  # close(): the drainer stops once the spool is empty or the broker is gone
        self._next_drain_s = 0.0
        self._backoff_s = publish.retry_backoff_ms / 1000
        # the producer reports an expired message by then, so nothing is left unsettled when it is closed
        self.ack_wait_s = delivery_timeout_ms(kafka, publish) / 1000 + 1.0

    # -- public API --------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the spool (draining a previous run's first) and connect; a down broker is not an error."""
        await asyncio.to_thread(self._spool.open)
        self._update_gauges()  # a previous run's spool counts from the start
        if self._spool.empty:
            await self._on_kafka_thread(self._connect)
        else:
            self._spooled.set()
        self._pump_task = asyncio.create_task(self._pump(), name="publisher-pump")
        self._drain_task = asyncio.create_task(self._drainer(), name="publisher-drain")

    def enqueue_score(self, score: Score, *, replay: bool = False) -> None:
        """Hand a score over and return at once; delivery (ack, retry, spool) is the publisher's."""
        self._hand_over(messages.envelope("scores", messages.score_message(score, replay=replay)), None)

    def enqueue_transcript(self, transcript: Transcript, *, replay: bool = False) -> None:
        """Transcripts are health data: nothing happens unless publish.transcripts_enabled."""
        if self.settings.transcripts_enabled:
            env = messages.envelope("transcripts", messages.transcript_message(transcript, replay=replay))
            self._hand_over(env, None)

    async def publish_score(self, score: Score, *, replay: bool = False) -> Delivery:
        """Hand a score over and wait until the broker acknowledged it or the spool holds it."""
        env = messages.envelope("scores", messages.score_message(score, replay=replay))
        return await self._outcome(env)

    async def publish_transcript(self, transcript: Transcript, *, replay: bool = False) -> Delivery | None:
        """As `publish_score`; None (nothing happens) unless publish.transcripts_enabled."""
        if not self.settings.transcripts_enabled:
            return None
        env = messages.envelope("transcripts", messages.transcript_message(transcript, replay=replay))
        return await self._outcome(env)

    @property
    def connected(self) -> bool:
        """A producer is connected and nothing waits in the spool (messages go straight to the broker)."""
        return self._producer is not None and self._spool.empty

    @property
    def spool_pending(self) -> int:
        return self._spool.pending_records

    @property
    def unsettled(self) -> int:
        """Messages handed over that are neither acknowledged, spooled nor refused yet (held in memory)."""
        return self._unsettled

    async def wait_drained(self, timeout_s: float) -> bool:
        """True once everything handed over reached the broker: nothing in memory, the spool empty."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._spool.empty and self._unsettled == 0:
                return True
            await asyncio.sleep(0.05)
        return False

    async def close(self) -> None:
        """Deliver or spool everything handed over, drain while the broker answers, then disconnect."""
        self._stopping = True
        if self._pump_task is not None:
            self._wakeup.set()
            await self._pump_task
            self._pump_task = None
        if self._drain_task is not None:
            self._closing = True
            self._spooled.set()
            await self._drain_task
            self._drain_task = None
        await self._on_kafka_thread(self._disconnect)
        self._kafka.shutdown(wait=True)
        self._spool.close()
        if not self._spool.empty:
            log.warning("publisher closed with %d record(s) in the spool", self._spool.pending_records)

    # -- hand-over ---------------------------------------------------------------------------------------

    def _hand_over(self, env: Envelope, done: asyncio.Future[Delivery] | None) -> None:
        if self._pump_task is None or self._pump_task.done() or self._stopping:
            raise PublishError("publisher is not running (call start(); not after close())", retryable=False)
        self._pending.append(_Item(env, done))
        self._unsettled += 1
        if self._unsettled >= self.queue_size:
            self._backlog_full.set()
        metrics.set_queue_depth("publish", self._unsettled)
        self._wakeup.set()

    async def _outcome(self, env: Envelope) -> Delivery:
        done: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        self._hand_over(env, done)
        return await done

    def _settle(self, items: Sequence[_Item], outcome: Delivery | Exception) -> None:
        for item in items:
            if item.done is not None and not item.done.done():  # a waiting caller may have been cancelled
                if isinstance(outcome, Exception):
                    item.done.set_exception(outcome)
                else:
                    item.done.set_result(outcome)
        self._unsettled -= len(items)
        if self._unsettled < self.queue_size:
            self._backlog_full.clear()
        metrics.set_queue_depth("publish", self._unsettled)

    # -- tasks -------------------------------------------------------------------------------------------

    async def _pump(self) -> None:
        """The only writer: sends directly while the spool is empty, else appends behind the spool."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = [self._pending.popleft() for _ in range(min(_BATCH, len(self._pending)))]
                await self._deliver(batch)
            if self._stopping and not self._pending:
                return

    async def _drainer(self) -> None:
        """Empties the spool, oldest first, whenever the broker answers; never holds up the pump."""
        while True:
            await self._spooled.wait()
            if self._closing and (self._spool.empty or self._producer is None):
                return
            delay_s = self._next_drain_s - time.monotonic()
            if delay_s > 0 and not self._closing:
                await asyncio.sleep(delay_s)
            await self._on_kafka_thread(self._drain_once)
            self._spooled.clear()
            if not self._spool.empty or self._closing:
                self._spooled.set()

    async def _deliver(self, batch: list[_Item]) -> None:
        pending = batch
        if self._spool.empty and self._producer is not None:
            sent_s = time.monotonic()
            sending = asyncio.get_running_loop().run_in_executor(
                self._kafka, self._send, [item.env for item in batch]
            )
            if not await self._acked_before_backlog_full(sending):
                # The broker is silent and the backlog reached its bound: everything waiting, this batch
                # first, goes to the spool (in order) rather than grow in memory. The send goes on; if it
                # is acknowledged after all, the spool's copies are duplicates that consumers drop.
                self.stats.spilled += len(batch)
                log.warning(
                    "broker silent for %.1f s with %d message(s) waiting: moving them to the spool",
                    time.monotonic() - sent_s, self._unsettled,
                )  # fmt: skip
                sending.add_done_callback(_ignore_outcome)
                await self._spool_items(batch)
                self._spooled.set()
                return
            try:
                acked = sending.result()
            except Exception:  # noqa: BLE001 - an unforeseen producer failure must not stop the pump
                log.exception("sending to Kafka failed; the batch goes to the spool")
                acked = 0
            for _ in range(acked):
                metrics.observe_stage("publish_ack", time.monotonic() - sent_s)
            self.stats.acked += acked
            self._settle(batch[:acked], "acked")
            pending = batch[acked:]
        if pending:
            await self._spool_items(pending)
            self._spooled.set()

    async def _acked_before_backlog_full(self, sending: asyncio.Future[int]) -> bool:
        """Wait for the send's outcome; False as soon as the backlog reaches `queue_size` first."""
        backlog_full = asyncio.ensure_future(self._backlog_full.wait())
        waiters: set[asyncio.Future[Any]] = {sending, backlog_full}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            backlog_full.cancel()
        return sending.done()

    async def _spool_items(self, items: list[_Item]) -> None:
        try:
            await asyncio.to_thread(self._spool.append, [encode_record(item.env) for item in items])
        except SpoolFullError as exc:
            self.stats.spool_full += len(items)
            metrics.SPOOL_FULL.inc(len(items))
            log.error("spool full: %d message(s) refused (and raised to any waiting caller): %s", len(items), exc)
            self._settle(items, SpoolFullError(str(exc)))
            return
        except OSError as exc:  # a disk error: as loud as a full spool
            self.stats.spool_full += len(items)
            metrics.SPOOL_FULL.inc(len(items))
            log.error("spool write failed: %d message(s) refused: %s", len(items), exc.strerror)
            self._settle(items, PublishError(f"spool write failed: {exc.strerror}", retryable=False))
            return
        self.stats.spooled += len(items)
        self._update_gauges()
        self._settle(items, "spooled")

    async def _on_kafka_thread(self, work: Callable[[], Result]) -> Result:
        return await asyncio.get_running_loop().run_in_executor(self._kafka, work)

    # -- blocking work (the publisher's Kafka thread) ----------------------------------------------------

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
        if producer is None:
            return
        try:
            producer.close(timeout=0)  # aborts unacknowledged sends: they are spooled, never sent twice late
        except Exception as exc:  # noqa: BLE001 - kafka-python 3.0 raises when a send is still unsettled
            log.warning("closing the Kafka producer failed (%s); it is dropped", type(exc).__name__)

    def _schedule_retry(self) -> None:
        self._next_drain_s = time.monotonic() + self._backoff_s
        self._backoff_s = min(_MAX_BACKOFF_S, max(0.05, self._backoff_s * 2))

    def _send(self, envs: Sequence[Envelope]) -> int:
        """Send in order and wait for acks; returns how many leading messages were acknowledged."""
        producer = self._producer
        if producer is None:
            return 0
        acks = send_all(producer, self.kafka, envs, self.ack_wait_s)
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


def _ignore_outcome(sending: asyncio.Future[int]) -> None:
    """A spilled send's outcome changes nothing (its messages are in the spool); `_send` logged a failure."""
    if not sending.cancelled():
        sending.exception()
