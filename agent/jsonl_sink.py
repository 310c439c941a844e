"""Scores (and, when asked, transcripts) as JSON lines: one line = the exact Kafka message body.

Each line is `agent.messages.envelope(kind, message).value`, so it is validated against the topic's schema and
byte-for-byte the encoding a Kafka consumer would read. Transcripts are health data: only written when the
caller passes a transcripts path.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import IO, Any

from agent import messages
from agent.errors import PublishError
from core.errors import ConfigError
from core.text_input import read_text
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


def read_jsonl(path: Path, kind: messages.Kind | None = None) -> list[dict[str, Any]]:
    """The messages of a JSON-lines file, each checked against `kind`'s schema when given; a file or line
    that is not UTF-8, not strict JSON (NaN and infinity are not JSON numbers), not an object or not a valid
    message is a ConfigError naming the file and line."""
    text = read_text(path, f"{kind or 'JSON-lines'} file")
    records = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            record = json.loads(line, parse_constant=_not_a_number, parse_float=_finite)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not JSON ({exc.msg})") from None
        except (ValueError, RecursionError) as exc:
            raise ConfigError(f"{where}: not JSON ({exc})") from None
        if not isinstance(record, dict):
            raise ConfigError(f"{where}: expected a JSON object")
        if kind is not None:
            try:
                messages.validate(kind, record)
            except PublishError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        records.append(record)
    return records


def _not_a_number(constant: str) -> float:
    raise ValueError(f"{constant} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value
