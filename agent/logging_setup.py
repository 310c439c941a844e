"""Logging, configured once by the CLI: human-readable text or JSON lines, with credentials redacted."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

from agent.settings import LoggingSettings

# Attributes a LogRecord always has; anything else came in through `extra=` and is emitted as a field.
_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

REDACTED = "[redacted]"
# Where a credential shows up in text a library logs: an Authorization header (aiohttp quotes the raw header
# line of a request it cannot parse; a dict or JSON shows it quoted), a bearer credential on its own, a `token=`
# or `password=` parameter (a token pasted into a URL by mistake: the agent never reads one there).
_SECRETS = re.compile(
    r"(?P<keep>authorization['\"]?\s*[:=]\s*['\"]?(?:(?:bearer|basic)\s+)?"
    r"|\bbearer\s+"
    r"|(?:\b|_)(?:token|password)=)"
    r"[^\s'\"&\\]+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    return _SECRETS.sub(lambda match: match["keep"] + REDACTED, text)


class RedactSecrets(logging.Filter):
    """Rewrites a record's message, traceback and extra text fields with credentials replaced by `REDACTED`."""

    _exceptions = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # bad format arguments: the handler reports those itself
            return True
        if redact(message) != message:
            record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._exceptions.formatException(record.exc_info)
        for name in ("exc_text", "stack_info"):
            text = getattr(record, name)
            if text:
                setattr(record, name, redact(text))
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


class JsonLinesFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool | None) else str(value)
        if record.exc_info:
            entry["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            entry["exc"] = record.exc_text or self.formatException(record.exc_info)  # as RedactSecrets left it
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s%(context)s")

    def format(self, record: logging.LogRecord) -> str:
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and k != "context"}
        record.context = (" " + " ".join(f"{k}={v}" for k, v in extras.items())) if extras else ""
        return super().format(record)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (test runners swap it), never to a closed stream."""

    @property  # type: ignore[override]
    def stream(self):  # type: ignore[no-untyped-def]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # type: ignore[no-untyped-def]
        pass


def configure_logging(settings: LoggingSettings) -> None:
    handler = _StderrHandler()
    handler.setFormatter(JsonLinesFormatter() if settings.format == "json" else TextFormatter())
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    for noisy in ("kafka", "aioice", "aiortc", "faster_whisper", "numba", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
