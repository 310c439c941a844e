"""The call codec round trip (core.call_codec): what a live call's Opus VOIP does to a recording's audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.audio_columns import AUDIO_COLUMNS, VOICED_COLUMN
from core.call_codec import call_codec_round_trip
from core.features import FeatureExtractor
from core.media import decode_audio
from default_model.dataset import transcript_of, window_of

GRID = Path("av") / "derived" / "grid_11clips_concat.mp4"  # 33 s, 11 GRID sentences with hum in the pauses
ENERGY = AUDIO_COLUMNS.index("log_energy_b")
SPEECH_B = -3.0  # frames louder than -30 dBFS: speech, which the codec must keep


@pytest.fixture(scope="module")
def grid_audio(shared_data: Path) -> np.ndarray:
    return decode_audio(shared_data / GRID)


def test_the_round_trip_keeps_length_and_alignment(grid_audio: np.ndarray) -> None:
    audio = grid_audio[: 16_000 * 6]
    out = call_codec_round_trip(audio)
    assert out.shape == audio.shape and out.dtype == np.float32
    # the codec's delay is removed: the signal lines up with its input at lag 0, not a few samples later
    at_zero = np.corrcoef(audio, out)[0, 1]
    assert at_zero >= 0.7, at_zero
    assert at_zero > np.corrcoef(audio[:-40], out[40:])[0, 1] + 0.1


def test_speech_survives_the_pauses_do_not(grid_audio: np.ndarray, extractor: FeatureExtractor) -> None:
    """Measured on these 10 s: speech frames 0.19 bel quieter on average (the hum under them goes too), pause
    frames 1.1 bel quieter and voiced 0.54 -> 0.14; the whole window's voiced fraction 0.67 -> 0.40."""
    audio = grid_audio[: 16_000 * 10]
    direct = extractor.extract(transcript_of(window_of(audio), "")).audio
    called = extractor.extract(transcript_of(window_of(call_codec_round_trip(audio)), "")).audio
    assert direct.shape == called.shape
    speech = direct[:, ENERGY] > SPEECH_B
    assert speech.mean() > 0.2
    assert abs(float(np.mean(called[speech, ENERGY] - direct[speech, ENERGY]))) <= 0.3
    pauses = ~speech
    # the pauses' hum: voiced when decoded from the file, quieter and mostly unvoiced after the call's codec
    assert float(np.mean(direct[pauses, ENERGY] - called[pauses, ENERGY])) >= 0.4
    assert direct[pauses, VOICED_COLUMN].mean() - called[pauses, VOICED_COLUMN].mean() >= 0.2
    assert direct[:, VOICED_COLUMN].mean() - called[:, VOICED_COLUMN].mean() >= 0.1


def test_a_tone_keeps_its_level() -> None:
    """A call decodes mono: decoded as two channels and downmixed, a tone came out 3 dB louder (revision 1)."""
    t = np.arange(16_000) / 16_000
    tone = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = call_codec_round_trip(tone)[2000:-2000]
    gain_db = 10 * np.log10(np.mean(out**2) / np.mean(tone[2000:-2000] ** 2))
    assert abs(gain_db) < 0.5, gain_db


def test_empty_and_silent_audio() -> None:
    assert call_codec_round_trip(np.zeros(0, np.float32)).shape == (0,)
    silent = call_codec_round_trip(np.zeros(8000, np.float32))
    assert silent.shape == (8000,) and float(np.abs(silent).max()) < 1e-3
