"""The one resampler to the model's audio: decoded PyAV frames of any rate, layout and sample format → float32
mono 16 kHz.

Live ingest (`core.mediatime.AudioConverter`), recorded files (`core.mediatime.AudioClock`, used by
`core.media.decode_file`) and the default model's synthesised speech (`default_model/tts.py`) all resample
here, so the model hears the same 16 kHz audio whichever way it came in. Time is kept by the callers, never by
the resampler: a frame's PTS is cleared before it goes in, and the callers stamp what comes out by count.
"""

from __future__ import annotations

import av
import numpy as np

from core.types import SAMPLE_RATE_HZ

AudioFormat = tuple[int, str, str]  # (sample rate, sample format, channel layout) of decoded audio


def audio_format(frame: av.AudioFrame) -> AudioFormat:
    return (frame.sample_rate, frame.format.name, frame.layout.name)


class Resampler16k:
    """PyAV's resampler to float32 mono 16 kHz, drained and restarted when the input's format changes."""

    def __init__(self) -> None:
        self._resampler: av.AudioResampler | None = None
        self.input: AudioFormat | None = None  # format of the last frame pushed

    def push(self, frame: av.AudioFrame) -> list[np.ndarray]:
        """The 16 kHz samples `frame` completes (float32 [n] arrays), after the rest of the previous input if
        its format changed (concatenated recordings, a new codec)."""
        samples = self.flush() if audio_format(frame) != self.input else []
        self.input = audio_format(frame)
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE_HZ)
        frame.pts = None  # stamped by count: the resampler need not reconcile input timestamps
        return samples + _samples(self._resampler.resample(frame))

    def flush(self) -> list[np.ndarray]:
        """What the resampler still holds (end of stream, or before a jump in time); the next frame starts a
        fresh resampler."""
        resampler, self._resampler = self._resampler, None
        return _samples(resampler.resample(None)) if resampler is not None else []


def _samples(frames: list[av.AudioFrame]) -> list[np.ndarray]:
    arrays = (frame.to_ndarray().reshape(-1).astype(np.float32, copy=False) for frame in frames)
    return [samples for samples in arrays if samples.size]  # float32 [n] 16 kHz
