"""Pure cores of ingest: gap policy, RTP timeline gap filling, resampling, frame sampling, media-time merging."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from core.audiotime import AudioClock, AudioConverter, AudioTimeline, Placement
from core.gaps import LIVE_GAPS, RECORDED_GAPS, GapPolicy, Jump
from core.mediatime import FrameSampler, MediaMerger, OverloadError
from core.resample import Resampler16k
from core.types import SAMPLE_RATE_HZ, AudioChunk

# (policy, offset in samples, rate, expected judgement)
GAP_CASES = {
    "live: 2 ms at 48 kHz is jitter": (LIVE_GAPS, 96, 48_000, Jump.NONE),
    "live: just past 2 ms is a gap": (LIVE_GAPS, 97, 48_000, Jump.GAP),
    "live: a repeated packet overlaps": (LIVE_GAPS, -960, 48_000, Jump.OVERLAP),
    "live: 10 s is still a gap": (LIVE_GAPS, 480_000, 48_000, Jump.GAP),
    "live: past 10 s the clock jumped": (LIVE_GAPS, 480_001, 48_000, Jump.CLOCK_JUMP),
    "live: back past 10 s too": (LIVE_GAPS, -480_001, 48_000, Jump.CLOCK_JUMP),
    "recorded: 20 ms at 44.1 kHz is rounding": (RECORDED_GAPS, 882, 44_100, Jump.NONE),
    "recorded: just past 20 ms is a gap": (RECORDED_GAPS, 883, 44_100, Jump.GAP),
    "recorded: an hour is still a gap": (RECORDED_GAPS, 3600 * 44_100, 44_100, Jump.GAP),
    "recorded: a step back": (RECORDED_GAPS, -883, 44_100, Jump.OVERLAP),
    "a zero tolerance still absorbs one sample": (GapPolicy(tolerance_s=0.0), 1, 16_000, Jump.NONE),
    "two samples are a gap then": (GapPolicy(tolerance_s=0.0), 2, 16_000, Jump.GAP),
}


@pytest.mark.parametrize("name", GAP_CASES)
def test_gap_policy(name: str) -> None:
    policy, offset, rate, expected = GAP_CASES[name]
    assert policy.judge(offset, rate) is expected


# (frames as (timestamp, n_samples) at 48 kHz, expected placements, expected counters)
TIMELINE_CASES = {
    "contiguous": ([(0, 960), (960, 960), (1920, 960)], [(0, 0)] * 3, dict(gaps_filled=0, overlaps=0)),
    "origin is the first packet": ([(90_000, 960), (90_960, 960)], [(0, 0)] * 2, dict(gaps_filled=0)),
    "one lost packet": ([(0, 960), (1920, 960)], [(0, 0), (960, 0)], dict(gaps_filled=1, gap_samples=960)),
    "dtx pause of 400 ms": ([(0, 960), (960 + 19_200, 960)], [(0, 0), (19_200, 0)], dict(gaps_filled=1)),
    "jitter within 2 ms is absorbed": (
        [(0, 960), (1_000, 960), (1_920, 960)],
        [(0, 0)] * 3,
        dict(gaps_filled=0),
    ),
    "partial overlap is skipped": ([(0, 960), (480, 960)], [(0, 0), (0, 480)], dict(overlaps=1)),
    "duplicate packet is skipped": ([(0, 960), (0, 960)], [(0, 0), (0, 960)], dict(overlaps=1)),
    "after an overlap the timeline continues": (
        [(0, 960), (480, 960), (1440, 960)],
        [(0, 0), (0, 480), (0, 0)],
        dict(overlaps=1, gaps_filled=0),
    ),
    "clock jump beyond max gap is a discontinuity": (
        [(0, 960), (960 + 48_000 * 11, 960), (960 + 48_000 * 11 + 960, 960)],
        [(0, 0), (0, 0), (0, 0)],
        dict(discontinuities=1, gaps_filled=0),
    ),
}


@pytest.mark.parametrize("name", TIMELINE_CASES)
def test_audio_timeline(name: str) -> None:
    frames, expected, counters = TIMELINE_CASES[name]
    timeline = AudioTimeline(48_000, GapPolicy(tolerance_s=0.002, max_gap_s=10.0))
    placements = [timeline.place(ts, n) for ts, n in frames]
    assert placements == [Placement(*p) for p in expected]
    for counter, value in counters.items():
        assert getattr(timeline, counter) == value, counter


def _tone_frame(start: int, n: int, rate: int, layout: str, *, freq_hz: float = 440.0) -> av.AudioFrame:
    t = (start + np.arange(n)) / rate
    mono = (np.sin(2 * np.pi * freq_hz * t) * 10_000).astype(np.int16)
    channels = 2 if layout == "stereo" else 1
    packed = np.repeat(mono, channels).reshape(1, -1)  # s16 packed, interleaved
    frame = av.AudioFrame.from_ndarray(packed, format="s16", layout=layout)
    frame.sample_rate = rate
    frame.pts = start
    frame.time_base = Fraction(1, rate)
    return frame


def _collect(converter: AudioConverter, frames: list[av.AudioFrame]) -> np.ndarray:
    chunks: list[AudioChunk] = []
    for frame in frames:
        chunks += converter.convert(frame)
    chunks += converter.flush()
    position = 0.0
    for chunk in chunks:  # contiguous media time
        assert chunk.samples.dtype == np.float32 and chunk.samples.ndim == 1
        assert chunk.start_s == pytest.approx(position, abs=1e-9)
        position = chunk.end_s
    return np.concatenate([c.samples for c in chunks])


@pytest.mark.parametrize(
    ("rate", "layout", "frame_n"), [(48_000, "stereo", 960), (8_000, "mono", 160), (16_000, "mono", 320)]
)
def test_converter_fills_gap_with_silence_and_keeps_time(rate: int, layout: str, frame_n: int) -> None:
    # 50 frames of 20 ms, frames 20..24 lost: 100 ms of silence must appear at 0.4-0.5 s
    kept = [i for i in range(50) if not 20 <= i < 25]
    frames = [_tone_frame(i * frame_n, frame_n, rate, layout) for i in kept]
    converter = AudioConverter()
    audio = _collect(converter, frames)
    assert len(audio) == pytest.approx(SAMPLE_RATE_HZ * 1.0, abs=2)
    assert converter.gaps_filled == 1
    assert converter.gap_s == pytest.approx(0.1)
    assert converter.input_rate_hz == rate
    rms = lambda a, b: float(np.sqrt(np.mean(audio[int(a * 16_000) : int(b * 16_000)] ** 2)))  # noqa: E731
    assert rms(0.41, 0.49) < 1e-3  # the gap is silent
    assert rms(0.1, 0.39) > 0.15 and rms(0.51, 0.9) > 0.15  # the tone (amplitude 0.3) is on either side
    # the tone resumes in phase with its RTP time: compare with the ideal signal
    t = np.arange(int(0.55 * 16_000), int(0.9 * 16_000)) / 16_000
    ideal = np.sin(2 * np.pi * 440 * t) * 10_000 / 32_768
    assert np.corrcoef(audio[int(0.55 * 16_000) : int(0.9 * 16_000)], ideal)[0, 1] > 0.99


def test_converter_drops_duplicates_without_shifting_time() -> None:
    frames = [_tone_frame(i * 960, 960, 48_000, "stereo") for i in range(10)]
    frames.insert(5, _tone_frame(4 * 960, 960, 48_000, "stereo"))  # a retransmitted duplicate
    audio = _collect(AudioConverter(), frames)
    assert len(audio) == pytest.approx(16_000 * 0.2, abs=2)


@pytest.mark.parametrize(("rate", "layout"), [(48_000, "stereo"), (8_000, "mono"), (44_100, "mono")])
def test_resampler_gives_float32_mono_16k(rate: int, layout: str) -> None:
    resampler = Resampler16k()
    step = rate // 50
    pieces = [a for i in range(50) for a in resampler.push(_tone_frame(i * step, step, rate, layout))]
    pieces += resampler.flush()
    assert all(a.dtype == np.float32 and a.ndim == 1 and a.size for a in pieces)
    assert sum(a.size for a in pieces) == pytest.approx(SAMPLE_RATE_HZ, abs=2)  # 1 s in, 1 s out
    assert resampler.flush() == []


def test_resampler_drains_when_the_input_format_changes() -> None:
    resampler = Resampler16k()
    pieces = [a for i in range(25) for a in resampler.push(_tone_frame(i * 960, 960, 48_000, "stereo"))]
    assert resampler.input == (48_000, "s16", "stereo")
    pieces += [a for i in range(25) for a in resampler.push(_tone_frame(i * 160, 160, 8_000, "mono"))]
    pieces += resampler.flush()
    assert sum(a.size for a in pieces) == pytest.approx(SAMPLE_RATE_HZ, abs=4)  # 0.5 s + 0.5 s, none lost


def test_live_and_recorded_audio_are_resampled_alike() -> None:
    """Contiguous audio gives the same 16 kHz samples through live ingest and through a recording's clock."""
    live, recorded = AudioConverter(), AudioClock()
    live_chunks, recorded_chunks = [], []
    for i in range(50):
        live_chunks += live.convert(_tone_frame(i * 960, 960, 48_000, "stereo"))
        recorded_chunks += recorded.push(_tone_frame(i * 960, 960, 48_000, "stereo"))
    live_chunks += live.flush()
    recorded_chunks += recorded.flush()
    np.testing.assert_array_equal(
        np.concatenate([c.samples for c in live_chunks]), np.concatenate([c.samples for c in recorded_chunks])
    )
    assert [c.start_s for c in live_chunks] == [c.start_s for c in recorded_chunks]


