"""One line per settings problem, naming the key where the user wrote it (an `AFFECTSTREAM_` variable or a key in
the YAML file); an unknown key also names the closest valid one (difflib). Secret values are never echoed.

agent/settings.py builds the settings; this module only reads the file's keys and words pydantic's errors.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from core.errors import ConfigError

KeyPath = tuple[str, ...]

ENV_PREFIX = "AFFECTSTREAM_"


def env_name(path: KeyPath) -> str:
    """The environment variable of a setting: ('kafka', 'topics', 'scores') -> AFFECTSTREAM_KAFKA__TOPICS__SCORES."""
    return ENV_PREFIX + "__".join(path).upper()


def section_of(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    """The section model a field holds, or None for a plain setting."""
    annotation = model.model_fields[name].annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def setting_paths(model: type[BaseModel], prefix: KeyPath = ()) -> Iterator[tuple[KeyPath, bool]]:
    """Every key under `model`, sections included: (path, is_section)."""
    for name in model.model_fields:
        section = section_of(model, name)
        yield (*prefix, name), section is not None
        if section is not None:
            yield from setting_paths(section, (*prefix, name))


def file_origins(config_file: Path) -> dict[KeyPath, str]:
    """Each key path the YAML file sets (sections too), labelled `FILE: dotted.key`."""
    try:
        data = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{config_file}: not valid YAML{where}: {exc.problem}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{config_file}: cannot read: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{config_file}: expected a mapping of settings sections, got a {type(data).__name__}")
    origins: dict[KeyPath, str] = {}

    def walk(mapping: Mapping[Any, Any], prefix: KeyPath) -> None:
        for key, value in mapping.items():
            path = (*prefix, str(key))
            origins[path] = f"{config_file}: {'.'.join(path)}"
            if isinstance(value, dict):
                walk(value, path)

    walk(data, ())
    return origins


def problem_lines(exc: ValidationError, model: type[BaseModel], origins: Mapping[KeyPath, str]) -> list[str]:
    """pydantic's errors, one line each: `WHERE: what is wrong[, got VALUE]`.

    `origins` labels the key paths a source set: AFFECTSTREAM_ names override file keys, as they do in Settings.
    """
    lines = []
    for error in exc.errors(include_url=False):
        path = tuple(str(part) for part in error["loc"] if not isinstance(part, int))
        items = [part + 1 for part in error["loc"] if isinstance(part, int)]
        where = origins.get(path)
        if where is not None and _is_section(model, path) and where.upper() != env_name(path):
            where = None  # a section's values may come from several sources: name the section alone
        where = where or ".".join(path) or "settings"
        if error["type"] == "extra_forbidden":
            from_env = where.upper() == env_name(path)
            lines.append(f"{where}: unknown setting{_suggestion(model, path, from_env)}")
            continue
        message = str(error["msg"]).removeprefix("Value error, ")
        item = f"item {items[0]}: " if items else ""
        value = error.get("input")
        shown = isinstance(value, str | int | float | bool) and not _is_secret(model, path)
        lines.append(f"{where}: {item}{message}" + (f", got {_short(value)}" if shown else ""))
    return lines


def _suggestion(model: type[BaseModel], path: KeyPath, from_env: bool) -> str:
    """'; did you mean X?' with the closest valid key (an environment name for a variable), or ''."""
    if from_env:  # a variable sets one setting: sections are not candidates
        candidates = {"__".join(p): env_name(p) for p, is_section in setting_paths(model) if not is_section}
        typed = "__".join(path)
    else:
        candidates = {".".join(p): ".".join(p) for p, _ in setting_paths(model)}
        typed = ".".join(path)
    match = difflib.get_close_matches(typed, candidates, n=1, cutoff=0.6)
    return f"; did you mean {candidates[match[0]]}?" if match else ""


def _is_section(model: type[BaseModel], path: KeyPath) -> bool:
    for name in path:
        section = section_of(model, name) if name in model.model_fields else None
        if section is None:
            return False
        model = section
    return bool(path)


def _is_secret(model: type[BaseModel], path: KeyPath) -> bool:
    """Whether the setting at `path` holds a secret (SecretStr, alone or in a list or union); unknown: True."""
    for depth, name in enumerate(path):
        if name not in model.model_fields:
            return True
        section = section_of(model, name)
        if section is None:
            return depth != len(path) - 1 or _mentions_secret(model.model_fields[name].annotation)
        model = section
    return True  # a whole section: its input may hold secrets


def _mentions_secret(annotation: Any) -> bool:
    return annotation is SecretStr or any(_mentions_secret(arg) for arg in get_args(annotation))


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
