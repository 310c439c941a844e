"""Audio, vision and text extractors on their own: shapes, column meaning, determinism, bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from core import features_audio as fa
from core import features_text
from core import features_vision as fv
from core.audio_columns import AUDIO_COLUMNS
from core.errors import ModelError
from core.features import FeatureExtractor, FeatureSpec, audio_features, no_face_vision, speech_ratio
from core.media import decode_file
from core.types import AudioChunk, StreamId, Transcript, VideoFrame, Window

SR = 16_000


def _tone(f0_hz: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    wave = sum(np.sin(2 * np.pi * k * f0_hz * t) / k for k in range(1, 6))  # a voiced-like harmonic tone
    return (0.2 * wave).astype(np.float32)


def _decode(path: Path) -> tuple[np.ndarray, list[VideoFrame]]:
    items = list(decode_file(path))
    audio = np.concatenate([i.samples for i in items if isinstance(i, AudioChunk)])
    return audio, [i for i in items if isinstance(i, VideoFrame)]


@pytest.mark.parametrize("n_samples", [0, 1, 319, 320, 16_000, 16_161])
def test_audio_rows_follow_the_20ms_hop(n_samples: int) -> None:
    rng = np.random.default_rng(n_samples)
    out = audio_features((0.05 * rng.standard_normal(n_samples)).astype(np.float32))
    assert out.shape == (1 + max(n_samples, 1) // 320, fa.AUDIO_DIM) == (fa.n_audio_frames(n_samples), 29)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert fa.FRAME_RATE_HZ == 50.0 and len(AUDIO_COLUMNS) == fa.AUDIO_DIM


def test_audio_columns_mean_what_the_doc_says() -> None:
    tone = audio_features(_tone(150.0))
    middle = tone[5:-5]
    col = AUDIO_COLUMNS.index
    assert middle[:, col("voiced")].min() == 1.0
    assert np.allclose(middle[:, col("f0_oct")], np.log2(150.0 / 27.5), atol=0.02)
    assert middle[:, col("periodicity")].min() > 0.9
    noise = audio_features((0.2 * np.random.default_rng(1).standard_normal(SR)).astype(np.float32))
    assert speech_ratio(noise) < 0.05 and np.all(noise[:, col("f0_oct")][noise[:, col("voiced")] == 0] == 0)
    assert noise[:, col("flatness")].mean() > 10 * tone[:, col("flatness")].mean()
    silence = audio_features(np.zeros(SR, dtype=np.float32))
    assert np.all(silence[:, col("log_energy_b")] == -10.0) and speech_ratio(silence) == 0.0
    assert middle[:, col("log_energy_b")].mean() > -2.0


def test_audio_is_deterministic_and_local() -> None:
    speech = _tone(120.0, 2.0) + 0.01 * np.random.default_rng(2).standard_normal(2 * SR).astype(np.float32)
    first = audio_features(speech)
    assert np.array_equal(first, audio_features(speech.copy()))
    # No per-window normalisation: frames away from the cut keep their values when audio is appended
    # (up to float summation order in BLAS; top-dB clipping or mean removal would move them a lot).
    longer = audio_features(np.concatenate([speech, np.zeros(SR, dtype=np.float32)]))
    assert np.allclose(longer[: len(first) - 3], first[:-3], rtol=0, atol=1e-5)
    assert not np.allclose(audio_features(speech * 0.5)[:, 0], first[:, 0], atol=0.1)  # loudness is kept


@pytest.mark.parametrize(
    "bad, why",
    [
        (np.zeros((2, 100), dtype=np.float32), "1-D"),
        (np.zeros(100, dtype=np.float64), "float32"),
        (np.array([0.0, np.nan], dtype=np.float32), "NaN"),
    ],
)
def test_audio_rejects_bad_input(bad: np.ndarray, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        audio_features(bad)


def test_real_speech_is_mostly_voiced(shared_data: Path) -> None:
    audio, _ = _decode(
        shared_data / "speech/librivox_sense_and_sensibility/sense_and_sensibility_01_austen_64kb-0880.wav"
    )
    ratio = speech_ratio(audio_features(audio))
    assert 0.4 < ratio < 0.95


def test_faces_found_in_real_clips_and_not_in_blank_frames(
    extractor: FeatureExtractor, shared_data: Path
) -> None:
    for clip in ("av/crema_d/1001_DFA_NEU_XX.flv", "av/grid/grid_swiz3n.mpg"):
        _, frames = _decode(shared_data / clip)
        vision = extractor.vision_features(frames[::6])
        assert vision.shape == (len(frames[::6]), fv.VISION_DIM) and vision.dtype == np.float32
        assert fv.face_visible_ratio(vision) >= 0.9, clip
    blank = VideoFrame(0.0, np.full((360, 480, 3), 128, dtype=np.uint8))
    row = extractor.vision_features([blank])
    assert np.array_equal(row, no_face_vision(1)) and fv.face_visible_ratio(row) == 0.0
    assert np.array_equal(extractor.vision_features([]), no_face_vision(1))
    with pytest.raises(ValueError, match="RGB uint8"):
        extractor.vision_features([VideoFrame(0.0, np.zeros((10, 10), dtype=np.uint8))])


def test_face_descriptor_ignores_head_position_and_scale(
    extractor: FeatureExtractor, shared_data: Path
) -> None:
    import cv2

    _, frames = _decode(shared_data / "av/crema_d/1001_DFA_HAP_XX.flv")
    rgb = frames[20].rgb
    base = extractor.vision_features([VideoFrame(0.0, rgb)])[0]
    bigger = cv2.resize(rgb, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_LINEAR)
    shifted = np.pad(rgb, ((60, 0), (120, 0), (0, 0)))  # the face elsewhere in a larger frame
    for moved in (bigger, shifted):
        other = extractor.vision_features([VideoFrame(0.0, moved)])[0]
        assert other[0] == 1.0
        assert np.abs(other - base).max() < 0.05, np.abs(other - base)


def test_tokenizer_truncates_like_mmsa(extractor: FeatureExtractor, feature_spec: FeatureSpec) -> None:
    ids, mask, types = extractor.tokenize("Don't forget a jacket.")
    assert ids[0] == 101 and ids[-1] == 102 and ids.dtype == np.int64
    assert np.all(mask == 1) and np.all(types == 0) and len(mask) == len(types) == len(ids)
    assert np.array_equal(ids, extractor.tokenize("DON'T FORGET A JACKET.")[0])  # the tokenizer lower-cases
    long_text = " ".join(f"word{i}" for i in range(200))
    long_ids = extractor.tokenize(long_text)[0]
    assert len(long_ids) == feature_spec.text_max_length and long_ids[-1] == 102
    short = extractor.tokenize(" ".join(f"word{i}" for i in range(10)))[0]
    assert np.array_equal(long_ids[: len(short) - 1], short[:-1])  # the same pieces, cut to L - 2
    assert list(extractor.tokenize("")[0]) == [101, 102]


def test_feature_spec_round_trips_and_mismatches_are_named(
    feature_spec: FeatureSpec, minilm_dir: Path
) -> None:
    again = FeatureSpec.from_dict(json.loads(json.dumps(feature_spec.to_dict())))
    assert again == feature_spec and again.mismatches(feature_spec) == []
    assert feature_spec.audio_dim == 29 and feature_spec.vision_dim == 26 and feature_spec.vision_fps == 10.0
    with pytest.raises(ModelError, match="missing keys"):
        FeatureSpec.from_dict({k: v for k, v in feature_spec.to_dict().items() if k != "audio_version"})
    newer = dataclasses.replace(feature_spec, audio_version=feature_spec.audio_version + 1)
    assert newer != feature_spec and newer.mismatches(feature_spec)[0].startswith("audio_version")
    with pytest.raises(ModelError, match="audio_version"):
        FeatureExtractor(newer, minilm_dir, use_vision=False)
    with pytest.raises(ModelError, match="tokenizer_sha256"):
        FeatureExtractor(
            dataclasses.replace(feature_spec, tokenizer_sha256="0" * 64), minilm_dir, use_vision=False
        )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bin blue at s0 now", "bin blue at s 0 now"),
        ("Bin blue at S0 now.", "Bin blue at S 0 now."),
        ("at 3pm on the 1st", "at 3 pm on the 1 st"),
        ("s 0, x_1 and 2-3!", "s 0, x_1 and 2-3!"),  # already apart, or not a letter beside the digit
        ("ça2", "ça 2"),
    ],
)
def test_the_letter_digit_rule_spaces_only_a_letter_beside_a_digit(text: str, expected: str) -> None:
    assert features_text.normalised(text, features_text.SPLIT_LETTERS_DIGITS) == expected
    assert features_text.normalised(text, features_text.NO_NORMALISER) == text


def test_a_spec_with_the_letter_digit_rule_reads_whisper_spacings_alike(
    feature_spec: FeatureSpec, minilm_dir: Path
) -> None:
    """Whisper wrote one GRID clip's "s 0" as "s0" from its call; a model trained with the rule reads them alike."""
    plain = FeatureExtractor(feature_spec, minilm_dir, use_vision=False)
    ruled_spec = FeatureSpec.for_tokenizer(minilm_dir, text_normaliser=features_text.SPLIT_LETTERS_DIGITS)
    ruled = FeatureExtractor(ruled_spec, minilm_dir, use_vision=False)
    joined, apart = "place red at s0 please", "place red at s 0 please"
    assert not np.array_equal(plain.tokenize(joined)[0], plain.tokenize(apart)[0])
    assert np.array_equal(ruled.tokenize(joined)[0], ruled.tokenize(apart)[0])
    assert np.array_equal(ruled.tokenize("I feel fine.")[0], plain.tokenize("I feel fine.")[0])

    # on the card: named when used, absent when not (the cards of earlier models are unchanged), checked on load
    assert "text_normaliser" not in feature_spec.to_dict()
    assert ruled_spec.to_dict()["text_normaliser"] == features_text.SPLIT_LETTERS_DIGITS
    assert FeatureSpec.from_dict(json.loads(json.dumps(ruled_spec.to_dict()))) == ruled_spec
    assert ruled_spec.mismatches(feature_spec)[0].startswith("text_normaliser")
    with pytest.raises(ModelError, match="text_normaliser 'lowercase_all' is not one this agent applies"):
        FeatureSpec.from_dict({**ruled_spec.to_dict(), "text_normaliser": "lowercase_all"})