# (frame times, fps, max_pending, expected kept times)
SAMPLER_CASES = {
    "25 fps to 10 fps keeps one per 100 ms slot": (
        [i / 25 for i in range(25)],
        10.0,
        100,
        [0.0, 0.12, 0.2, 0.32, 0.4, 0.52, 0.6, 0.72, 0.8, 0.92],
    ),
    "slower than fps keeps all": ([0.0, 0.25, 0.5, 0.75], 10.0, 100, [0.0, 0.25, 0.5, 0.75]),
    "same time twice keeps the first": ([0.0, 0.0, 0.1], 10.0, 100, [0.0, 0.1]),
    "30 fps to 5 fps": ([i / 30 for i in range(30)], 5.0, 100, [0.0, 0.2, 0.4, 0.6, 0.8]),
}


@pytest.mark.parametrize("name", SAMPLER_CASES)
def test_frame_sampler_rate(name: str) -> None:
    times, fps, max_pending, expected = SAMPLER_CASES[name]
    sampler: FrameSampler[int] = FrameSampler(fps, max_pending)
    for i, t in enumerate(times):
        sampler.offer(t, i)
    kept = [sampler.pop()[0] for _ in range(len(sampler))]
    assert kept == pytest.approx(expected)
    assert sampler.kept == len(expected) and sampler.skipped == len(times) - len(expected)
    assert sampler.dropped == 0


