"""espeak-ng speech synthesis to 16 kHz mono float32, for the default model's spoken training and evaluation.

Each sentence is spoken by a voice (language voice + variant), rate and pitch drawn from a fixed set; the sets
used in training and the held-out set used for the spoken evaluation share no voice variant (speaker
timbre). espeak-ng runs as a subprocess
(`--stdout` WAV at 22.05 kHz) and `core.resample.Resampler16k` resamples it, as it does live audio.
"""

from __future__ import annotations

import hashlib
import html
import io
import logging
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import av
import numpy as np

from core.resample import Resampler16k
from models.errors import ModelError

log = logging.getLogger(__name__)

ESPEAK = "espeak-ng"
MAX_TEXT_CHARS = 2000  # espeak reads anything; a runaway input would make minutes of audio


class TTSError(ModelError):
    """espeak-ng is missing or failed on an input."""


@dataclass(frozen=True, slots=True)
class Voice:
    name: str  # espeak-ng voice, optionally with a variant: "en-us+f3"
    rate_wpm: int  # words per minute (-s)
    pitch: int  # 0..99 (-p)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.rate_wpm}wpm/p{self.pitch}"


def _voices(names: Sequence[str], rates: Sequence[int], pitches: Sequence[int]) -> tuple[Voice, ...]:
    return tuple(Voice(n, r, p) for n in names for r in rates for p in pitches)


# Training and held-out voices share no variant (the speaker): held-out speakers are new. Their language voices
# are the common US/British ones: espeak-ng's regional accents (en-us-nyc, en-gb-x-gbclan, en-gb-x-gbcwmd) are
# so far from human speech that Whisper tiny.en mis-heard 35-48 % of their words vs 22-29 % here (24 test
# sentences per voice, measured once while choosing), which would rate espeak-ng's rendering rather than the
# model. bench/default_model.py reports the WER of the voices used.
TRAIN_VOICES: tuple[Voice, ...] = _voices(
    ("en-us", "en-us+f2", "en-gb+m3", "en-gb-x-rp+f4", "en-gb-scotland+m1", "en-029+f1"),
    (140, 165, 190),
    (35, 50, 65),
)
HELDOUT_VOICES: tuple[Voice, ...] = _voices(
    ("en-us+f3", "en-gb+m7", "en-gb-x-rp+f5"),
    (150, 175),
    (42, 58),
)


def voice_for(key: str, voices: Sequence[Voice], *, seed: int = 0) -> Voice:
    """A voice chosen from `voices` by a hash of the sentence key: fixed per sentence, spread over the set."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return voices[int.from_bytes(digest[:8], "big") % len(voices)]


def speakable(text: str) -> str:
    """The text as espeak-ng should read it: HTML entities decoded, whitespace collapsed, bounded length."""
    cleaned = " ".join(html.unescape(text).split())
    return cleaned[:MAX_TEXT_CHARS]


def decode_wav(data: bytes) -> np.ndarray:
    """WAV bytes → float32 [n] 16 kHz mono, resampled by the resampler live audio goes through."""
    resampler = Resampler16k()
    pieces: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(data), mode="r", format="wav") as container:
            for frame in container.decode(audio=0):
                pieces += resampler.push(frame)
            pieces += resampler.flush()
    except av.FFmpegError as exc:
        raise TTSError(f"cannot decode espeak-ng output ({exc})") from exc
    if not pieces:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(pieces).astype(np.float32, copy=False)


def synthesize(text: str, voice: Voice, *, timeout_s: float = 60.0) -> np.ndarray:
    """Speak `text` with `voice`: float32 [n] 16 kHz mono."""
    if shutil.which(ESPEAK) is None:
        raise TTSError(f"{ESPEAK} is not installed (apt-get install espeak-ng; see scripts/setup-system.sh)")
    spoken = speakable(text)
    if not spoken:
        raise TTSError("nothing to speak: the text is empty")
    command = [ESPEAK, "-v", voice.name, "-s", str(voice.rate_wpm), "-p", str(voice.pitch), "--stdout"]
    try:
        # Text on stdin, not argv: no length limit and no option injection from a sentence starting with "-".
        result = subprocess.run(command, input=spoken.encode("utf-8"), capture_output=True,
                                timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise TTSError(f"{ESPEAK} timed out after {timeout_s} s (voice {voice.label})") from exc
    if result.returncode != 0 or not result.stdout:
        raise TTSError(f"{ESPEAK} failed (exit {result.returncode}, voice {voice.label}): "
                       f"{result.stderr.decode(errors='replace').strip()[-300:]}")
    audio = decode_wav(result.stdout)
    if audio.size == 0:
        raise TTSError(f"{ESPEAK} produced no audio (voice {voice.label})")
    return audio


T = TypeVar("T")


def synthesize_many(
    jobs: Sequence[tuple[str, Voice]],
    *,
    workers: int = 2,
    then: Callable[[np.ndarray], T] | None = None,
) -> Iterator[T | np.ndarray]:
    """Synthesise (text, voice) jobs with `workers` espeak-ng processes at once, results in job order.

    `then` (e.g. a feature extractor) runs on each waveform in the worker thread, so the raw audio of the
    whole set is never held in memory at once.
    """
    def run(job: tuple[str, Voice]) -> T | np.ndarray:
        audio = synthesize(*job)
        return then(audio) if then is not None else audio

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        yield from pool.map(run, jobs)
