"""Scoring: windows from all streams are micro-batched, padded, run once per bundle, and split back.

The padding and splitting are pure functions; `Scorer` is the async shell (one collector task, one worker
thread that owns every ONNX Runtime call). No torch at serve time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from agent import metrics
from agent.bundle import ModelBundle, ModelInputs
from agent.settings import ScoringSettings
from core.errors import ModelError
from core.types import Features, TaskScore

__all__ = ["BatchStats", "ModelBundle", "Scorer", "length_runs", "pad_batch", "split_cost_tokens", "split_scores"]

log = logging.getLogger(__name__)


def pad_batch(items: Sequence[ModelInputs]) -> dict[str, np.ndarray]:
    """Zero-pad text to the batch's longest L and audio/vision to its longest T, with true lengths."""
    if not items:
        raise ValueError("pad_batch needs at least one item")
    batch = len(items)
    text_len = max(len(i.input_ids) for i in items)
    feeds: dict[str, np.ndarray] = {
        name: np.zeros((batch, text_len), np.int64) for name in ("input_ids", "attention_mask", "token_type_ids")
    }
    for row, item in enumerate(items):
        n = len(item.input_ids)
        feeds["input_ids"][row, :n] = item.input_ids
        feeds["attention_mask"][row, :n] = item.attention_mask
        feeds["token_type_ids"][row, :n] = item.token_type_ids
    for name in ("audio", "vision"):
        frames = [getattr(i, name) for i in items]
        padded = np.zeros((batch, max(f.shape[0] for f in frames), frames[0].shape[1]), np.float32)
        for row, f in enumerate(frames):
            padded[row, : f.shape[0]] = f
        feeds[name] = padded  # float32 [B, T, D]
        feeds[f"{name}_lengths"] = np.array([f.shape[0] for f in frames], np.int64)  # int64 [B]
    return feeds


def length_runs(text_lengths: Sequence[int], split_cost_tokens: int) -> list[list[int]]:
    """Row indexes grouped into runs of similar text length, minimising Σ(split_cost + rows × longest).

    For graphs exported before the packed text encoder (card `text_packed` false): their text encoder
    dominates a run's cost and pays for every padded token, so one 32-row batch of 6..22 tokens costs
    more than two or three runs cut at the right lengths; each run also has a fixed cost
    (`split_cost_tokens`, measured by bench/scoring.py). 0 = a single run. Exact optimum over the sorted
    lengths (n ≤ max_batch, so the O(n²) search is cheap).
    """
    order = sorted(range(len(text_lengths)), key=lambda i: text_lengths[i])
    if split_cost_tokens <= 0 or len(order) < 2:
        return [order] if order else []
    lengths = [text_lengths[i] for i in order]
    best = [0.0] + [float("inf")] * len(order)  # best[j]: cost of the first j sorted rows
    cut = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        for start in range(end):
            cost = best[start] + split_cost_tokens + (end - start) * lengths[end - 1]
            if cost < best[end]:
                best[end], cut[end] = cost, start
    runs, end = [], len(order)
    while end:
        runs.append(order[cut[end] : end])
        end = cut[end]
    return runs[::-1]


UNPACKED_SPLIT_COST_TOKENS = 32  # bench/scoring.py: a call's fixed cost, in padded tokens of MiniLM


def split_cost_tokens(bundle: ModelBundle, settings: ScoringSettings) -> int:
    """The configured cost, else 0 for a packed-text graph (one call per batch) and 32 for a padded one."""
    if settings.split_cost_tokens is not None:
        return settings.split_cost_tokens
    return 0 if bundle.card.text_packed else UNPACKED_SPLIT_COST_TOKENS


def split_scores(bundle: ModelBundle, outputs: dict[str, np.ndarray], batch: int) -> list[list[TaskScore]]:
    """One list of TaskScores per batch row, in row order."""
    rows: list[list[TaskScore]] = [[] for _ in range(batch)]
    card = bundle.card
    for task in card.tasks:
        uni = {k: outputs.get(v) for k, v in task.unimodal_outputs.items()}
        for row in range(batch):
            rows[row].append(
                TaskScore(
                    task=task.name,
                    m=float(outputs[task.output][row]),
                    t=_maybe(uni.get("t"), row),
                    a=_maybe(uni.get("a"), row),
                    v=_maybe(uni.get("v"), row),
                    label_min=task.label_min,
                    label_max=task.label_max,
                    model_id=card.model_id,
                    model_version=card.model_version,
                )
            )
    return rows


def _maybe(values: np.ndarray | None, row: int) -> float | None:
    return None if values is None else float(values[row])


@dataclass(frozen=True, slots=True)
class BatchStats:
    batch_size: int
    queue_waits_ms: tuple[float, ...]  # per window: submitted -> its batch started running
    run_ms: float
    runs: int = 1  # ONNX Runtime calls, over every bundle (a batch is split into runs of similar length)


