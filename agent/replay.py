"""Replay recordings through the live pipeline: every file is a stream of its own, all run concurrently
through one runtime (so the scorer batches across files), paced in real time or as fast as the machine allows.

`direct` feeds decoded media (`agent.file_source.file_media`) straight into `agent.pipeline.run_stream`;
`webrtc` starts an in-process WHIP server on a free port and streams each file with the real client
(`agent.stream_client.stream_file`), the pipeline fed from the ingest sessions as in `serve`. Replay never
sheds windows (`shed_on_overload=False`): it applies backpressure instead, so that it is deterministic.

`run_replay` is the whole job behind `affectstream replay` (cli/commands/replay.py only parses its options):
the runtime, the JSON-lines writers, the replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

from pydantic import SecretStr
from tqdm import tqdm

from agent.file_source import Pace, ReplaySource, collect_sources, file_media
from agent.jsonl_sink import JsonlWriter
from agent.pipeline import Pipeline, StreamSummary, run_stream
from agent.runtime import open_runtime
from agent.sessions import IngestSession
from agent.settings import Settings
from agent.stream_client import stream_file
from agent.whip import WhipServer
from core.atomic_output import AtomicOutput
from core.errors import AffectstreamError
from core.media import probe
from core.mediatime import MediaItem
from core.types import Score, StreamId

log = logging.getLogger(__name__)

Via = Literal["direct", "webrtc"]


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    pace: Pace = "fast"
    via: Via = "direct"
    progress: bool = True  # tqdm bars on stderr: one per file and one overall


@dataclass(frozen=True, slots=True)
class FileResult:
    source: ReplaySource
    media_s: float  # media time replayed (the --from/--to range, else the file's duration)
    windows: int
    scored: int
    shed: int
    failed: int
    wall_s: float
    error: str | None = None  # why the file could not be replayed (the others go on)


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    files: tuple[FileResult, ...]
    wall_s: float
    pace: Pace
    via: Via

    @property
    def media_s(self) -> float:
        return sum(f.media_s for f in self.files)

    @property
    def rtf(self) -> float:
        """Real-time factor: wall seconds per second of media (all files together)."""
        return self.wall_s / self.media_s if self.media_s > 0 else float("nan")

    @property
    def ok(self) -> bool:
        return all(f.error is None and f.failed == 0 for f in self.files)

    def table(self) -> str:
        rows = [f"{'stream':<48} {'media_s':>8} {'windows':>8} {'scored':>7} {'failed':>7}  status"]
        for f in self.files:
            status = f.error or "ok"
            rows.append(f"{f.source.stream.key[:48]:<48} {f.media_s:>8.2f} {f.windows:>8} {f.scored:>7} "
                        f"{f.failed:>7}  {status}")
        rows.append(f"{len(self.files)} file(s), {self.media_s:.1f} s of media in {self.wall_s:.1f} s "
                    f"(real-time factor {self.rtf:.3f}, pace {self.pace}, via {self.via})")
        return "\n".join(rows)


@dataclass
class _Progress:
    """Per-file and overall bars, advanced by the media time of each scored window."""

    enabled: bool
    totals_s: dict[StreamId, float]
    origins_s: dict[StreamId, float]
    _bars: dict[StreamId, Any] = field(default_factory=dict)  # tqdm bars
    _done_s: dict[StreamId, float] = field(default_factory=dict)
    _overall: Any = None

    def open(self) -> None:
        if not self.enabled:
            return

        bar_format = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s media [{elapsed}<{remaining}]"
        all_s = sum(self.totals_s.values())
        self._overall = tqdm(total=all_s, desc="overall", position=0, bar_format=bar_format)
        for index, (stream, total_s) in enumerate(self.totals_s.items(), start=1):
            self._bars[stream] = tqdm(total=total_s, desc=stream.call_id[:40], position=index, leave=False,
                                      bar_format=bar_format)

    async def on_score(self, score: Score) -> None:
        window = score.window
        if window.stream in self.totals_s:
            self._advance(window.stream, window.end_s - self.origins_s.get(window.stream, 0.0))

    def finish(self, stream: StreamId) -> None:
        self._advance(stream, self.totals_s.get(stream, 0.0))

    def _advance(self, stream: StreamId, done_s: float) -> None:
        done_s = min(max(done_s, self._done_s.get(stream, 0.0)), self.totals_s.get(stream, 0.0))
        step = done_s - self._done_s.get(stream, 0.0)
        self._done_s[stream] = done_s
        if step > 0 and stream in self._bars:
            self._bars[stream].update(step)
            self._overall.update(step)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        if self._overall is not None:
            self._overall.close()


def media_span_s(source: ReplaySource) -> tuple[float, float]:
    """(start, length) in seconds of what replaying `source` covers; MediaError if the file is unreadable."""
    duration_s = probe(source.path).duration_s
    start_s = source.start_s or 0.0
    end_s = min(source.end_s, duration_s) if source.end_s is not None else duration_s
    return start_s, max(0.0, end_s - start_s)


def media_spans(sources: list[ReplaySource]) -> dict[StreamId, tuple[float, float]]:
    """Each source's (start_s, duration_s), probing every file once."""
    return {source.stream: media_span_s(source) for source in sources}


