"""Fuzzing the offline inputs: whatever a labels CSV, a scores JSON-lines file, a rules YAML or a checkpoint's
config.json/metadata.json holds, reading it either succeeds or raises one AffectstreamError with a one-line
message (what cli/main.py turns into one log line and exit code 2), never another exception.

Each input starts from a valid one and is broken one way at a time (a field dropped, a value of any JSON type,
NaN and infinity, bytes that are not UTF-8) or replaced by arbitrary text or bytes. Bounded: well under a
minute on 2 cores, no example database written.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from offline_inputs import LABELS_CSV, RULES_YAML, good_scores

from agent.evaluate import evaluate
from agent.jsonl_sink import read_jsonl
from agent.rules import load_rules
from core.errors import AffectstreamError
from core.labels import read_labels

FUZZ = settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=12),
    st.sampled_from(["", "0", "-1", "1e999", "NaN", "call.mp4", "sentiment"]),
)  # fmt: skip
json_values = st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
junk_bytes = st.binary(max_size=40)


def accepted_or_refused(read: Callable[[], object]) -> None:
    """`read` succeeds, or refuses with an AffectstreamError of one non-empty line."""
    try:
        read()
    except AffectstreamError as exc:
        message = str(exc)
        assert message and "\n" not in message and "\r" not in message, repr(message)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """A directory reused by every example (hypothesis runs many examples per test function)."""
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory)


def _file(scratch: Path, name: str, content: bytes) -> Path:
    path = scratch / name
    path.write_bytes(content)
    return path


@st.composite
def broken(draw: st.DrawFn, valid: dict[str, Any], values: st.SearchStrategy[Any] = json_values) -> Any:
    """`valid` (an object, maybe with nested objects and lists of them) with one field dropped, replaced or
    added, or something else entirely."""
    choice = draw(st.sampled_from(["drop", "replace", "add", "whole"]))
    if choice == "whole":
        return draw(values)
    data = json.loads(json.dumps(valid))
    target = data
    while True:  # walk down to a random object
        nested = [k for k, v in target.items() if isinstance(v, dict) or (isinstance(v, list) and v
                                                                           and isinstance(v[0], dict))]
        if not nested or draw(st.booleans()):
            break
        key = draw(st.sampled_from(nested))
        target = target[key] if isinstance(target[key], dict) else target[key][0]
    if choice == "add" or not target:
        target[draw(st.text(max_size=8))] = draw(values)
    elif choice == "drop":
        del target[draw(st.sampled_from(sorted(target)))]
    else:
        target[draw(st.sampled_from(sorted(target)))] = draw(values)
    return data


def _with_junk(draw: st.DrawFn, text: bytes) -> bytes:
    """Sometimes bytes that are not UTF-8 (or control characters) spliced into `text`."""
    if not draw(st.booleans()):
        return text
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\x00", b"\r", b'"', b"\xe9t\xe9"])) + text[at:]


# -- labels CSV -------------------------------------------------------------------------------------------

COLUMNS = ["file", "start_s", "end_s", "label", "label_T", "label_A", "label_V", "text", "split", "clip_id"]
cells = st.one_of(st.sampled_from(["", "0", "2", "-1", "1.5", "4.5", "nan", "inf", "1e400", "call.mp4", "test",
                                   '"a,b"', '"open']), st.text(max_size=6))  # fmt: skip


@st.composite
def labels_csv(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(junk_bytes)
    header = draw(st.sampled_from([COLUMNS[:4], COLUMNS[:7], COLUMNS]))
    if draw(st.integers(0, 3)) == 0:
        header = draw(st.lists(st.sampled_from(COLUMNS), max_size=10))
    good = {"file": "call.mp4", "start_s": "0", "end_s": "2", "label": "1.5", "label_T": "1", "split": "test"}
    rows = []
    for _ in range(draw(st.integers(0, 3))):  # good rows with a cell or two changed, now and then ragged
        row = [good.get(column, "") for column in header]
        for _ in range(draw(st.integers(0, 2))):
            if row:
                row[draw(st.integers(0, len(row) - 1))] = draw(cells)
        rows.append(row + draw(st.lists(cells, max_size=1)))
    text = "\n".join(",".join(row) for row in [header, *rows]) + draw(st.sampled_from(["", "\n", "\r\n"]))
    return _with_junk(draw, text.encode())


@FUZZ
@given(content=labels_csv())
def test_labels_csv(scratch: Path, content: bytes) -> None:
    path = _file(scratch, "labels.csv", content)

    def read_and_evaluate() -> None:
        segments = read_labels(path)
        evaluate(good_scores(), segments, labels_source=str(path))  # the labels meet the scores' scale

    accepted_or_refused(read_and_evaluate)


# -- scores JSON lines ------------------------------------------------------------------------------------


@st.composite
def scores_jsonl(draw: st.DrawFn) -> bytes:
    lines = []
    for message in good_scores():
        kind = draw(st.sampled_from(["valid", "broken", "broken", "text"]))
        if kind == "valid":
            lines.append(json.dumps(message))
        elif kind == "broken":
            lines.append(json.dumps(draw(broken(message))))  # NaN and Infinity are written as such
        else:
            lines.append(draw(st.text(max_size=30)).replace("\n", " "))
    return _with_junk(draw, ("\n".join(lines) + "\n").encode())


@FUZZ
@given(content=scores_jsonl())
def test_scores_jsonl(scratch: Path, content: bytes) -> None:
    path = _file(scratch, "run.jsonl", content)
    labels = read_labels(_file(scratch, "labels.csv", LABELS_CSV.encode()))
    accepted_or_refused(lambda: evaluate(read_jsonl(path, "scores"), labels, labels_source="labels.csv"))


# -- rules YAML -------------------------------------------------------------------------------------------

GOOD_RULES = yaml.safe_load(RULES_YAML)
rule_values = st.one_of(json_values, st.sampled_from([float("nan"), float("inf"), -1, 0, 1001, "mean_above"]))


@st.composite
def rules_yaml(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.one_of(junk_bytes, st.text(max_size=40).map(str.encode)))
    data = draw(broken(GOOD_RULES, rule_values))
    return _with_junk(draw, yaml.safe_dump(data, allow_unicode=True).encode())


@FUZZ
@given(content=rules_yaml())
def test_rules_yaml(scratch: Path, content: bytes) -> None:
    path = _file(scratch, "rules.yaml", content)
    accepted_or_refused(lambda: load_rules(path))


# -- a checkpoint's config.json and metadata.json (export) ------------------------------------------------

# Layer sizes stay small: a model of any valid shape is built before its weights are checked.
config_values = st.one_of(json_values, st.integers(-3, 300), st.floats(-2.0, 2.0), st.sampled_from(["mosei", "x"]))


@pytest.fixture(scope="module")
def checkpoint(scratch: Path) -> Path:
    """A real checkpoint of a tiny Self-MM (weights, encoder files, config, metadata)."""
    from tiny_selfmm import make_tiny_encoder, make_tiny_model, tiny_feature_spec

    from models.checkpoint import save_checkpoint

    model = make_tiny_model(make_tiny_encoder(scratch / "encoder"))
    metadata = {"informed_modalities": ["text", "audio"], "feature_spec": tiny_feature_spec(), "model_id": "t"}
    return save_checkpoint(model, model.config, scratch / "checkpoint", metadata)


@st.composite
def checkpoint_json(draw: st.DrawFn, valid: dict[str, Any]) -> bytes:
    kind = draw(st.sampled_from(["valid", "broken", "broken", "broken", "junk"]))
    if kind == "junk":
        return draw(st.one_of(junk_bytes, st.text(max_size=30).map(str.encode)))
    data = valid if kind == "valid" else draw(broken(valid, config_values))
    return _with_junk(draw, json.dumps(data).encode())


@settings(FUZZ, max_examples=40)
@given(data=st.data())
def test_checkpoint_config_and_metadata(checkpoint: Path, scratch: Path, data: st.DataObject) -> None:
    from exporters.checkpoints import checkpoint_export

    trial = scratch / "trial"
    if not trial.exists():
        trial.mkdir()
        (trial / "model.safetensors").symlink_to(checkpoint / "model.safetensors")
        (trial / "text_encoder").symlink_to(checkpoint / "text_encoder", target_is_directory=True)
    for name in ("config.json", "metadata.json"):
        valid = json.loads((checkpoint / name).read_text())
        (trial / name).write_bytes(data.draw(checkpoint_json(valid), label=name))
    accepted_or_refused(lambda: checkpoint_export(trial, out_dir=scratch / "bundle"))
