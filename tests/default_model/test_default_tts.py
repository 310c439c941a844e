"""espeak-ng synthesis: real subprocess, real decode, voice sets, and the training sample it feeds."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from core.features import FeatureExtractor, FeatureSpec, audio_features
from core.media import decode_file
from core.types import SAMPLE_RATE_HZ, AudioChunk
from default_model.corpus import RatedSentence
from default_model.tts import (
    HELDOUT_VOICES,
    TRAIN_VOICES,
    TTSError,
    Voice,
    decode_wav,
    speakable,
    synthesize,
    synthesize_many,
    voice_for,
)

SENTENCE = "Yay. Another good phone interview."


def test_synthesize_gives_16k_mono_float32_speech() -> None:
    audio = synthesize(SENTENCE, Voice("en-us", 165, 50))
    assert audio.dtype == np.float32 and audio.ndim == 1
    duration_s = len(audio) / SAMPLE_RATE_HZ
    assert 1.0 < duration_s < 5.0  # six words at 165 wpm
    assert 0.05 < float(np.abs(audio).max()) <= 1.0
    assert float(np.sqrt(np.mean(audio**2))) > 0.01  # not silence


def test_rate_pitch_and_voice_change_the_audio() -> None:
    slow = synthesize(SENTENCE, Voice("en-us", 120, 50))
    fast = synthesize(SENTENCE, Voice("en-us", 200, 50))
    assert len(slow) > 1.3 * len(fast)
    other = synthesize(SENTENCE, Voice("en-gb-x-rp+f4", 120, 50))
    assert len(other) != len(slow) or not np.allclose(other, slow)


def test_heldout_voices_are_speakers_never_used_in_training() -> None:
    train_variants = {v.name.partition("+")[2] for v in TRAIN_VOICES}  # "" = the language voice's own
    for voice in HELDOUT_VOICES:
        variant = voice.name.partition("+")[2]
        assert variant and variant not in train_variants, voice


def test_voice_choice_is_fixed_per_sentence_and_spread() -> None:
    keys = [f"tweets/{i}" for i in range(300)]
    assert [voice_for(k, TRAIN_VOICES) for k in keys] == [voice_for(k, TRAIN_VOICES) for k in keys]
    assert len({voice_for(k, TRAIN_VOICES).name for k in keys}) == len({v.name for v in TRAIN_VOICES})


def test_unknown_voice_and_empty_text_are_clear_errors() -> None:
    with pytest.raises(TTSError, match="bogusvoice"):
        synthesize(SENTENCE, Voice("bogusvoice", 160, 50))
    with pytest.raises(TTSError, match="empty"):
        synthesize("   ", TRAIN_VOICES[0])


def test_speakable_decodes_entities_and_a_leading_dash_is_text() -> None:
    assert speakable("  We were 17 deep &amp;\n the love  ") == "We were 17 deep & the love"
    audio = synthesize("-v is not an option here", TRAIN_VOICES[0])  # stdin, not argv
    assert len(audio) > SAMPLE_RATE_HZ


def test_many_in_order_with_a_post_step() -> None:
    jobs = [(SENTENCE, TRAIN_VOICES[0]), ("No.", TRAIN_VOICES[0]), (SENTENCE, TRAIN_VOICES[0])]
    frames = list(synthesize_many(jobs, workers=2, then=audio_features))
    assert frames[0].shape == frames[2].shape and np.array_equal(frames[0], frames[2])
    assert frames[1].shape[0] < frames[0].shape[0]


def test_spoken_audio_is_what_replaying_the_wav_would_hear(tmp_path: Path) -> None:
    """decode_wav resamples with the resampler decode_file (and live ingest) use: same WAV, same 16 kHz samples."""
    rate = 22_050  # espeak-ng's --stdout rate
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate, layout="mono")
        tone = (np.sin(2 * np.pi * 440 * np.arange(rate) / rate) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(tone[None], format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    replayed = np.concatenate([item.samples for item in decode_file(path) if isinstance(item, AudioChunk)])
    spoken = decode_wav(path.read_bytes())
    assert len(spoken) == pytest.approx(SAMPLE_RATE_HZ, abs=2)
    np.testing.assert_array_equal(spoken, replayed)


def test_training_sample_uses_the_agent_extractor() -> None:
    """A spoken training sentence equals what FeatureExtractor.extract gives for that window."""
    from default_model.dataset import speak_and_extract, transcript_of, window_of
    from models.config import default_text_encoder_dir

    encoder = default_text_encoder_dir()
    extractor = FeatureExtractor(FeatureSpec.for_tokenizer(Path(encoder)), Path(encoder), use_vision=False)
    sentence = RatedSentence("tweets", "2", 1.9, SENTENCE)
    spoken = speak_and_extract(sentence, extractor)
    audio = synthesize(SENTENCE, spoken.voice)
    again = extractor.extract(transcript_of(window_of(audio), SENTENCE))
    assert np.array_equal(spoken.features.audio, again.audio)
    assert np.array_equal(spoken.features.input_ids, again.input_ids)
    assert spoken.features.vision.shape == (1, extractor.spec.vision_dim)
    assert not spoken.features.vision.any()  # the explicit "no face" row
