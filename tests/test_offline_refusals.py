"""Offline commands refuse bad input with one line and exit code 2, never a traceback (issue 17, items 7, 9).

Each case runs the real entry point (`cli.main.main`) in this process on files that break one thing:
decoding (not UTF-8), schema (a missing field, a JSON array for an object) or values (NaN, infinity, a
negative time, a label off the model's scale). Nothing is written where the output was asked for.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from offline_inputs import LABELS_CSV, RULES_YAML, good_scores, refuse, score_message, scores_jsonl

from cli.main import main

NOT_UTF8 = b"\xff\xfe caf\xe9"


def _write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _evaluate(tmp_path: Path, *, labels: str | bytes = LABELS_CSV, scores: str | bytes | None = None) -> list[str]:
    return [
        "evaluate", "--labels", str(_write(tmp_path / "labels.csv", labels)),
        "--scores", str(_write(tmp_path / "run.jsonl", scores if scores is not None else scores_jsonl(*good_scores()))),
        "--out", str(tmp_path / "report"),
    ]  # fmt: skip


def _with(field: str, value: object) -> str:
    """The good scores with one field of the second window's first score set to `value` (JSON text)."""
    first, second = good_scores()
    second["scores"][0][field] = "@@"
    return scores_jsonl(first, json.dumps(second).replace('"@@"', str(value)))


EVALUATE_CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    # item 7: decoding and schema
    "labels not UTF-8": (lambda t: _evaluate(t, labels=LABELS_CSV.encode() + NOT_UTF8), r"labels\.csv:4: not UTF-8"),
    "scores not UTF-8": (lambda t: _evaluate(t, scores=NOT_UTF8), r"run\.jsonl:1: not UTF-8"),
    "scores line without label_min": (
        lambda t: _evaluate(t, scores=scores_jsonl(*good_scores()).replace('"label_min": -3.0, ', "", 1)),
        r"run\.jsonl:1: .*required label_min",
    ),
    # item 9: values that can never work
    "NaN score": (lambda t: _evaluate(t, scores=_with("m", "NaN")), r"run\.jsonl:2: not JSON \(NaN is not a JSON"),
    "infinite score": (lambda t: _evaluate(t, scores=_with("m", "1e999")), r"run\.jsonl:2: not JSON .*out of range"),
    "negative time": (
        lambda t: _evaluate(t, scores=scores_jsonl(score_message(0, -1.0, 2.0, 0.5))),
        r"run\.jsonl:1: .* at start_s: minimum",
    ),
    "window ending before it starts": (
        lambda t: _evaluate(t, scores=scores_jsonl(score_message(0, 3.0, 2.0, 0.5))),
        r"call\.mp4/replay seq 0: need 0 <= start_s <= end_s",
    ),
    "label off the scale": (
        lambda t: _evaluate(t, labels=LABELS_CSV.replace("1.5", "4.5")),
        r"labels\.csv:2: label 4\.5 is outside the scale of the sentiment scores \[-3, 3\]",
    ),
    "negative label time": (lambda t: _evaluate(t, labels=LABELS_CSV.replace(",0,2,", ",-1,2,")), "need 0 <= start_s"),
}


@pytest.mark.parametrize("case", list(EVALUATE_CASES))
def test_evaluate_refuses_bad_input_in_one_line_and_writes_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, message = EVALUATE_CASES[case]
    inputs = tmp_path / "in"
    inputs.mkdir()
    line = refuse(capsys, *argv(inputs))
    assert re.search(message, line), line
    assert sorted(p.name for p in inputs.iterdir()) == ["labels.csv", "run.jsonl"]  # no report, no staging


def test_evaluate_refuses_an_out_that_is_a_file_and_keeps_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _evaluate(tmp_path)
    _write(tmp_path / "report", "my notes")
    assert "report exists and is not a directory" in refuse(capsys, *argv)
    assert (tmp_path / "report").read_text() == "my notes"


def test_evaluate_writes_the_whole_report_and_replaces_an_old_one(tmp_path: Path) -> None:
    argv = _evaluate(tmp_path)
    (tmp_path / "report").mkdir()
    _write(tmp_path / "report" / "report.json", "{}")
    _write(tmp_path / "report" / "mine.txt", "kept")
    with pytest.raises(SystemExit) as exited:
        main(["--log-level", "WARNING", *argv])
    assert exited.value.code == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["run"]["counts"]["matched_segments"] == 2
    assert (tmp_path / "report" / "mine.txt").read_text() == "kept"  # files the report does not write stay
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (RULES_YAML.encode() + b"# " + NOT_UTF8, r"rules\.yaml:4: not UTF-8"),  # item 7
        (RULES_YAML.replace("threshold: -1.0", "threshold: .nan"), r"rules\[0\] \(low\)\.threshold: .*finite"),  # 9
        (RULES_YAML.replace("threshold: -2.0", "threshold: -.inf"), r"rules\[1\] \(many_low\)\.threshold.*finite"),
        ("rules: [unclosed", "not valid YAML"),
    ],
)
def test_monitor_check_refuses_bad_rules_in_one_line(
    rules: str | bytes, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / "rules.yaml", rules)
    line = refuse(capsys, "monitor", "--rules", str(path), "--check")
    assert re.search(message, line), line


def test_monitor_check_accepts_good_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "rules.yaml", RULES_YAML)
    with pytest.raises(SystemExit) as exited:
        main(["monitor", "--rules", str(path), "--check"])
    assert exited.value.code == 0 and "2 rule(s) OK: low, many_low" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("config", "metadata", "message"),
    [
        (b"{}", b"{}", r"config\.json: SelfMMConfig lacks field\(s\): text_encoder_dir, text_out"),
        (b'{"audio_dim": 5}', b"[]", r"metadata\.json: checkpoint metadata must be a JSON object, not list"),
        (b'{"a": "' + NOT_UTF8 + b'"}', b"{}", r"checkpoint config .*config\.json:1: not UTF-8"),
    ],
)
def test_export_refuses_bad_checkpoint_files_in_one_line(
    config: bytes, metadata: bytes, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    _write(checkpoint / "config.json", config)
    _write(checkpoint / "metadata.json", metadata)
    _write(checkpoint / "model.safetensors", b"not read: the JSON files are refused first")
    line = refuse(capsys, "export", str(checkpoint), "--out", str(tmp_path / "bundle"))
    assert re.search(message, line), line
    assert not (tmp_path / "bundle").exists()
