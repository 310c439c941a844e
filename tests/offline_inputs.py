"""Offline inputs for the refusal and fuzz tests: valid ones to break one way at a time (scores JSON lines,
labels CSV, rules YAML), a truncated recording, and the check that a command refused its input in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import av
import pytest

from agent import messages
from cli.main import main

RULES_YAML = """rules:
  - {name: low, kind: mean_below, task: sentiment, windows: 3, threshold: -1.0, clear_threshold: 0.0}
  - {name: many_low, kind: count_at_least, task: sentiment, windows: 4, threshold: -2.0, min_count: 2}
"""
LABELS_CSV = "file,start_s,end_s,label\ncall.mp4,0,2,1.5\ncall.mp4,2,4,-0.5\n"


def score_message(seq: int, start_s: float, end_s: float, m: float, *, call_id: str = "call.mp4") -> dict[str, Any]:
    """An affect.scores message (schema v1, all fields) of one sentiment window of a replayed file."""
    message = {
        "schema_version": 1,
        "stream": {"call_id": call_id, "participant_id": "replay", "role": "participant",
                   "key": f"{call_id}/replay"},
        "seq": seq, "start_s": start_s, "end_s": end_s, "closed_by": "utterance", "shed": False,
        "scores": [{"task": "sentiment", "m": m, "t": None, "a": None, "v": None, "label_min": -3.0,
                    "label_max": 3.0, "model_id": "test", "model_version": "1"}],
        "quality": {"speech_ratio": 0.9, "face_visible_ratio": 1.0},
        "latencies_ms": {"speech": 10.0, "scoring": 1.0},
        "produced_at": "2024-01-01T00:00:00.000Z", "replay": True,
    }  # fmt: skip
    return message


def scores_jsonl(*lines: dict[str, Any] | str) -> str:
    """JSON lines of messages (or of text given as is)."""
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)


def good_scores() -> list[dict[str, Any]]:
    """Two valid windows, one per labelled segment of LABELS_CSV."""
    good = [score_message(0, 0.0, 2.0, 1.2), score_message(1, 2.0, 4.0, -0.4)]
    for message in good:
        messages.validate("scores", message)
    return good


def refuse(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run `affectstream ARGV` in this process: it must exit 2 with exactly one ERROR line and no traceback;
    returns that line."""
    with pytest.raises(SystemExit) as exited:
        main(["--log-level", "WARNING", *argv])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert exited.value.code == 2 and "Traceback" not in err and len(errors) == 1, err
    return errors[0]


def truncated_recording(source: Path, out: Path, keep: float = 0.6) -> Path:
    """`source` remuxed with its index up front (faststart), then cut to its first `keep` of bytes: the file
    declares its whole duration, its media ends early, as a copy interrupted mid-transfer does."""
    whole = out.with_suffix(".whole.mp4")
    with av.open(str(source)) as media, av.open(str(whole), "w", options={"movflags": "faststart"}) as copy:
        streams = {s.index: copy.add_stream_from_template(s) for s in media.streams}
        for packet in media.demux():
            if packet.dts is None:
                continue
            time_base = packet.stream.time_base
            packet.stream = streams[packet.stream.index]
            packet.time_base = time_base
            copy.mux(packet)
    data = whole.read_bytes()
    out.write_bytes(data[: int(len(data) * keep)])
    whole.unlink()
    return out
