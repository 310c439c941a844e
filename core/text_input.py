"""Text input files of the offline commands (labels CSV, scores JSON lines, rules YAML, checkpoint JSON), read
whole at the input boundary: a file that is missing, unreadable or not UTF-8 is a ConfigError naming it (and,
for bad bytes, the line), never a traceback from deep inside a parser."""

from __future__ import annotations

from pathlib import Path

from core.errors import ConfigError


def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of `path`; `what` names the file in errors ("labels file", "rules file", ...)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"cannot read {what} {path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"cannot read {what} {path}: a directory, not a file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{what} {path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save it as UTF-8"
        ) from None
