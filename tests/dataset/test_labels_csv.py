"""The labels CSV reader: every problem is named with file, line and column."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from core.labels import LabelsError, read_labels

HEADER = "file,start_s,end_s,label,label_T,label_A,label_V,text,split\n"


def _write(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text(header + body, encoding="utf-8")
    return path


def test_reads_rows_ids_and_optional_columns(tmp_path: Path) -> None:
    body = "a/x.mp4,0,2.5,1.5,,0.5,-1,hello,train\na/x.mp4,3,,0,,,,,valid\nb.wav,,,-0.0,,,,t,test\n"
    rows = read_labels(_write(tmp_path, body), with_split=True)
    assert [r.id for r in rows] == ["a/x$_$1", "a/x$_$2", "b$_$1"]
    first, second, third = rows
    assert (first.start_s, first.end_s, first.label, first.label_t, first.label_a, first.label_v) == (
        0.0, 2.5, 1.5, None, 0.5, -1.0,
    )  # fmt: skip
    assert first.text == "hello" and second.text is None and second.end_s == math.inf and third.start_s == 0.0
    assert [r.split for r in rows] == ["train", "valid", "test"] and third.line == 4


@pytest.mark.parametrize(
    "body, message",
    [
        ("x.mp4,0,1,abc,,,,t,train\n", r"labels.csv:2: column label is not a number: 'abc'"),
        ("x.mp4,0,1,,,,,t,train\n", r":2: column label is empty"),
        ("x.mp4,2,1,0,,,,t,train\n", r":2: need 0 <= start_s < end_s"),
        ("x.mp4,0,1,0,,,,t,dev\n", r":2: split must be one of train, valid, test, got 'dev'"),
        (",0,1,0,,,,t,train\n", r":2: column file is empty"),
        ("x.mp4,0,1,0,,,,t,train\nx.mp4,0,1,nan,,,,t,train\n", r":3: column label is not finite"),
        ("", r"no rows"),
    ],
)
def test_bad_rows_are_named(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(LabelsError, match=message):
        read_labels(_write(tmp_path, body), with_split=True)


def test_missing_columns_and_file(tmp_path: Path) -> None:
    with pytest.raises(LabelsError, match="missing column"):
        read_labels(_write(tmp_path, "x.mp4,1\n", header="file,label\n"), with_split=True)
    with pytest.raises(LabelsError, match="not found"):
        read_labels(tmp_path / "nope.csv", with_split=True)


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    header = "file,start_s,end_s,label,split,clip_id\n"
    with pytest.raises(LabelsError, match="appears twice"):
        read_labels(_write(tmp_path, "x.mp4,0,1,0,train,7\nx.mp4,1,2,0,train,7\n", header=header), with_split=True)