async def run_replay(
    paths: list[Path],
    settings: Settings,
    *,
    pace: Pace = "fast",
    via: Via = "direct",
    from_s: float | None = None,
    to_s: float | None = None,
    output: Path | None = None,
    transcripts: Path | None = None,
    publish: bool = True,
    progress: bool = True,
) -> ReplaySummary:
    """Replay every recording under `paths` once through one runtime, to Kafka (`publish`) and/or JSON lines
    (`output`: scores; `transcripts`: transcripts, written only when asked); returns the ReplaySummary.

    Bad paths, unreadable recordings and unwritable outputs fail before the models load. The JSON-lines files
    replace `output`/`transcripts` only when every file replayed completely; otherwise what was written is
    kept as `<name>.incomplete` (core/atomic_output.py). Kafka delivery: every score is acknowledged or in
    the spool before this returns (the runtime closes the publisher)."""
    sources = collect_sources(paths, start_s=from_s, end_s=to_s)
    spans = media_spans(sources)  # an unreadable recording fails here, before any output or model
    with contextlib.ExitStack() as outputs:
        scores_out = outputs.enter_context(AtomicOutput(output)) if output is not None else None
        transcripts_out = outputs.enter_context(AtomicOutput(transcripts)) if transcripts is not None else None
        scores_file = JsonlWriter(scores_out.staging, "scores", replay=True) if scores_out else None
        transcripts_file = (
            JsonlWriter(transcripts_out.staging, "transcripts", replay=True) if transcripts_out else None
        )
        writers = [w for w in (scores_file, transcripts_file) if w is not None]
        try:
            async with open_runtime(
                settings, publish=publish, replay=True,
                score_sinks=[scores_file.score] if scores_file is not None else [],
                transcript_sinks=[transcripts_file.transcript] if transcripts_file is not None else [],
            ) as runtime:  # fmt: skip
                summary = await replay(
                    sources, runtime.pipeline, settings, ReplayOptions(pace, via, progress), spans
                )
        finally:
            for writer in writers:
                writer.close()
        if not summary.ok:
            for out in (scores_out, transcripts_out):
                if out is not None:
                    out.mark_incomplete()
    for written, out in ((scores_file, scores_out), (transcripts_file, transcripts_out)):
        if written is not None and out is not None:
            log.info("wrote %d %s line(s) to %s", written.lines, written.kind, out.written or "nowhere")
    return summary


async def replay(
    sources: list[ReplaySource], pipeline: Pipeline, settings: Settings, options: ReplayOptions,
    spans: dict[StreamId, tuple[float, float]] | None = None,
) -> ReplaySummary:
    """Replay every source concurrently through `pipeline` (with the progress bars as its last score sink);
    a file that fails is reported, not fatal."""
    if spans is None:
        spans = media_spans(sources)  # a bad file fails here, before any work
    progress = _Progress(
        options.progress, {k: span[1] for k, span in spans.items()}, {k: span[0] for k, span in spans.items()}
    )
    progress.open()
    pipeline = pipeline.with_sinks(scores=[progress.on_score])
    started = time.monotonic()
    try:
        if options.via == "webrtc":
            results = await _replay_webrtc(sources, pipeline, settings, options, spans, progress)
        else:
            results = await asyncio.gather(*(
                _replay_direct(s, pipeline, settings, options, spans[s.stream][1], progress) for s in sources
            ))
    finally:
        progress.close()
    return ReplaySummary(tuple(results), time.monotonic() - started, options.pace, options.via)


