"""Windower: table tests on synthetic streams (energy-based fake VAD), then real media with Silero VAD."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from agent.settings import WindowSettings
from agent.vad import SILERO_FRAME_SAMPLES, SileroVad, VoiceActivityDetector
from agent.windows import CALL_CHUNK_SAMPLES, Windower, audio_windows, windows_of
from core.media import decode_file
from core.mediatime import sample_frames
from core.types import SAMPLE_RATE_HZ, AudioChunk, StreamId, VideoFrame, Window

STREAM = StreamId("call-1", "patient-1", "patient")
RATE = SAMPLE_RATE_HZ
FRAME_S = SILERO_FRAME_SAMPLES / RATE
TOL_S = 2 * FRAME_S  # boundaries fall on VAD frames


class EnergyVad(VoiceActivityDetector):
    """Test double: a frame is speech (1.0) when its RMS exceeds a level, else silence (0.0)."""

    def __init__(self, level: float = 0.01) -> None:
        super().__init__(SILERO_FRAME_SAMPLES)
        self.level = level

    def _score(self, frames: np.ndarray) -> np.ndarray:
        return (np.sqrt(np.mean(frames**2, axis=1)) > self.level).astype(np.float32)


def settings(**overrides: object) -> WindowSettings:
    base: dict[str, object] = {
        "mode": "utterance",
        "min_silence_s": 0.5,
        "min_length_s": 1.0,
        "max_length_s": 4.0,
        "speech_pad_s": 0.2,
    }
    base.update(overrides)
    return WindowSettings(**base)  # type: ignore[arg-type]


def signal(segments: list[tuple[str, float]]) -> np.ndarray:
    """Concatenated segments: ("speech", seconds) is a loud tone, ("silence", seconds) is zeros."""
    rng = np.random.default_rng(0)
    parts = []
    for kind, seconds in segments:
        n = round(seconds * RATE)
        if kind == "speech":
            t = np.arange(n) / RATE
            tone = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(n)
            parts.append(tone.astype(np.float32))
        else:
            parts.append(np.zeros(n, dtype=np.float32))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def voiced_regions(segments: list[tuple[str, float]], origin_s: float = 0.0) -> list[tuple[float, float]]:
    regions, t = [], origin_s
    for kind, seconds in segments:
        if kind == "speech":
            regions.append((t, t + seconds))
        t += seconds
    return regions


def chunks(samples: np.ndarray, size: int, start_s: float = 0.0) -> list[AudioChunk]:
    return [AudioChunk(start_s=start_s + i / RATE, samples=samples[i : i + size]) for i in range(0, len(samples), size)]


def cut(segments: list[tuple[str, float]], chunk: int = 320, **overrides: object) -> list[Window]:
    return windows_of(Windower(STREAM, settings(**overrides), EnergyVad()), chunks(signal(segments), chunk))


def assert_well_formed(windows: list[Window]) -> None:
    assert [w.seq for w in windows] == list(range(len(windows)))
    for w in windows:
        assert w.stream == STREAM
        assert w.end_s > w.start_s
        assert len(w.audio) == round((w.end_s - w.start_s) * RATE)
        assert w.audio.dtype == np.float32
        assert all(w.start_s <= f.time_s < w.end_s for f in w.frames)
    for a, b in zip(windows, windows[1:], strict=False):
        assert a.end_s <= b.start_s + 1e-9, "windows overlap or are out of order"


def assert_covers(windows: list[Window], regions: list[tuple[float, float]]) -> None:
    for start, end in regions:
        t = start
        while t < end - 1e-6:
            assert any(w.start_s - 1e-9 <= t < w.end_s for w in windows), f"voiced time {t:.3f} s not covered"
            t += FRAME_S / 2


@dataclass(frozen=True)
class Case:
    name: str
    segments: list[tuple[str, float]]
    closed_by: list[str]
    overrides: dict[str, object] | None = None


CASES = [
    Case("silence only", [("silence", 5.0)], []),
    Case("empty stream", [], []),
    Case("very short stream of speech", [("speech", 0.1)], ["stream_end"]),
    Case("very short stream of silence", [("silence", 0.05)], []),
    Case("ends mid-utterance", [("silence", 1.0), ("speech", 2.0)], ["stream_end"]),
    Case("one utterance then silence", [("silence", 1.0), ("speech", 2.0), ("silence", 2.0)], ["utterance"]),
    Case(
        "two utterances",
        [("speech", 1.5), ("silence", 1.0), ("speech", 1.5), ("silence", 1.0)],
        ["utterance", "utterance"],
    ),
    Case(
        "pause shorter than min_silence keeps one window",
        [("speech", 1.0), ("silence", 0.3), ("speech", 1.0), ("silence", 1.0)],
        ["utterance"],
    ),
    Case("monologue hits max_length", [("speech", 10.0)], ["max_length", "max_length", "stream_end"]),
    Case(
        "short bit merges with speech that follows",
        [("speech", 0.2), ("silence", 0.6), ("speech", 1.5), ("silence", 1.0)],
        ["utterance"],
    ),
    Case("short bit alone is padded to min_length", [("speech", 0.2), ("silence", 3.0)], ["utterance"]),
    Case(
        "min_length zero closes short bits",
        [("speech", 0.2), ("silence", 1.0), ("speech", 0.2), ("silence", 1.0)],
        ["utterance", "utterance"],
        {"min_length_s": 0.0},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_utterance_table(case: Case) -> None:
    windows = cut(case.segments, **(case.overrides or {}))
    assert [w.closed_by for w in windows] == case.closed_by
    assert_well_formed(windows)
    assert_covers(windows, voiced_regions(case.segments))
    s = settings(**(case.overrides or {}))
    for w in windows:
        assert w.duration_s <= s.max_length_s + 1e-9
        if w.closed_by == "utterance":
            assert w.duration_s >= s.min_length_s - 1e-9


def test_utterance_window_bounds_follow_speech_with_padding() -> None:
    windows = cut([("silence", 1.0), ("speech", 2.0), ("silence", 2.0)])
    (window,) = windows
    assert window.start_s == pytest.approx(1.0 - 0.2, abs=TOL_S)
    assert window.end_s == pytest.approx(3.0 + 0.2, abs=TOL_S)


def test_short_bit_alone_window_is_min_length() -> None:
    (window,) = cut([("silence", 0.5), ("speech", 0.2), ("silence", 3.0)])
    assert window.duration_s == pytest.approx(1.0, abs=1e-6)


def test_max_length_windows_are_contiguous() -> None:
    windows = cut([("speech", 10.0)])
    for a, b in zip(windows, windows[1:], strict=False):
        assert a.end_s == pytest.approx(b.start_s)
    assert windows[0].start_s == 0.0 and windows[-1].end_s == pytest.approx(10.0)


def test_max_length_cuts_at_the_quietest_frame() -> None:
    # A 0.3 s dip (shorter than min_silence) in the second half of the window is where it is cut.
    windows = cut([("speech", 2.6), ("silence", 0.3), ("speech", 3.0)])
    assert windows[0].closed_by == "max_length"
    assert 2.6 - TOL_S <= windows[0].end_s <= 2.9 + TOL_S


@pytest.mark.parametrize("chunk", [37, 512, 4000, 16000])
def test_chunk_size_does_not_change_windows(chunk: int) -> None:
    segments = [("silence", 0.7), ("speech", 1.3), ("silence", 0.9), ("speech", 5.5), ("silence", 0.6)]
    reference = [(w.start_s, w.end_s, w.closed_by) for w in cut(segments, chunk=320)]
    got = [(w.start_s, w.end_s, w.closed_by) for w in cut(segments, chunk=chunk)]
    assert got == reference


def test_audio_windows_are_those_of_a_calls_packets() -> None:
    segments = [("silence", 0.7), ("speech", 1.3), ("silence", 0.9), ("speech", 5.5), ("silence", 0.6)]
    samples = signal(segments)
    got = audio_windows(samples, STREAM, settings(), EnergyVad())
    expected = cut(segments, chunk=CALL_CHUNK_SAMPLES)
    assert [(w.start_s, w.end_s, w.closed_by) for w in got] == [(w.start_s, w.end_s, w.closed_by) for w in expected]
    assert len(got) == 3 and all(np.array_equal(a.audio, b.audio) for a, b in zip(got, expected, strict=True))


def test_gap_is_filled_with_silence_and_media_time_stays_true() -> None:
    speech = signal([("speech", 1.0)])
    windower = Windower(STREAM, settings(), EnergyVad())
    items = [*chunks(speech, 400, start_s=10.0), *chunks(speech, 400, start_s=13.0)]  # 2 s missing
    windows = windows_of(windower, items)
    assert windower.gap_samples == 2 * RATE
    assert [w.closed_by for w in windows] == ["utterance", "stream_end"]
    assert windows[0].start_s == pytest.approx(10.0)
    assert windows[1].start_s == pytest.approx(13.0 - 0.2, abs=TOL_S)
    assert windows[1].end_s == pytest.approx(14.0)
    gap_audio = windows[0].audio[RATE:]  # after the first second of speech: the filled gap
    assert np.all(gap_audio == 0.0)


def test_overlapping_chunk_is_trimmed() -> None:
    speech = signal([("speech", 1.5)])
    items = [AudioChunk(0.0, speech[:RATE]), AudioChunk(0.5, speech[RATE // 2 :])]  # 0.5 s overlap
    (window,) = windows_of(Windower(STREAM, settings(), EnergyVad()), items)
    assert window.end_s == pytest.approx(1.5)
    np.testing.assert_array_equal(window.audio, speech)


def test_stream_origin_is_kept() -> None:
    windower = Windower(STREAM, settings(), EnergyVad())
    (window,) = windows_of(windower, chunks(signal([("silence", 1.0), ("speech", 1.5)]), 500, start_s=100.0))
    assert window.start_s == pytest.approx(100.8, abs=TOL_S)
    assert window.end_s == pytest.approx(102.5)


def test_frames_go_to_the_window_holding_their_time() -> None:
    segments = [("silence", 1.0), ("speech", 2.0), ("silence", 1.0), ("speech", 2.0), ("silence", 1.0)]
    audio = signal(segments)
    frames = [VideoFrame(i / 10, np.full((2, 2, 3), i % 256, np.uint8)) for i in range(70)]
    items: list[AudioChunk | VideoFrame] = []
    audio_chunks = chunks(audio, 1600)  # 0.1 s chunks, frames interleaved in media-time order
    for chunk, frame in zip(audio_chunks, frames, strict=True):
        items += [chunk, frame]
    windower = Windower(STREAM, settings(), EnergyVad())
    windows = windows_of(windower, items)
    assert len(windows) == 2
    assert_well_formed(windows)
    for w in windows:
        expected = [f.time_s for f in frames if w.start_s <= f.time_s < w.end_s]
        assert [f.time_s for f in w.frames] == expected
    assert windower.late_frames == 0


def test_frames_a_little_behind_the_audio_still_join_their_window() -> None:
    audio = signal([("speech", 4.0)])  # max_length cut at 4.0 s, unknown until the audio gets there
    items: list[AudioChunk | VideoFrame] = [*chunks(audio, 1600)]
    items += [VideoFrame(3.9, np.zeros((2, 2, 3), np.uint8))]  # arrives after all audio (0.1 s late)
    windows = windows_of(Windower(STREAM, settings(max_length_s=3.95), EnergyVad()), items)
    assert any(f.time_s == 3.9 for w in windows for f in w.frames)


def test_buffers_stay_bounded_on_long_silence_and_long_speech() -> None:
    windower = Windower(STREAM, settings(), EnergyVad())
    frames_per_chunk = [VideoFrame(i * 0.1, np.zeros((2, 2, 3), np.uint8)) for i in range(600)]
    silence = chunks(signal([("silence", 60.0)]), 1600)
    for chunk, frame in zip(silence, frames_per_chunk, strict=True):
        windower.push(chunk)
        windower.push(frame)
        assert windower.buffered_s < 1.0
        assert windower.buffered_frames < 20
    speech = chunks(signal([("speech", 60.0)]), 1600, start_s=60.0)
    peak = 0.0
    for chunk in speech:
        windower.push(chunk)
        peak = max(peak, windower.buffered_s)
    assert peak <= 4.0 + 0.25 + 0.2 + 0.1


def test_push_after_flush_is_a_bug() -> None:
    windower = Windower(STREAM, settings(), EnergyVad())
    windower.flush()
    with pytest.raises(RuntimeError):
        windower.push(AudioChunk(0.0, np.zeros(10, np.float32)))


def test_utterance_mode_needs_a_vad() -> None:
    with pytest.raises(ValueError, match="voice activity"):
        Windower(STREAM, settings(), None)


def test_one_shared_vad_serves_many_streams() -> None:
    shared = EnergyVad()
    a = Windower(STREAM, settings(), shared)
    b = Windower(StreamId("call-1", "clinician-1"), settings(), shared)
    speech, silence = signal([("speech", 2.0), ("silence", 1.0)]), signal([("silence", 3.0)])
    out_a, out_b = [], []
    for ca, cb in zip(chunks(speech, 700), chunks(silence, 700), strict=True):
        out_a += a.push(ca)
        out_b += b.push(cb)
    assert len(out_a + a.flush()) == 1 and out_b + b.flush() == []


def test_a_reconnect_restarts_seq_under_its_own_session_id() -> None:
    """The identity a consumer deduplicates by, (key, session, seq), differs between two sessions of one
    participant that send the same audio, though key and seqs are the same."""
    audio = signal([("speech", 1.5), ("silence", 1.0), ("speech", 1.5), ("silence", 1.0)])
    sessions = [StreamId("call-1", "patient-1", "patient", session_id=sid) for sid in ("a1b2", "c3d4")]
    first, second = (windows_of(Windower(stream, settings(), EnergyVad()), chunks(audio, 800)) for stream in sessions)
    assert [w.seq for w in first] == [w.seq for w in second] == [0, 1]
    assert {w.stream.key for w in first + second} == {"call-1/patient-1"}
    identities = {(w.stream.key, w.stream.session_id, w.seq) for w in first + second}
    assert len(identities) == 4


# -- fixed mode ----------------------------------------------------------------------------------------------
def fixed(seconds: float, length_s: float, hop_s: float, chunk: int = 777) -> list[Window]:
    s = WindowSettings(mode="fixed", length_s=length_s, hop_s=hop_s)
    return windows_of(Windower(STREAM, s), chunks(signal([("speech", seconds)]), chunk))


def test_fixed_mode_tiles_media_time_when_hop_equals_length() -> None:
    windows = fixed(12.3, 5.0, 5.0)
    assert [w.closed_by for w in windows] == ["hop", "hop", "stream_end"]
    assert [w.start_s for w in windows] == pytest.approx([0, 5, 10])
    assert [w.end_s for w in windows] == pytest.approx([5, 10, 12.3])
    assert sum(len(w.audio) for w in windows) == round(12.3 * RATE)
    assert_well_formed(windows)


def test_fixed_mode_makes_windows_of_silence_too() -> None:
    s = WindowSettings(mode="fixed", length_s=2.0, hop_s=2.0)
    windows = windows_of(Windower(STREAM, s), chunks(signal([("silence", 4.0)]), 500))
    assert [w.closed_by for w in windows] == ["hop", "hop"]


def test_fixed_mode_overlapping_hops() -> None:
    windows = fixed(8.0, 4.0, 2.0)
    assert [(w.start_s, w.end_s, w.closed_by) for w in windows] == [
        (0.0, 4.0, "hop"),
        (2.0, 6.0, "hop"),
        (4.0, 8.0, "hop"),
        (6.0, 8.0, "stream_end"),
    ]
    assert all(len(w.audio) == round(w.duration_s * RATE) for w in windows)


def test_fixed_mode_hop_longer_than_length_skips_media() -> None:
    windows = fixed(7.0, 2.0, 3.0)
    assert [(w.start_s, w.end_s) for w in windows] == [(0.0, 2.0), (3.0, 5.0), (6.0, 7.0)]


def test_fixed_mode_stream_ending_on_a_boundary_adds_no_empty_window() -> None:
    windows = fixed(10.0, 5.0, 5.0)
    assert [w.closed_by for w in windows] == ["hop", "hop"]


# -- real media, real VAD ------------------------------------------------------------------------------------
def _window_file(path: Path) -> tuple[list[Window], list[AudioChunk], list[VideoFrame]]:
    items = list(decode_file(path))
    windower = Windower(STREAM, WindowSettings(), SileroVad())
    windows = windows_of(windower, items)
    audio = [i for i in items if isinstance(i, AudioChunk)]
    frames = [i for i in items if isinstance(i, VideoFrame)]
    return windows, audio, frames


def _silero_voiced_regions(audio: list[AudioChunk], threshold: float) -> list[tuple[float, float]]:
    samples = np.concatenate([c.samples for c in audio])
    probs = SileroVad().speech_probabilities(samples)  # one call over the whole file
    origin = audio[0].start_s
    return [(origin + i * FRAME_S, origin + (i + 1) * FRAME_S) for i, p in enumerate(probs) if p >= threshold]


@pytest.mark.integration
def test_real_media_windows_cover_voiced_regions(manifest: list[dict[str, str]], shared_data: Path) -> None:
    prefixes = ("av/grid/", "av/crema_d/", "av/derived/", "speech/")
    rows = [r for r in manifest if r["path"].startswith(prefixes)]
    assert len(rows) >= 30
    for row in rows:
        windows, audio, frames = _window_file(shared_data / row["path"])
        assert windows, row["path"]
        assert_well_formed(windows)
        assert_covers(windows, _silero_voiced_regions(audio, WindowSettings().vad_threshold))
        if row["has_video"] == "1":
            in_windows = sum(len(w.frames) for w in windows)
            inside = [f for f in frames if any(w.start_s <= f.time_s < w.end_s for w in windows)]
            assert in_windows == len(inside) > 0, row["path"]


@pytest.mark.integration
def test_grid_word_alignment_is_inside_one_window(shared_data: Path) -> None:
    windows, _, _ = _window_file(shared_data / "av/grid/grid_id2_swwp2s.mpg")
    # Words "set … soon" span 0.49-2.21 s (GRID .align file): one utterance, one window.
    assert len(windows) == 1
    assert windows[0].start_s <= 0.49 and windows[0].end_s >= 2.21


@pytest.mark.integration
def test_grid_concat_gives_one_window_per_sentence(shared_data: Path) -> None:
    windows, _, _ = _window_file(shared_data / "av/derived/grid_11clips_concat.mp4")
    assert len(windows) == 11
    for k, w in enumerate(windows):  # clip k covers [3k, 3k+3) s
        assert 3 * k <= w.start_s and w.end_s <= 3 * k + 3


@pytest.mark.integration
def test_joined_live_chunks_give_the_same_windows_with_silero(shared_data: Path) -> None:
    """Live ingest hands audio that is already waiting on as one chunk (agent/sessions.py, up to 0.5 s): the
    windows, their audio and their frames are those of the same stream in 20 ms chunks."""
    items = list(sample_frames(decode_file(shared_data / "av/derived/crema_d_1001_DFA_6emotions.mp4"), 10.0))
    audio = np.concatenate([i.samples for i in items if isinstance(i, AudioChunk)])
    origin = next(i.start_s for i in items if isinstance(i, AudioChunk))
    frames = [i for i in items if isinstance(i, VideoFrame)]
    small = chunks(audio, 320, start_s=origin)

    def interleave(audio_chunks: list[AudioChunk]) -> list[AudioChunk | VideoFrame]:
        out: list[AudioChunk | VideoFrame] = []
        pending = list(frames)
        for chunk in audio_chunks:  # a frame goes before the chunk that passes its time, as live
            while pending and pending[0].time_s <= chunk.end_s:
                out.append(pending.pop(0))
            out.append(chunk)
        return [*out, *pending]

    frame_times = [f.time_s for f in frames]
    joined: list[AudioChunk] = []
    run_: list[AudioChunk] = []
    for chunk in small:  # join runs of chunks that no frame falls between, up to 0.5 s
        if run_ and (
            any(run_[-1].end_s < t <= chunk.end_s for t in frame_times) or sum(len(c.samples) for c in run_) >= 8000
        ):
            joined.append(AudioChunk(run_[0].start_s, np.concatenate([c.samples for c in run_])))
            run_ = []
        run_.append(chunk)
    joined.append(AudioChunk(run_[0].start_s, np.concatenate([c.samples for c in run_])))
    assert len(joined) < len(small) / 3

    def key(windows: list[Window]) -> list[tuple[float, float, str, list[float]]]:
        return [(w.start_s, w.end_s, w.closed_by, [f.time_s for f in w.frames]) for w in windows]

    reference = windows_of(Windower(STREAM, WindowSettings(), SileroVad()), interleave(small))
    got = windows_of(Windower(STREAM, WindowSettings(), SileroVad()), interleave(joined))
    assert len(reference) >= 4 and key(got) == key(reference)
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(got, reference, strict=True))
