"""Recorded files as live-like media sources: what to replay, frame sampling, pacing.

- `core.mediatime.sample_frames` keeps video frames by the slot rule live ingest applies (one
  frame per 1/fps slot, slot = floor(t * fps)); the dataset builder uses it too, so training windows, live
  windows and replayed windows see the same frames.
- `collect_sources` turns command-line paths (files, directories, a manifest CSV) into `ReplaySource`s whose
  `StreamId` names the source file (`call_id` = file name, made a valid id; parent folders are prepended,
  joined by ':', only when two sources share a name), and whose session id is `recording` (or
  `recording-<from>-<to>` for a part): deterministic, so a rerun of the same replay has the same identity
  (stream key, session, seq) and consumers drop it as a duplicate; never a live WHIP session's id.
- `file_media` decodes a source off the event loop and yields the same `AudioChunk` / `VideoFrame` objects
  live ingest does, paced in real time (sleeping to media time) or as fast as the consumer takes them.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from core.errors import ConfigError, MediaError
from core.media import decode_file
from core.mediatime import MediaItem, sample_frames
from core.types import AudioChunk, StreamId, recording_session_id

log = logging.getLogger(__name__)

Pace = Literal["realtime", "fast"]

MEDIA_SUFFIXES = frozenset(
    {
        ".wav",
        ".flac",
        ".mp3",
        ".ogg",
        ".opus",
        ".m4a",
        ".aac",
        ".mp4",
        ".mkv",
        ".webm",
        ".mov",
        ".avi",
        ".flv",
        ".mpg",
        ".mpeg",
    }
)
PARTICIPANT_ID = "replay"
_NOT_ID = re.compile(r"[^A-Za-z0-9._:-]+")
_DECODE_BATCH = 48  # items decoded per worker-thread call: amortises the thread hop


@dataclass(frozen=True, slots=True)
class ReplaySource:
    stream: StreamId
    path: Path
    start_s: float | None = None  # None = from the start
    end_s: float | None = None  # None = to the end


def id_part(text: str) -> str:
    """`text` made a valid StreamId part (letters, digits, . _ : -; starts with a letter or digit)."""
    return _NOT_ID.sub("_", text).lstrip("._:-")[-128:] or "file"


def call_id_for(path: str | Path, parents: int = 0) -> str:
    """The call id naming a file: its name, with `parents` folder names before it (joined by ':')."""
    parts = Path(path).parts
    return id_part(":".join(parts[-(parents + 1) :]))


def call_id_candidates(path: str | Path) -> list[str]:
    """Every call id a replay could have given `path`, shortest first (used to match labels to streams)."""
    return [call_id_for(path, n) for n in range(len(Path(path).parts))]


def collect_sources(
    paths: Iterable[Path], *, start_s: float | None = None, end_s: float | None = None
) -> list[ReplaySource]:
    """Files, directories (searched recursively for media) and manifest CSVs -> replay sources."""
    if start_s is not None and end_s is not None and end_s <= start_s:
        raise ConfigError(f"--to ({end_s}) must be after --from ({start_s})")
    found: list[tuple[Path, float | None, float | None]] = []
    for path in paths:
        if path.suffix.lower() == ".csv":
            found.extend(read_manifest(path))
        elif path.is_dir():
            media = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
            if not media:
                raise MediaError(str(path), "directory holds no media files")
            found.extend((p, start_s, end_s) for p in media)
        elif path.is_file():
            found.append((path, start_s, end_s))
        else:
            raise MediaError(str(path), "no such file or directory")
    if not found:
        raise ConfigError("nothing to replay")
    return _name_streams(found)


def read_manifest(path: Path) -> list[tuple[Path, float | None, float | None]]:
    """A CSV with a `path` (or `file`) column, relative to the CSV's folder, optional `start_s`/`end_s`."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        column = "path" if "path" in columns else "file" if "file" in columns else None
        if column is None:
            raise ConfigError(f"{path}: a replay manifest needs a 'path' or 'file' column; has {columns}")
        rows = []
        for line, row in enumerate(reader, start=2):
            media = Path(row[column].strip())
            media = media if media.is_absolute() else path.parent / media
            if not media.is_file():
                raise MediaError(str(media), f"no such file (manifest {path} line {line})")
            start_s, end_s = _optional_s(row, "start_s", path, line), _optional_s(row, "end_s", path, line)
            rows.append((media, start_s, end_s))
    if not rows:
        raise ConfigError(f"{path}: manifest has no rows")
    return rows


def _optional_s(row: dict[str, str], name: str, path: Path, line: int) -> float | None:
    text = (row.get(name) or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{path}:{line}: {name} must be a number of seconds, got {text!r}") from None


def _name_streams(found: list[tuple[Path, float | None, float | None]]) -> list[ReplaySource]:
    """One stream per source; call ids grow parent folders until unique, repeats get numbered participants."""
    resolved = [p.resolve() for p, _, _ in found]
    distinct = list(dict.fromkeys(resolved))
    depth = 0
    while len({call_id_for(p, depth) for p in distinct}) < len(distinct) and depth < 32:
        depth += 1
    seen: dict[str, int] = {}
    sources = []
    for (path, start_s, end_s), full in zip(found, resolved, strict=True):
        call_id = call_id_for(full, depth)
        count = seen.get(call_id, 0)
        seen[call_id] = count + 1
        participant = PARTICIPANT_ID if count == 0 else f"{PARTICIPANT_ID}-{count + 1}"
        stream = StreamId(call_id, participant, session_id=recording_session_id(start_s, end_s))
        sources.append(ReplaySource(stream, path, start_s, end_s))
    return sources


async def file_media(
    source: ReplaySource,
    vision_fps: float,
    *,
    pace: Pace = "fast",
    on_item: Callable[[MediaItem], None] | None = None,
) -> AsyncIterator[MediaItem]:
    """The source's media in media-time order, frames sampled; decoding runs in a worker thread."""

    items = sample_frames(decode_file(source.path, start_s=source.start_s, end_s=source.end_s), vision_fps)
    clock = _PaceClock() if pace == "realtime" else None
    while True:
        batch = await asyncio.to_thread(_take, items, _DECODE_BATCH)
        if not batch:
            return
        for item in batch:
            if clock is not None:
                await clock.wait_for(_available_at_s(item))
            if on_item is not None:
                on_item(item)
            yield item
        if clock is None:
            await asyncio.sleep(0)  # let other streams and the analysers run between batches


def _take(items: Iterator[MediaItem], n: int) -> list[MediaItem]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= n:
            break
    return batch


def _available_at_s(item: MediaItem) -> float:
    """Media time at which a live source could have delivered the item (audio: once recorded)."""
    return item.end_s if isinstance(item, AudioChunk) else item.time_s


class _PaceClock:
    """Sleeps so that media time t is released t - t0 seconds after the first item (wall clock)."""

    def __init__(self) -> None:
        self._origin: tuple[float, float] | None = None  # (media time, monotonic) of the first item

    async def wait_for(self, media_s: float) -> None:
        now = time.monotonic()
        if self._origin is None:
            self._origin = (media_s, now)
            return
        delay_s = (media_s - self._origin[0]) - (now - self._origin[1])
        if delay_s > 0:
            await asyncio.sleep(delay_s)
