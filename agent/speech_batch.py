"""Speech micro-batching: windows from every stream queue for one worker thread that decodes them in batches.

Like the scorer (agent/scoring.py), a batch is what is waiting, up to `max_batch`, plus what arrives within
`max_wait_ms`. The collector is the worker thread itself rather than an asyncio task, so one worker serves
every event loop and blocking caller alike (`affectstream transcribe`, the dataset builder, tests on their
own loops) and closes without a loop. Each caller waits on its own window's future; a batch that fails
fails only the futures in it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from agent import metrics
from core.errors import ModelError
from core.types import Transcript, Window

log = logging.getLogger(__name__)

# (row, transcript or that window's error), in any order; raising fails every row not yet yielded
DecodeBatch = Callable[[Sequence[Window]], Iterator[tuple[int, Transcript | Exception]]]


@dataclass(frozen=True, slots=True)
class SpeechBatchStats:
    batch_size: int
    queue_waits_ms: tuple[float, ...]  # per window: submitted -> its batch started decoding
    run_ms: float  # the whole batch, padded re-decodes included


@dataclass(slots=True)
class _Request:
    window: Window
    future: Future[Transcript]
    submitted_s: float


class SpeechBatcher:
    """One worker thread decoding the windows of all streams, `max_batch` at a time."""

    def __init__(self, decode: DecodeBatch, max_batch: int, max_wait_ms: float) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._decode = decode
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders submit() against close()
        self._closed = False
        self.stats: deque[SpeechBatchStats] = deque(maxlen=4096)
        self._worker = threading.Thread(target=self._work, name="speech", daemon=True)
        self._worker.start()

    def submit(self, window: Window) -> Future[Transcript]:
        """The future of this window's transcript (thread-safe; never blocks)."""
        future: Future[Transcript] = Future()
        with self._lock:
            if self._closed:
                raise ModelError("the speech recognizer is closed")
            self._queue.put(_Request(window, future, time.perf_counter()))
        return future

    async def transcribe_async(self, window: Window) -> Transcript:
        """Await this window's transcript; the event loop stays free while the worker decodes."""
        return await asyncio.wrap_future(self.submit(window))

    def close(self) -> None:
        """Finish the batch in flight, fail every window still queued with ModelError, stop the worker
        (blocks for the batch in flight)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._worker.join()

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._gather(first)
            batch = [r for r in batch if r.future.set_running_or_notify_cancel()]  # a cancelled caller gets nothing
            if self._closed:
                _fail(batch, ModelError("speech recognizer closed before this window was decoded"))
            elif batch:
                self._run(batch)
            if stop:
                return

    def _gather(self, first: _Request) -> tuple[list[_Request], bool]:
        """`first` and what joins it: everything already queued, then arrivals until the wait is over."""
        batch = [first]
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_batch:
            timeout_s = deadline - time.perf_counter()
            try:
                request = self._queue.get(timeout=timeout_s) if timeout_s > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if request is None:  # closing: this batch is the last
                return batch, True
            batch.append(request)
        return batch, False

    def _run(self, batch: list[_Request]) -> None:
        started_s = time.perf_counter()
        metrics.observe_batch("speech", len(batch))
        metrics.set_queue_depth("speech", self._queue.qsize())  # windows left waiting for the next batch
        pending = dict(enumerate(batch))
        try:
            for row, outcome in self._decode([r.window for r in batch]):
                request = pending.pop(row)
                if isinstance(outcome, Exception):
                    request.future.set_exception(outcome)
                else:
                    request.future.set_result(outcome)
        except Exception as exc:  # a failing batch fails its windows, never the worker
            log.error("decoding a batch of %d windows failed: %s", len(batch), exc)
            error = exc if isinstance(exc, ModelError) else ModelError(f"speech decoding failed: {exc}")
            _fail(pending.values(), error)
            pending.clear()
        for request in pending.values():  # a decoder that skipped a row
            request.future.set_exception(ModelError(f"no transcript for window {request.window.seq}"))
        waits_ms = tuple((started_s - r.submitted_s) * 1000 for r in batch)
        self.stats.append(SpeechBatchStats(len(batch), waits_ms, (time.perf_counter() - started_s) * 1000))


def _fail(requests: Iterable[_Request], error: Exception) -> None:
    for request in requests:
        request.future.set_exception(error)
