"""A bounded, append-only, fsync'd on-disk queue of opaque records that survives a process restart.

Layout of the directory: `seg-<n>.log` segment files of records `[u32 length][u32 crc32][payload]`, and a
`cursor` file (`<segment> <offset>`, replaced atomically) marking how far the records were delivered.
`append` returns only after fsync; `read_records` + `commit` deliver in append order; consumed segments are
deleted. The spool may hold transcripts (health data): its directory is forced to mode 0700 and every file in
it to 0600, whatever they were before (an existing directory, a previous version's files, the umask).
A record torn by a crash mid-append (its append never returned) is cut off at start-up and logged.
One process owns a spool at a time (an exclusive lock on `LOCK`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.errors import SpoolFullError
from core.atomic_output import fsync_dir
from core.errors import ConfigError

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")  # payload length, crc32 of payload
_SEGMENT_DIGITS = 12
DIR_MODE = 0o700
FILE_MODE = 0o600


@dataclass(frozen=True, slots=True, order=True)
class Cursor:
    segment: int
    offset_bytes: int


def _segment_name(number: int) -> str:
    return f"seg-{number:0{_SEGMENT_DIGITS}d}.log"


def _open_private(path: Path, flags: int) -> int:
    """os.open with mode 0600, also when the file already existed with another mode."""
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd


def _scan(path: Path, start_bytes: int) -> tuple[int, int, int]:
    """Records and bytes of valid records from `start_bytes`; returns (records, end_bytes, file_size)."""
    records, position = 0, start_bytes
    size = path.stat().st_size
    with open(path, "rb") as handle:
        handle.seek(start_bytes)
        while position + _HEADER.size <= size:
            length, crc = _HEADER.unpack(handle.read(_HEADER.size))
            payload = handle.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                break
            records += 1
            position += _HEADER.size + length
    return records, position, size


class Spool:
    """Open with `open()` (or as a context manager); all methods are thread-safe and blocking."""

    def __init__(self, directory: Path, max_bytes: int, *, segment_bytes: int = 8 * 1024 * 1024) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._lock_fd: int | None = None
        self._cursor = Cursor(1, 0)
        self._segments: list[int] = []
        self._pending_records = 0
        self._pending_bytes = 0
        self._tail_bytes = 0  # size of the last segment

    # -- lifecycle ---------------------------------------------------------------------------------------

    def open(self) -> Spool:
        self.directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.chmod(self.directory, DIR_MODE)  # mkdir leaves an existing directory's mode as it was
        self._lock_fd = _open_private(self.directory / "LOCK", os.O_RDWR)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise ConfigError(f"spool {self.directory} is in use by another process") from None
        with self._lock:
            self._recover()
        if self._pending_records:
            log.info(
                "spool holds %d record(s), %d bytes from a previous run",
                self._pending_records,
                self._pending_bytes,
                extra={"spool_dir": str(self.directory)},
            )
        return self

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> Spool:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- state -------------------------------------------------------------------------------------------

    @property
    def pending_records(self) -> int:
        return self._pending_records

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    @property
    def empty(self) -> bool:
        return self._pending_records == 0

    # -- operations --------------------------------------------------------------------------------------

    def append(self, records: Sequence[bytes]) -> None:
        """Append all records (or none) and fsync; raises SpoolFullError beyond `max_bytes`."""
        data = b"".join(_HEADER.pack(len(r), zlib.crc32(r)) + r for r in records)
        with self._lock:
            if self._pending_bytes + len(data) > self.max_bytes:
                raise SpoolFullError(
                    f"spool {self.directory} is full: {self._pending_bytes} of {self.max_bytes} bytes "
                    "pending, "
                    f"{len(records)} record(s) ({len(data)} bytes) refused"
                )
            if not self._segments or self._tail_bytes >= self.segment_bytes:
                self._new_segment()
            path = self.directory / _segment_name(self._segments[-1])
            with open(_open_private(path, os.O_WRONLY | os.O_APPEND), "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            self._tail_bytes += len(data)
            self._pending_records += len(records)
            self._pending_bytes += len(data)

    def read_records(self, max_records: int, max_bytes: int = 4 * 1024 * 1024) -> list[tuple[bytes, Cursor]]:
        """Up to `max_records` records from the cursor (not consumed), each with the cursor just after it."""
        with self._lock:
            out: list[tuple[bytes, Cursor]] = []
            total = 0
            for number in [n for n in self._segments if n >= self._cursor.segment]:
                position = self._cursor.offset_bytes if number == self._cursor.segment else 0
                with open(self.directory / _segment_name(number), "rb") as handle:
                    handle.seek(position)
                    while len(out) < max_records and total < max_bytes:
                        header = handle.read(_HEADER.size)
                        if len(header) < _HEADER.size:
                            break
                        length, _crc = _HEADER.unpack(header)
                        position += _HEADER.size + length
                        total += _HEADER.size + length
                        out.append((handle.read(length), Cursor(number, position)))
                if len(out) >= max_records or total >= max_bytes:
                    break
            return out

    def commit(self, cursor: Cursor, records: int) -> None:
        """Mark everything before `cursor` (`records` records) delivered; deletes consumed segments."""
        with self._lock:
            if cursor < self._cursor:
                raise ValueError(f"spool cursor moves backwards: {cursor} < {self._cursor}")
            consumed = self._bytes_between(self._cursor, cursor)
            self._pending_records -= records
            self._pending_bytes -= consumed
            if self._pending_records == 0:
                cursor = Cursor(self._segments[-1] + 1 if self._segments else cursor.segment + 1, 0)
            self._write_cursor(cursor)
            for number in [n for n in self._segments if n < cursor.segment]:
                (self.directory / _segment_name(number)).unlink(missing_ok=True)
            self._segments = [n for n in self._segments if n >= cursor.segment]
            if not self._segments:
                self._tail_bytes = 0

    # -- internals ---------------------------------------------------------------------------------------

    def _bytes_between(self, start: Cursor, end: Cursor) -> int:
        if start.segment == end.segment:
            return end.offset_bytes - start.offset_bytes
        total = 0
        for number in self._segments:
            if start.segment <= number < end.segment:
                size = (self.directory / _segment_name(number)).stat().st_size
                total += size - (start.offset_bytes if number == start.segment else 0)
        return total + end.offset_bytes

    def _new_segment(self) -> None:
        number = max(self._segments[-1] if self._segments else 0, self._cursor.segment - 1) + 1
        os.close(_open_private(self.directory / _segment_name(number), os.O_WRONLY))
        fsync_dir(self.directory)
        self._segments.append(number)
        self._tail_bytes = 0

    def _write_cursor(self, cursor: Cursor) -> None:
        tmp = self.directory / "cursor.tmp"
        with open(_open_private(tmp, os.O_WRONLY | os.O_TRUNC), "w", encoding="ascii") as handle:
            handle.write(f"{cursor.segment} {cursor.offset_bytes}\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.directory / "cursor")
        fsync_dir(self.directory)
        self._cursor = cursor

    def _read_cursor(self) -> Cursor:
        path = self.directory / "cursor"
        if not path.is_file():
            return Cursor(1, 0)
        try:
            segment, offset = path.read_text("ascii").split()
            return Cursor(int(segment), int(offset))
        except ValueError:
            raise ConfigError(
                f"spool cursor {path} is corrupt; inspect the spool before deleting it"
            ) from None

    def _recover(self) -> None:
        self._cursor = self._read_cursor()
        numbers = sorted(int(p.name[4:-4]) for p in self.directory.glob("seg-*.log"))
        for number in [n for n in numbers if n < self._cursor.segment]:
            (self.directory / _segment_name(number)).unlink()  # consumed before a crash
        self._segments = [n for n in numbers if n >= self._cursor.segment]
        self._pending_records = self._pending_bytes = self._tail_bytes = 0
        for leftover in (self.directory / "cursor", *(self.directory / _segment_name(n) for n in self._segments)):
            if leftover.exists():
                os.chmod(leftover, FILE_MODE)  # written by a version that left them 0644
        for number in self._segments:
            path = self.directory / _segment_name(number)
            start = self._cursor.offset_bytes if number == self._cursor.segment else 0
            records, end, size = _scan(path, start)
            if end < size:
                log.error(
                    "spool segment %s: cut %d byte(s) of a record torn by a crash (never acknowledged)",
                    path.name,
                    size - end,
                )
                with open(path, "r+b") as handle:
                    handle.truncate(end)
                    os.fsync(handle.fileno())
            self._pending_records += records
            self._pending_bytes += end - start
            self._tail_bytes = end
