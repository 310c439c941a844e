"""Silero VAD (faster-whisper's bundled ONNX model, no torch): streaming equals one-shot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.vad import SILERO_FRAME_SAMPLES, SileroVad
from core.media import decode_audio


@pytest.fixture(scope="module")
def jfk(shared_data: Path) -> np.ndarray:
    return decode_audio(shared_data / "speech/jfk/jfk.flac")


def test_pieces_of_any_size_give_the_one_shot_probabilities(jfk: np.ndarray) -> None:
    whole = SileroVad().speech_probabilities(jfk)
    assert len(whole) == len(jfk) // SILERO_FRAME_SAMPLES
    vad = SileroVad()
    rng = np.random.default_rng(1)
    pieces, start = [], 0
    while start < len(jfk):
        size = int(rng.integers(1, 3000))
        pieces.append(vad.speech_probabilities(jfk[start : start + size]))
        start += size
    np.testing.assert_allclose(np.concatenate(pieces), whole, atol=1e-6)
    assert vad.frames_done == len(whole)


def test_speech_scores_high_and_silence_low(jfk: np.ndarray) -> None:
    vad = SileroVad()
    silence = vad.speech_probabilities(np.zeros(16000, np.float32))
    speech = SileroVad().speech_probabilities(jfk)
    assert silence.max() < 0.2
    assert (speech >= 0.5).mean() > 0.5  # JFK speaks most of the 11 s
    # 8.5-10.5 s is "ask what you can do for your country": all speech.
    frame_s = SILERO_FRAME_SAMPLES / 16000
    assert speech[int(8.6 / frame_s) : int(9.4 / frame_s)].mean() > 0.7


def test_new_stream_has_its_own_state_and_shares_the_model(jfk: np.ndarray) -> None:
    shared = SileroVad()
    a, b = shared.new_stream(), shared.new_stream()
    assert a._session is b._session is shared._session
    first = a.speech_probabilities(jfk[:48000])
    b.speech_probabilities(np.zeros(48000, np.float32))  # b's state must not leak into a
    rest = a.speech_probabilities(jfk[48000:])
    np.testing.assert_allclose(
        np.concatenate([first, rest]), SileroVad().speech_probabilities(jfk), atol=1e-6
    )


def test_reset_forgets_the_stream(jfk: np.ndarray) -> None:
    vad = SileroVad()
    once = vad.speech_probabilities(jfk[:32000])
    vad.reset()
    np.testing.assert_allclose(vad.speech_probabilities(jfk[:32000]), once, atol=1e-6)


def test_a_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    from core.errors import ModelError

    with pytest.raises(ModelError, match="Silero"):
        SileroVad(str(tmp_path / "missing.onnx"))