@dataclass(slots=True)
class _Request:
    features: Features
    future: asyncio.Future[tuple[TaskScore, ...]]
    submitted_s: float


class Scorer:
    """Scores every window with every bundle; batches across streams up to max_batch / max_wait_ms."""

    def __init__(self, bundles: Sequence[ModelBundle], settings: ScoringSettings) -> None:
        if not bundles:
            raise ModelError("the scorer needs at least one model bundle")
        self.bundles = tuple(bundles)
        self.settings = settings
        self._queue: asyncio.Queue[_Request] | None = None
        self._collector: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: set[asyncio.Future[tuple[TaskScore, ...]]] = set()
        self._closed = False
        self.stats: deque[BatchStats] = deque(maxlen=4096)

    def start(self) -> None:
        """Start the collector on the running loop (call from async code)."""
        if self._collector is not None:
            return
        self._queue = asyncio.Queue(maxsize=self.settings.max_batch * 8)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scoring")
        self._collector = asyncio.get_running_loop().create_task(self._collect_forever(), name="scorer")

    async def score(self, features: Features) -> tuple[TaskScore, ...]:
        """Scores of one window by every bundle (one TaskScore per bundle task), in bundle order."""
        if self._queue is None:
            raise RuntimeError("Scorer.start() was not called")
        if self._closed:
            raise ModelError("the scorer is closed")
        future: asyncio.Future[tuple[TaskScore, ...]] = asyncio.get_running_loop().create_future()
        self._pending.add(future)
        try:
            await self._queue.put(_Request(features, future, time.perf_counter()))
            return await future
        finally:
            self._pending.discard(future)

    async def close(self) -> None:
        """Stop collecting; every window not yet scored fails with ModelError; release the worker thread."""
        self._closed = True
        if self._collector is not None:
            self._collector.cancel()
            try:
                await self._collector
            except asyncio.CancelledError:
                pass
            self._collector = None
        for future in list(self._pending):
            if not future.done():
                future.set_exception(ModelError("scorer closed before this window was scored"))
        while self._queue is not None and not self._queue.empty():
            self._queue.get_nowait()  # wakes callers blocked on a full queue; their futures already failed
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.to_thread(executor.shutdown, True)  # the run in flight ends off the loop

    async def _collect_forever(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.settings.max_wait_ms / 1000
            while len(batch) < self.settings.max_batch:
                if not self._queue.empty():  # take what is already waiting without yielding
                    batch.append(self._queue.get_nowait())
                    continue
                timeout_s = deadline - loop.time()
                if timeout_s <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout_s))
                except TimeoutError:
                    break
            batch = [r for r in batch if not r.future.done()]  # a cancelled caller gets nothing
            if batch:
                await self._run(loop, batch)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Request]) -> None:
        started_s = time.perf_counter()
        metrics.observe_batch("scoring", len(batch))
        if self._queue is not None:
            metrics.set_queue_depth("scoring", self._queue.qsize())
        runs = 0
        try:
            results, runs = await loop.run_in_executor(self._executor, self._score_batch, batch)
        except Exception as exc:  # a failing batch fails its windows, never the collector
            log.error("scoring a batch of %d windows failed: %s", len(batch), exc)
            error = exc if isinstance(exc, ModelError) else ModelError(f"scoring failed: {exc}")
            results = [error] * len(batch)
        waits_ms = tuple((started_s - r.submitted_s) * 1000 for r in batch)
        self.stats.append(BatchStats(len(batch), waits_ms, (time.perf_counter() - started_s) * 1000, runs))
        for request, result in zip(batch, results, strict=True):
            if request.future.done():
                continue
            if isinstance(result, BaseException):
                request.future.set_exception(result)
            else:
                request.future.set_result(result)

    def _score_batch(self, batch: list[_Request]) -> tuple[list[tuple[TaskScore, ...] | BaseException], int]:
        """Worker thread: per bundle, prepare (a bad window fails alone), pad, run (once per length run),
        split. Returns each window's scores or error, and the number of ONNX Runtime calls."""
        scores: list[list[TaskScore]] = [[] for _ in batch]
        errors: dict[int, BaseException] = {}
        runs = 0
        for bundle in self.bundles:
            prepared: list[tuple[int, ModelInputs]] = []
            for index, request in enumerate(batch):
                if index in errors:
                    continue
                try:
                    prepared.append((index, bundle.prepare(request.features)))
                except ModelError as exc:
                    errors[index] = exc
            if not prepared:
                continue
            lengths = [len(inputs.input_ids) for _, inputs in prepared]
            for run in length_runs(lengths, split_cost_tokens(bundle, self.settings)):
                part = [prepared[i] for i in run]
                outputs = bundle.run(pad_batch([inputs for _, inputs in part]))
                runs += 1
                rows = split_scores(bundle, outputs, len(part))
                for (index, _), row in zip(part, rows, strict=True):
                    scores[index].extend(row)
        return [errors.get(i) or tuple(scores[i]) for i in range(len(batch))], runs
