"""Follow a topic's new records with one consumer per process, handing each to the followers that want it.

kafka-python blocks, so the consumer lives on a thread of its own; records reach the followers on the event
loop, in offset order per partition. The consumer runs while anyone follows and stops with the last one.
It reads without a consumer group (assigned every partition, nothing committed): every pod sees every record.

A follower learns `start`, per partition the first offset it is given live: whatever lies before (a backlog
read with agent/topic_reader.py) and the live records then meet without a gap or an overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from agent.kafka_config import common_kwargs
from agent.settings import KafkaSettings
from agent.topic_reader import TopicRecord

log = logging.getLogger(__name__)

POLL_MS = 500
RETRY_S = 2.0  # after the consumer failed (broker unreachable, topic gone): try again this much later
TOPIC_CHECK_S = 1.0  # a topic that does not exist yet is looked for again this often
STOP_WAIT_S = 3.0  # close(): how long to wait for the consumer thread to let go of its connections


@dataclass(eq=False)
class Follower:
    accepts: Callable[[str], bool]  # by record key; on the event loop
    deliver: Callable[[TopicRecord], None]  # on the event loop
    start: dict[int, int] | None = None  # per partition, the first offset delivered live; set once positioned
    positioned: asyncio.Event = field(default_factory=asyncio.Event)


class TopicTail:
    """The live end of one topic for any number of followers, on one consumer thread. Use from one loop."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.kafka = kafka
        self.topic = topic
        self._followers: list[Follower] = []
        self._run: _ConsumerRun | None = None
        self._next: dict[int, int] | None = None  # per partition, the offset after the last record handed on

    @property
    def followers(self) -> int:
        return len(self._followers)

    def follow(self, follower: Follower) -> None:
        """Hand `follower` every accepted record from now on (starting the consumer if it is not running)."""
        self._followers.append(follower)
        if self._next is not None:
            self._position(follower)
        if self._run is None:
            self._run = _ConsumerRun(self, asyncio.get_running_loop())

    def unfollow(self, follower: Follower) -> None:
        with contextlib.suppress(ValueError):
            self._followers.remove(follower)
        if not self._followers and self._run is not None:
            self._run.stop.set()
            self._run, self._next = None, None

    async def close(self) -> None:
        run, self._run, self._next = self._run, None, None
        self._followers.clear()
        if run is not None:
            run.stop.set()
            await asyncio.to_thread(run.thread.join, STOP_WAIT_S)

    # -- on the event loop, called by the consumer thread -----------------------------------------------------
    def _positioned(self, run: _ConsumerRun, positions: dict[int, int]) -> None:
        if run is not self._run:
            return  # a run that was stopped meanwhile
        self._next = dict(positions)
        for follower in self._followers:
            if follower.start is None:
                self._position(follower)

    def _position(self, follower: Follower) -> None:
        assert self._next is not None
        follower.start = dict(self._next)
        follower.positioned.set()

    def _dispatch(self, run: _ConsumerRun, records: list[TopicRecord]) -> None:
        if run is not self._run or self._next is None:
            return
        for record in records:
            self._next[record.partition] = record.offset + 1
            for follower in self._followers:
                if follower.accepts(record.key):
                    follower.deliver(record)


class _ConsumerRun:
    """One consumer thread's life. It positions at the topic's end (at its beginning when the topic appears
    only later: all of it is new then) and, after a failure, reconnects where it left off."""

    def __init__(self, tail: TopicTail, loop: asyncio.AbstractEventLoop) -> None:
        self.tail = tail
        self.loop = loop
        self.stop = threading.Event()
        self.positions: dict[int, int] | None = None  # per partition, where this thread has read up to
        self.thread = threading.Thread(target=self._main, name=f"topic-tail-{tail.topic}", daemon=True)
        self.thread.start()

    def _to_loop(self, callback: Callable[..., None], *args: object) -> bool:
        try:
            self.loop.call_soon_threadsafe(callback, self, *args)
        except RuntimeError:  # the loop is closed: nobody is left to follow
            self.stop.set()
            return False
        return True

    def _main(self) -> None:
        while not self.stop.is_set():
            consumer: KafkaConsumer | None = None
            try:
                consumer = KafkaConsumer(
                    **common_kwargs(self.tail.kafka), group_id=None, enable_auto_commit=False,
                    allow_auto_create_topics=False,  # topics are agent.topics' to create, with their partitions
                    auto_offset_reset="earliest",  # a position the broker no longer has (it restarted): all it has
                )  # fmt: skip
                self._consume(consumer)
            except Exception as exc:  # kafka-python raises more than KafkaError; the thread must stay up
                log.warning("following %s failed (%s); again in %.0f s", self.tail.topic, type(exc).__name__, RETRY_S)
                self.stop.wait(RETRY_S)
            finally:
                if consumer is not None:
                    with contextlib.suppress(Exception):
                        consumer.close(autocommit=False)

    def _consume(self, consumer: KafkaConsumer) -> None:
        """Position (or resume at `self.positions`), then hand records on until stopped; raises when the
        consumer fails."""
        topic = self.tail.topic
        appeared_later = False
        while not (partitions := consumer.partitions_for_topic(topic)):
            appeared_later = True
            if self.stop.wait(TOPIC_CHECK_S):
                return
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        positions = self.positions
        if positions is None:
            if appeared_later:
                consumer.seek_to_beginning(*tps)
            else:
                consumer.seek_to_end(*tps)
            positions = self.positions = {tp.partition: consumer.position(tp) for tp in tps}
            if not self._to_loop(self.tail._positioned, dict(positions)):
                return
        else:
            for tp in tps:
                if tp.partition in positions:
                    consumer.seek(tp, positions[tp.partition])
                else:
                    consumer.seek_to_beginning(tp)
        while not self.stop.is_set():
            batch = consumer.poll(timeout_ms=POLL_MS)
            records = [TopicRecord.of(tp.partition, r) for tp, rows in batch.items() for r in rows]
            if records:
                for record in records:
                    positions[record.partition] = record.offset + 1
                if not self._to_loop(self.tail._dispatch, records):
                    return
