"""`affectstream replay` output files (issue 17, item 8): replaced only by a complete replay, never touched by
one refused before it starts; what a replay cut short wrote is kept as `.incomplete`, and its summary counts
the windows it did score."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from offline_inputs import refuse, truncated_recording

from agent.replay import run_replay
from agent.settings import Settings

CREMA = Path("av/derived/crema_d_1001_DFA_6emotions.mp4")


def test_an_unreadable_recording_is_refused_before_the_output_is_touched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "call.mp4"
    bad.write_bytes(b"not a recording")
    output = tmp_path / "scores.jsonl"
    output.write_text("previous run\n", encoding="utf-8")
    line = refuse(capsys, "replay", str(bad), "--no-kafka", "--output", str(output), "--no-progress")
    assert "call.mp4" in line and "not a media file" in line
    assert output.read_text(encoding="utf-8") == "previous run\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["call.mp4", "scores.jsonl"]


@pytest.mark.integration
async def test_a_recording_cut_short_is_counted_and_its_output_kept_as_incomplete(
    replay_settings: Settings, shared_data: Path, tmp_path: Path
) -> None:
    recording = truncated_recording(shared_data / CREMA, tmp_path / "cut.mp4")
    output, transcripts = tmp_path / "scores.jsonl", tmp_path / "transcripts.jsonl"
    output.write_text("previous run\n", encoding="utf-8")
    summary = await run_replay([recording], replay_settings, output=output, transcripts=transcripts,
                               publish=False, progress=False)  # fmt: skip
    (result,) = summary.files
    assert not summary.ok and result.error is not None and "truncated" in result.error
    lines = (tmp_path / "scores.jsonl.incomplete").read_text(encoding="utf-8").splitlines()
    assert result.windows == result.scored == len(lines) >= 2  # the summary counts what was written
    assert [json.loads(line)["seq"] for line in lines] == list(range(result.windows))
    assert f"{result.windows:>8} {result.scored:>7}" in summary.table()
    assert output.read_text(encoding="utf-8") == "previous run\n"  # never mistaken for a complete replay
    assert not transcripts.exists() and (tmp_path / "transcripts.jsonl.incomplete").is_file()
