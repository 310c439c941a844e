"""Media decoding: every real test file, time ranges, gaps, and files that must fail clearly."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from core.audiotime import AudioClock
from core.errors import MediaError, NoAudioError
from core.media import decode_file, probe
from core.mediatime import recorded_merger
from core.types import SAMPLE_RATE_HZ, AudioChunk, VideoFrame

DURATION_TOLERANCE_S = 0.05


def _split(items: list[AudioChunk | VideoFrame]) -> tuple[list[AudioChunk], list[VideoFrame]]:
    return [i for i in items if isinstance(i, AudioChunk)], [i for i in items if isinstance(i, VideoFrame)]


def _time_s(item: AudioChunk | VideoFrame) -> float:
    return item.start_s if isinstance(item, AudioChunk) else item.time_s


@pytest.mark.integration
def test_every_manifest_file_decodes(manifest: list[dict[str, str]], shared_data: Path) -> None:
    assert len(manifest) >= 30
    for row in manifest:
        path = shared_data / row["path"]
        expected_s = float(row["duration_s"])
        info = probe(path)
        assert info.has_video == (row["has_video"] == "1"), row["path"]
        assert info.has_audio == (row["has_audio"] == "1"), row["path"]
        assert abs(info.duration_s - expected_s) <= DURATION_TOLERANCE_S, row["path"]

        items = list(decode_file(path))
        times = [_time_s(i) for i in items]
        assert times == sorted(times), f"{row['path']}: not in media-time order"
        audio, frames = _split(items)
        for chunk in audio:
            assert chunk.samples.dtype == np.float32 and chunk.samples.ndim == 1
        for before, after in zip(audio, audio[1:], strict=False):
            assert after.start_s == pytest.approx(before.end_s, abs=1e-6), "audio media time jumps"
        decoded_s = audio[-1].end_s
        if frames:
            decoded_s = max(decoded_s, frames[-1].time_s + 1 / (info.video_fps or 25))
        assert abs(decoded_s - expected_s) <= DURATION_TOLERANCE_S, row["path"]
        assert abs(audio[-1].end_s - audio[0].start_s - expected_s) <= DURATION_TOLERANCE_S, row["path"]
        assert bool(frames) == info.has_video
        if frames:
            assert frames[0].rgb.shape == (info.height, info.width, 3) and frames[0].rgb.dtype == np.uint8
            assert abs(len(frames) - expected_s * (info.video_fps or 0)) <= 3, row["path"]


def test_time_range_is_trimmed_exactly(shared_data: Path) -> None:
    audio, frames = _split(list(decode_file(shared_data / "av/grid/grid_bbaf2n.mpg", start_s=1.0, end_s=2.5)))
    assert audio[0].start_s == pytest.approx(1.0, abs=1e-6)
    assert audio[-1].end_s == pytest.approx(2.5, abs=1e-6)
    assert sum(len(c.samples) for c in audio) == pytest.approx(1.5 * SAMPLE_RATE_HZ, abs=1)
    assert frames and all(1.0 <= f.time_s < 2.5 for f in frames)
    assert len(frames) == pytest.approx(1.5 * 25, abs=1)


def test_late_start_seeks_and_matches_a_full_decode(shared_data: Path) -> None:
    path = shared_data / "av/derived/grid_11clips_concat.mp4"
    full_audio, full_frames = _split(list(decode_file(path)))
    audio, frames = _split(list(decode_file(path, start_s=31.0)))
    assert audio[0].start_s == pytest.approx(31.0, abs=1 / SAMPLE_RATE_HZ)
    assert [f.time_s for f in frames] == [f.time_s for f in full_frames if f.time_s >= 31.0]
    np.testing.assert_array_equal(frames[3].rgb, [f for f in full_frames if f.time_s >= 31.0][3].rgb)
    part = np.concatenate([c.samples for c in audio])
    whole = np.concatenate([c.samples for c in full_audio])[31 * SAMPLE_RATE_HZ :][: len(part)]
    # Same audio at the same media time, up to the resampler's sub-sample phase (one sample off: r < 0.3).
    assert np.corrcoef(part[1600:], whole[1600:])[0, 1] > 0.95


def test_end_before_start_is_refused(shared_data: Path) -> None:
    with pytest.raises(ValueError, match="end_s"):
        list(decode_file(shared_data / "speech/jfk/jfk.flac", start_s=3.0, end_s=2.0))


def _write_audio(path: Path, segments_s: list[tuple[float, float]], codec: str = "pcm_s16le") -> None:
    """A 440 Hz tone over each (start_s, end_s) segment, with PTS gaps between segments."""
    rate = 16000 if codec == "pcm_s16le" else 44100
    container = av.open(str(path), "w")
    stream = container.add_stream(codec, rate=rate, layout="mono")
    step = 1152 if codec == "libmp3lame" else 1600
    for start_s, end_s in segments_s:
        first = round(start_s * rate)
        for k in range(first, round(end_s * rate), step):
            t = (np.arange(step) + k) / rate
            tone = np.sin(2 * np.pi * 440 * t) * 0.3
            if codec == "pcm_s16le":
                frame = av.AudioFrame.from_ndarray(
                    (tone * 32767).astype(np.int16)[None], format="s16", layout="mono"
                )
            else:
                frame = av.AudioFrame.from_ndarray(tone.astype(np.float32)[None], format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, k, Fraction(1, rate)
            for packet in stream.encode(frame):
                container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    container.close()


def test_a_gap_in_the_recording_keeps_media_time_true(tmp_path: Path) -> None:
    path = tmp_path / "gap.mka"
    _write_audio(path, [(0.0, 2.0), (4.0, 5.0)])
    audio, _ = _split(list(decode_file(path)))
    starts = [c.start_s for c in audio]
    assert audio[0].start_s == 0.0 and audio[-1].end_s == pytest.approx(5.0, abs=1e-6)
    jumps = [
        (a.end_s, b.start_s) for a, b in zip(audio, audio[1:], strict=False) if b.start_s - a.end_s > 1e-6
    ]
    assert jumps == [(pytest.approx(2.0, abs=1e-3), pytest.approx(4.0, abs=1e-3))]
    assert starts == sorted(starts)


def test_mp3_decodes(tmp_path: Path) -> None:
    path = tmp_path / "tone.mp3"
    _write_audio(path, [(0.0, 2.0)], codec="libmp3lame")
    info = probe(path)
    assert info.has_audio and not info.has_video and info.audio_codec and "mp3" in info.audio_codec
    audio, _ = _split(list(decode_file(path)))
    assert sum(len(c.samples) for c in audio) / SAMPLE_RATE_HZ == pytest.approx(2.0, abs=0.06)
    peak = max(float(np.abs(c.samples).max()) for c in audio)
    assert 0.25 < peak < 0.35  # the tone survived resampling to 16 kHz mono


def _video_only(path: Path) -> None:
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=10)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    for i in range(10):
        frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20, np.uint8), format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    container.close()


def test_video_without_audio_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "silent-film.mp4"
    _video_only(path)
    info = probe(path)
    assert info.has_video and not info.has_audio
    with pytest.raises(NoAudioError, match="no audio track") as caught:
        list(decode_file(path))
    assert str(path) in str(caught.value) and caught.value.path == str(path)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncate(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("missing.wav", lambda d, tmp: tmp / "missing.wav", "no such file"),
        ("empty.mp4", lambda d, tmp: _write(tmp / "empty.mp4", b""), "empty"),
        (
            "garbage.mp4",
            # seeded: random bytes now and then probe as a container with no stream, which is refused too
            lambda d, tmp: _write(tmp / "garbage.mp4", random.Random(20).randbytes(20000)),
            ("not a media file", "no audio or video stream"),
        ),
        (
            "truncated.mp4",
            lambda d, tmp: _truncate(d / "av/derived/grid_11clips_concat.mp4", tmp / "truncated.mp4"),
            "truncated",
        ),
        (
            "truncated.flac",
            lambda d, tmp: _truncate(d / "speech/jfk/jfk.flac", tmp / "truncated.flac"),
            "truncated",
        ),
        (
            "truncated.flv",
            lambda d, tmp: _truncate(d / "av/crema_d/1001_DFA_NEU_XX.flv", tmp / "t.flv"),
            "truncated",
        ),
        ("a directory", lambda d, tmp: tmp, "not a regular file"),
    ],
)
def test_bad_files_raise_media_error_naming_file_and_reason(
    name: str, make: object, reason: str | tuple[str, ...], shared_data: Path, tmp_path: Path
) -> None:
    path = make(shared_data, tmp_path)  # type: ignore[operator]
    with pytest.raises(MediaError) as caught:
        list(decode_file(path))
    assert caught.value.path == str(path)
    assert any(r in caught.value.reason for r in ((reason,) if isinstance(reason, str) else reason))
    assert str(path) in str(caught.value)


def test_garbage_inside_a_valid_header_is_an_error(shared_data: Path, tmp_path: Path) -> None:
    data = bytearray((shared_data / "speech/jfk/jfk.flac").read_bytes())
    data[2000:] = np.random.default_rng(0).integers(0, 256, len(data) - 2000, dtype=np.uint8).tobytes()
    path = tmp_path / "garbled.flac"
    path.write_bytes(bytes(data))
    with pytest.raises(MediaError, match="garbled.flac"):
        list(decode_file(path))


def test_probe_of_a_text_file_is_an_error_or_has_no_audio(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not media\n" * 50)
    with pytest.raises(MediaError, match="notes.txt"):
        list(decode_file(path))


def test_a_change_of_sample_rate_mid_stream_keeps_the_clock_running() -> None:
    clock = AudioClock()
    chunks: list[AudioChunk] = []
    for rate in (44100, 44100, 22050, 48000):  # 0.1 s each
        frame = av.AudioFrame.from_ndarray(
            np.full((1, rate // 10), 0.1, np.float32), format="flt", layout="mono"
        )
        frame.sample_rate = rate
        chunks += clock.push(frame)
    chunks += clock.flush()
    assert chunks[-1].end_s == pytest.approx(0.4, abs=1e-3)
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert after.start_s == pytest.approx(before.end_s)


def test_recorded_merger_orders_by_start_and_keeps_every_frame() -> None:
    merger = recorded_merger(has_video=True)
    for i in range(10):  # 1 s of audio demuxed ahead of the video
        merger.push_audio(AudioChunk(start_s=i * 0.1, samples=np.zeros(1600, np.float32)))
    assert merger.pop() is None  # less than 2 s ahead: a frame before 0.0 may still come
    for i in range(25):  # 25 fps: more than any vision_fps, all kept
        merger.push_video(i * 0.04, VideoFrame(time_s=i * 0.04, rgb=np.zeros((2, 2, 3), np.uint8)))
    merger.end_audio()
    merger.end_video()
    out = []
    while (item := merger.pop()) is not None:
        out.append(item if isinstance(item, AudioChunk) else item[1])
    assert [_time_s(i) for i in out] == sorted(_time_s(i) for i in out)
    assert isinstance(out[0], AudioChunk)  # a tie goes to the audio
    assert sum(isinstance(i, VideoFrame) for i in out) == 25 and sum(isinstance(i, AudioChunk) for i in out) == 10