def test_the_high_pass_removes_hum_and_keeps_the_voice_band() -> None:
    t = np.arange(SR) / SR
    hum = (0.1 * np.sin(2 * np.pi * 50 * t)).astype(np.float32)  # -23 dBFS of mains hum
    voice = (0.05 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    cut = fa.high_passed(hum + voice, 60.0)
    assert cut.shape == hum.shape and cut.dtype == np.float32
    residual = cut - fa.high_passed(voice, 60.0)
    # the hum 12 dB down at least (measured 14.4 dB: 7.2 dB each way; a call's Opus took GRID's down ~17 dB)
    assert np.sqrt(np.mean(residual[SR // 4: -SR // 4] ** 2)) < 0.1 * 0.71 / 4
    kept = np.sqrt(np.mean(fa.high_passed(voice, 60.0)[SR // 4: -SR // 4] ** 2)) / np.sqrt(np.mean(voice**2))
    assert 0.95 < kept < 1.02  # the voice band passes
    assert fa.high_passed(voice, fa.NO_HIGHPASS) is voice
    # zero phase: a click stays where it was (a frame's level moves in time with it, not after it)
    click = np.zeros(SR // 2, np.float32)
    click[4000] = 1.0
    assert int(np.argmax(np.abs(fa.high_passed(click, 60.0)))) == 4000
    assert fa.audio_features(voice[:100], 60.0).shape == (1, fa.AUDIO_DIM)  # shorter than the filter's padding


def test_a_spec_with_a_high_pass_extracts_with_it_and_says_so(
    feature_spec: FeatureSpec, minilm_dir: Path, shared_data: Path
) -> None:
    audio, _ = _decode(shared_data / "av/grid/grid_brbk7n.mpg")  # mains hum under the speech
    window = Window(StreamId("c1", "p1"), 0, 0.0, len(audio) / SR, audio, (), "stream_end")
    transcript = Transcript(window, "bin red by k seven now", (), "en", 0.0, 1.0)
    plain = FeatureExtractor(feature_spec, minilm_dir, use_vision=False).extract(transcript).audio
    spec = FeatureSpec.for_tokenizer(minilm_dir, audio_highpass_hz=60.0)
    cut = FeatureExtractor(spec, minilm_dir, use_vision=False).extract(transcript).audio
    assert np.array_equal(cut, fa.audio_features(audio, 60.0))
    pauses, speech = plain[:, 0] < -2.5, plain[:, 0] > -1.5  # the hum's frames lose much of their level ...
    assert float(np.mean(plain[pauses, 0] - cut[pauses, 0])) >= 0.5
    assert float(np.median(np.abs(plain[speech, 0] - cut[speech, 0]))) <= 0.1  # ... the voice's keep theirs

    assert "audio_highpass_hz" not in feature_spec.to_dict()  # earlier cards are unchanged
    assert spec.to_dict()["audio_highpass_hz"] == 60.0
    assert FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert spec.mismatches(feature_spec) == ["audio_highpass_hz: 60.0 != 0.0"]
    with pytest.raises(ModelError, match="audio_highpass_hz 9000.0 is not a cutoff between 0 and 8000 Hz"):
        FeatureSpec.from_dict({**spec.to_dict(), "audio_highpass_hz": 9000})


def test_extract_fills_every_field(
    extractor: FeatureExtractor, feature_spec: FeatureSpec, minilm_dir: Path, shared_data: Path
) -> None:
    audio, frames = _decode(shared_data / "av/grid/grid_pwij3p.mpg")
    window = Window(StreamId("c1", "p1"), 0, 0.0, len(audio) / SR, audio, tuple(frames[::3]), "stream_end")
    features = extractor.extract(Transcript(window, "place white in j three please", (), "en", 0.0, 1.0))
    assert features.audio.shape == (fa.n_audio_frames(len(audio)), feature_spec.audio_dim)
    assert features.vision.shape == (len(frames[::3]), feature_spec.vision_dim)
    assert features.face_visible_ratio == 1.0 and 0.2 < features.speech_ratio < 0.9
    assert features.input_ids.shape == features.attention_mask.shape == features.token_type_ids.shape
    assert features.latency_ms > 0 and features.window is window
    blind = FeatureExtractor(feature_spec, minilm_dir, use_vision=False)
    assert np.array_equal(blind.extract(features.transcript).vision, no_face_vision(1))
    shed = extractor.empty(features.transcript)
    assert shed.audio.shape == (0, 29) and shed.vision.shape == (0, 26) and shed.speech_ratio == 0.0
