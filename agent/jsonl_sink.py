"""Scores (and, when asked, transcripts) as JSON lines: one line = the exact Kafka message body.

Each line is `agent.messages.envelope(kind, message).value`, so it is validated against the topic's schema and
byte-for-byte the encoding a Kafka consumer would read. Transcripts are health data: only written when the
caller passes a transcripts path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from agent import messages
from core.errors import ConfigError
from core.types import Score, Transcript

log = logging.getLogger(__name__)


class JsonlWriter:
    """Appends validated messages of one kind to a file, one per line, flushed as they come."""

    def __init__(self, path: Path, kind: messages.Kind, *, replay: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.kind = kind
        self.replay = replay
        self.lines = 0
        self._file: IO[bytes] | None = open(path, "wb")  # noqa: SIM115 - closed by close()

    def write(self, message: dict[str, Any]) -> None:
        if self._file is None:
            raise RuntimeError(f"{self.path} is closed")
        self._file.write(messages.envelope(self.kind, message).value + b"\n")
        self._file.flush()
        self.lines += 1

    async def score(self, score: Score) -> None:
        self.write(messages.score_message(score, replay=self.replay))

    async def transcript(self, transcript: Transcript) -> None:
        self.write(messages.transcript_message(transcript, replay=self.replay))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The messages of a JSON-lines file; a bad line is an error naming the file and line."""
    if not path.is_file():
        raise ConfigError(f"scores file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{line_no}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise ConfigError(f"{path}:{line_no}: expected a JSON object")
            yield record
