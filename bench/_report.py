"""Markdown tables for benchmark results of any shape (used by bench/run_all.py; not a benchmark itself).

A result is the JSON a bench script wrote. Scalars (and dicts of scalars, flattened to dotted keys) go into a
`metric | value` table; a dict whose values are all dicts (e.g. {"whole_file": {...}, "windowed": {...}}) and
a list of dicts (rows) each become a table of their own, one row per entry.
"""

from __future__ import annotations

import json
from typing import Any

MAX_CELL_CHARS = 80


def is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, str | int):
        text = str(value)
    else:
        text = json.dumps(value, separators=(",", ":"))
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= MAX_CELL_CHARS else text[: MAX_CELL_CHARS - 1] + "…"


def flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}, "c": 2} -> {"a.b": 1, "c": 2}; lists stay whole (rendered compactly)."""
    flat: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict) and item:
            flat.update(flatten(item, f"{name}."))
        else:
            flat[name] = item
    return flat


def _is_row_table(value: Any) -> bool:
    if isinstance(value, list):
        return bool(value) and all(isinstance(row, dict) for row in value)
    if isinstance(value, dict):
        return len(value) > 1 and all(isinstance(row, dict) and row for row in value.values())
    return False


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def row_table(value: list[dict[str, Any]] | dict[str, dict[str, Any]], first_column: str) -> list[str]:
    if isinstance(value, dict):
        named = [({first_column: name} | flatten(row)) for name, row in value.items()]
    else:
        named = [flatten(row) for row in value]
    columns: list[str] = []
    for row in named:
        columns += [key for key in row if key not in columns]
    return table(columns, [[row.get(column, "") for column in columns] for row in named])


def _walk(
    value: dict[str, Any], prefix: str, scalars: dict[str, Any], sections: list[tuple[str, Any]]
) -> None:
    for key, item in value.items():
        name = f"{prefix}{key}"
        if _is_row_table(item):
            sections.append((name, item))
        elif isinstance(item, dict) and item:
            _walk(item, f"{name}.", scalars, sections)
        else:
            scalars[name] = item


def result_tables(result: Any) -> list[str]:
    """Markdown lines (tables separated by blank lines) for one benchmark's JSON."""
    if not isinstance(result, dict):
        return table(["value"], [[result]])
    scalars: dict[str, Any] = {}
    sections: list[tuple[str, Any]] = []
    _walk(result, "", scalars, sections)
    lines: list[str] = []
    if scalars:
        lines += table(["metric", "value"], [[k, v] for k, v in scalars.items()])
    for key, value in sections:
        lines += ["", f"**{key}**", ""]
        lines += row_table(value, key.rsplit(".", 1)[-1].rstrip("s") or "name")
    return lines
