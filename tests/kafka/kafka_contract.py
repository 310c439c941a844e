"""The compatibility fingerprint of a message schema: every required field's path and type."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SNAPSHOT = Path(__file__).with_name("contract_snapshot.json")


def _type_of(node: dict[str, Any], root: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if "$ref" in node:
        name = node["$ref"].split("/")[-1]
        node = root["$defs"][name]
    if "const" in node:
        return f"const:{json.dumps(node['const'])}", node
    if "enum" in node:
        return "enum:" + ",".join(sorted(json.dumps(v) for v in node["enum"])), node
    kind = node.get("type", "any")
    return ("|".join(sorted(kind)) if isinstance(kind, list) else kind), node


def required_fields(
    schema: dict[str, Any], root: dict[str, Any] | None = None, prefix: str = ""
) -> dict[str, str]:
    """{"stream.call_id": "string", "scores[].m": "number", ...} for every required field, recursively."""
    root = root or schema
    out: dict[str, str] = {}
    for name in schema.get("required", []):
        path = f"{prefix}{name}"
        kind, node = _type_of(schema["properties"][name], root)
        out[path] = kind
        if kind == "object" and "properties" in node:
            out.update(required_fields(node, root, path + "."))
        if kind == "array" and "items" in node:
            item_kind, item = _type_of(node["items"], root)
            out[path + "[]"] = item_kind
            if item_kind == "object":
                out.update(required_fields(item, root, path + "[]."))
    return out


def load_snapshot() -> dict[str, dict[str, dict[str, str]]]:
    return json.loads(SNAPSHOT.read_text("utf-8"))