async def _replay_direct(
    source: ReplaySource, pipeline: Pipeline, settings: Settings, options: ReplayOptions, media_s: float,
    progress: _Progress,
) -> FileResult:
    started = time.monotonic()
    failure = _DecodeFailure()
    media = _until_error(file_media(source, settings.features.vision_fps, pace=options.pace), failure)
    try:
        summary = await run_stream(source.stream, media, pipeline, shed_on_overload=False)
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
        log.error("replay of %s failed: %s", source.path, exc, extra={"stream": source.stream.key})
        return FileResult(source, media_s, 0, 0, 0, 0, time.monotonic() - started, error=str(exc))
    if failure.error is not None:  # e.g. a truncated file: the windows before the error were scored and count
        log.error("replay of %s failed: %s", source.path, failure.error, extra={"stream": source.stream.key})
        return _result(source, media_s, summary, time.monotonic() - started, str(failure.error))
    progress.finish(source.stream)
    return _result(source, media_s, summary, time.monotonic() - started)


@dataclass
class _DecodeFailure:
    error: AffectstreamError | None = None


async def _until_error(media: AsyncIterator[MediaItem], failure: _DecodeFailure) -> AsyncIterator[MediaItem]:
    """A recording's media that ends at a decoding error instead of raising it (kept in `failure`): the
    stream then ends as any stream does (its last window flushed) and its summary counts what was done."""
    try:
        async for item in media:
            yield item
    except AffectstreamError as exc:
        failure.error = exc


def _result(source: ReplaySource, media_s: float, summary: StreamSummary | None, wall_s: float,
            error: str | None = None) -> FileResult:
    if summary is None:
        return FileResult(source, media_s, 0, 0, 0, 0, wall_s, error=error or "no ingest session")
    return FileResult(source, media_s, summary.windows, summary.scored, summary.shed, summary.failed, wall_s,
                      error=error)


async def _replay_webrtc(
    sources: list[ReplaySource], pipeline: Pipeline, settings: Settings, options: ReplayOptions,
    spans: dict[StreamId, tuple[float, float]], progress: _Progress,
) -> list[FileResult]:
    if any(s.start_s is not None or s.end_s is not None for s in sources):
        raise ValueError("--from/--to are not supported with --via webrtc (the client streams whole files)")
    token = secrets.token_urlsafe(24)
    ingest = settings.ingest.model_copy(update={
        "host": "127.0.0.1", "port": 0, "tokens": [SecretStr(token)], "public_url": None,
        "max_sessions": max(len(sources), settings.ingest.max_sessions),
    })
    summaries: dict[StreamId, StreamSummary] = {}

    by_key = {source.stream.key: source.stream for source in sources}

    async def on_session(session: IngestSession) -> None:
        # The recording's own identity (its deterministic session id), not the loopback WHIP session's.
        stream = by_key.get(session.stream.key, session.stream)
        summaries[stream] = await run_stream(stream, session.media(), pipeline, shed_on_overload=False)
        progress.finish(stream)

    server = WhipServer(ingest, on_session, vision_fps=settings.features.vision_fps)
    url = await server.start()
    started = time.monotonic()
    try:
        outcomes = await asyncio.gather(
            *(stream_file(s.path, _session_url(url, s.stream), token, realtime=options.pace == "realtime",
                          ice_servers=tuple(settings.ingest.ice_servers)) for s in sources),
            return_exceptions=True,
        )
    finally:
        await server.close()  # ends every session and waits for its pipeline to flush
    wall_s = time.monotonic() - started
    results = []
    for source, outcome in zip(sources, outcomes, strict=True):
        error = str(outcome) if isinstance(outcome, BaseException) else None
        if error:
            log.error("streaming %s failed: %s", source.path, error, extra={"stream": source.stream.key})
        summary = summaries.get(source.stream)
        results.append(_result(source, spans[source.stream][1], summary, wall_s, error))
    return results


def _session_url(base: str, stream: StreamId) -> str:
    query = {"call_id": stream.call_id, "participant_id": stream.participant_id, "role": stream.role}
    return f"{base}?{urlencode(query)}"
