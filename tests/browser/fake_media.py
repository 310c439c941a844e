"""Converts a recording into the two files Chromium's fake capture devices play: a WAV and a Y4M (I420)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

WAV_RATE_HZ = 48_000


def to_wav(src: Path, dst: Path, *, duration_s: float) -> float:
    """The first `duration_s` of `src`'s audio as 16-bit mono PCM WAV; returns the seconds written."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=WAV_RATE_HZ)
    limit = round(duration_s * WAV_RATE_HZ)
    blocks: list[np.ndarray] = []
    with av.open(str(src)) as container:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                blocks.append(out.to_ndarray().reshape(-1))
            if sum(len(b) for b in blocks) >= limit:
                break
    samples = np.concatenate(blocks)[:limit]
    with av.open(str(dst), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=WAV_RATE_HZ, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = WAV_RATE_HZ
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return len(samples) / WAV_RATE_HZ


def to_y4m(src: Path, dst: Path, *, duration_s: float, width: int = 320, fps: int = 15) -> int:
    """The first `duration_s` of `src`'s video as I420 `width` wide at `fps`; returns the frames written."""
    with av.open(str(src)) as source, av.open(str(dst), "w", format="yuv4mpegpipe") as sink:
        video = source.streams.video[0]
        height = round(video.codec_context.height * width / video.codec_context.width / 2) * 2
        out = sink.add_stream("rawvideo", rate=Fraction(fps))
        out.width, out.height, out.pix_fmt = width, height, "yuv420p"
        written = 0
        for frame in source.decode(video=0):
            if frame.time is None or frame.time >= duration_s:
                break
            while written < (frame.time + 1e-6) * fps + 1 and written < duration_s * fps:
                scaled = frame.reformat(width=width, height=height, format="yuv420p")
                scaled.pts = written
                for packet in out.encode(scaled):
                    sink.mux(packet)
                written += 1
        for packet in out.encode(None):
            sink.mux(packet)
    return written
