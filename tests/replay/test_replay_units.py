"""Pure parts of replay: frame sampling shared with the dataset builder, source naming, manifests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.file_source import call_id_candidates, call_id_for, collect_sources
from core.errors import ConfigError, MediaError
from core.mediatime import FrameSampler, sample_frames
from core.types import AudioChunk, VideoFrame
from models.dataset_builder import sample_frames as builder_sample_frames


def _frame(time_s: float) -> VideoFrame:
    return VideoFrame(time_s=time_s, rgb=np.zeros((2, 2, 3), np.uint8))


@pytest.mark.parametrize(
    ("times_s", "fps", "kept_s"),
    [
        ([0.0, 0.04, 0.08, 0.12, 0.16, 0.2, 0.24], 10.0, [0.0, 0.12, 0.2]),  # 25 fps -> one per 0.1 s slot
        ([0.0, 1 / 30, 2 / 30, 3 / 30, 4 / 30], 10.0, [0.0, 3 / 30]),  # slot = floor(t * fps), 3/30 -> slot 1
        ([0.5, 0.55, 0.99, 1.49, 1.5], 1.0, [0.5, 1.49]),  # the first frame of a slot wins
        ([2.0, 2.0, 2.05], 10.0, [2.0]),  # duplicates and frames in the same slot are skipped
    ],
)
def test_sample_frames_keeps_one_frame_per_slot(
    times_s: list[float], fps: float, kept_s: list[float]
) -> None:
    kept = [f.time_s for f in sample_frames([_frame(t) for t in times_s], fps)]  # type: ignore[union-attr]
    assert kept == pytest.approx(kept_s)
    sampler: FrameSampler[float] = FrameSampler(fps, max_pending=1)
    assert kept == [t for t in times_s if sampler.offer(t, t) and sampler.pop()]


def test_sample_frames_passes_audio_and_is_what_the_dataset_builder_uses() -> None:
    chunk = AudioChunk(0.0, np.zeros(160, np.float32))
    items = [chunk, _frame(0.0), _frame(0.02), _frame(0.1), chunk]
    out = list(sample_frames(items, 10.0))
    assert out[0] is chunk and out[-1] is chunk and len(out) == 4
    frames = [i for i in items if isinstance(i, VideoFrame)]
    assert builder_sample_frames(frames, 10.0) == tuple(i for i in out if isinstance(i, VideoFrame))


def test_call_ids_name_the_file_and_grow_parents_only_on_collision(tmp_path: Path) -> None:
    for name in ("a/x.wav", "b/x.wav", "b/y y.flac"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"\0")
    sources = collect_sources([tmp_path / "a", tmp_path / "b"])
    assert [s.stream.call_id for s in sources] == ["a:x.wav", "b:x.wav", "b:y_y.flac"]
    single = collect_sources([tmp_path / "b" / "y y.flac"], start_s=1.0, end_s=2.5)
    assert single[0].stream.key == "y_y.flac/replay" and (single[0].start_s, single[0].end_s) == (1.0, 2.5)
    twice = collect_sources([tmp_path / "a" / "x.wav", tmp_path / "a" / "x.wav"])
    assert [s.stream.participant_id for s in twice] == ["replay", "replay-2"]
    assert "b:x.wav" in call_id_candidates("data/b/x.wav") and call_id_for("data/b/x.wav") == "x.wav"


def test_manifest_csv_rows_become_sources_relative_to_the_csv(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "one.wav").write_bytes(b"\0")
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,start_s,end_s\nm/one.wav,,\nm/one.wav,1.5,3\n", encoding="utf-8")
    sources = collect_sources([manifest])
    assert [(s.path, s.start_s, s.end_s) for s in sources] == [
        (tmp_path / "m" / "one.wav", None, None), (tmp_path / "m" / "one.wav", 1.5, 3.0)]
    assert len({s.stream for s in sources}) == 2


@pytest.mark.parametrize(
    ("content", "error", "fragment"),
    [
        ("name\nx.wav\n", ConfigError, "'path' or 'file' column"),
        ("path\nmissing.wav\n", MediaError, "line 2"),
        ("path,start_s\none.wav,soon\n", ConfigError, "start_s must be a number"),
        ("path\n", ConfigError, "no rows"),
    ],
)
def test_bad_manifests_name_the_problem(tmp_path: Path, content: str, error: type, fragment: str) -> None:
    (tmp_path / "one.wav").write_bytes(b"\0")
    manifest = tmp_path / "list.csv"
    manifest.write_text(content, encoding="utf-8")
    with pytest.raises(error, match=fragment):
        collect_sources([manifest])


def test_bad_paths_and_ranges_fail_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="no such file"):
        collect_sources([tmp_path / "nope.mp4"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(MediaError, match="no media files"):
        collect_sources([tmp_path / "empty"])
    (tmp_path / "x.wav").write_bytes(b"\0")
    with pytest.raises(ConfigError, match="after --from"):
        collect_sources([tmp_path / "x.wav"], start_s=3.0, end_s=2.0)


def test_cli_refuses_bad_input_before_loading_models(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    runner = CliRunner()
    missing = runner.invoke(app, ["replay", str(tmp_path / "nope.mp4"), "--no-kafka", "--output",
                                  str(tmp_path / "out.jsonl")])
    assert isinstance(missing.exception, MediaError) and "no such file" in str(missing.exception)
    assert not (tmp_path / "out.jsonl").exists()
    nowhere = runner.invoke(app, ["replay", str(tmp_path), "--no-kafka"])
    assert nowhere.exit_code == 2 and "--output" in nowhere.output
    both = runner.invoke(app, ["evaluate", "--scores", "a.jsonl", "--topic", "t", "--labels", "l.csv",
                               "--out", str(tmp_path)])
    assert both.exit_code == 2 and "exactly one" in both.output