def test_frame_sampler_newest_wins_when_consumer_is_behind() -> None:
    sampler: FrameSampler[str] = FrameSampler(10.0, max_pending=3)
    for i in range(6):
        sampler.offer(i * 0.1, f"frame{i}")
    assert sampler.dropped == 3
    assert [sampler.pop()[1] for _ in range(3)] == ["frame3", "frame4", "frame5"]
    sampler.offer(0.6, "frame6")  # room again: nothing more dropped
    assert sampler.dropped == 3 and len(sampler) == 1


def _chunk(start_s: float, dur_s: float = 0.02) -> AudioChunk:
    return AudioChunk(start_s=start_s, samples=np.zeros(round(dur_s * SAMPLE_RATE_HZ), np.float32))


def _drain(merger: MediaMerger[str]) -> list[tuple[str, float]]:
    out = []
    while (item := merger.pop()) is not None:
        out.append(("a", item.end_s) if isinstance(item, AudioChunk) else ("v", item[0]))
    return out


def test_merger_orders_audio_and_video_by_media_time() -> None:
    merger: MediaMerger[str] = MediaMerger(FrameSampler(10.0, 50), has_video=True)
    for i in range(10):  # audio 0-0.2 s arrives before the video
        merger.push_audio(_chunk(i * 0.02))
    assert merger.pop() is None  # a frame before 0.02 may still come
    merger.push_video(0.0, "f0")
    merger.push_video(0.1, "f1")
    merger.push_video(0.2, "f2")
    out = _drain(merger)
    keys = [t for _, t in out]
    assert keys == sorted(keys)
    assert [k for k, _ in out].count("a") == 10 and [k for k, _ in out].count("v") == 2
    assert ("v", 0.2) not in out  # audio up to 0.2 has arrived but a chunk ending at 0.22 might precede it
    merger.end_audio()
    merger.end_video()
    assert _drain(merger) == [("v", 0.2)] and merger.done


def test_merger_releases_audio_when_video_stalls() -> None:
    merger: MediaMerger[str] = MediaMerger(FrameSampler(10.0, 50), has_video=True, max_lag_s=0.5)
    merger.push_video(0.0, "f0")
    for i in range(20):  # 0.4 s of audio: video may still come
        merger.push_audio(_chunk(i * 0.02))
    assert _drain(merger) == [("v", 0.0)]  # audio waits: a frame before 0.02 may still come
    for i in range(20, 40):  # audio reaches 0.8 s: video stalled for more than 0.5 s of media
        merger.push_audio(_chunk(i * 0.02))
    released = _drain(merger)
    assert released and all(kind == "a" for kind, _ in released)
    assert released[-1][1] == pytest.approx(0.8 - 0.5, abs=0.021)
    merger.push_video(0.1, "late")  # audio already passed 0.1: the frame is dropped, and counted
    assert merger.late_frames == 1 and len(merger.sampler) == 0


def test_merger_audio_only_and_overload() -> None:
    merger: MediaMerger[str] = MediaMerger(FrameSampler(10.0, 5), has_video=False, max_audio_s=0.1)
    for i in range(5):
        merger.push_audio(_chunk(i * 0.02))
    assert len(_drain(merger)) == 5  # nothing to wait for
    with pytest.raises(OverloadError, match="not consumed"):
        for i in range(5, 12):
            merger.push_audio(_chunk(i * 0.02))
