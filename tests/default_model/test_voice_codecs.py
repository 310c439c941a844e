"""The voices build hears each CREMA-D clip as the agent windows it, decoded from its file and through a call's
codec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.settings import WindowSettings
from agent.vad import SileroVad
from agent.windows import audio_windows
from core.audio_columns import AUDIO_DIM, LEVEL_COLUMN, VOICED_COLUMN
from core.call_codec import CALL_CODEC
from core.errors import ConfigError
from core.features import FeatureExtractor, FeatureSpec
from default_model.build import BuildOptions, _voices, voice_quality
from default_model.cremad import (
    DEFAULT_CREMAD_DIR,
    VoiceSample,
    _row,
    clip_audio_features,
    load_clips,
    speaker_centred,
    voice_samples,
)
from default_model.dataset import VOICE_ID_PREFIX
from default_model.room_hum import ROOM_HUM
from models.adapters.crema_d import CremaClip
from models.config import default_text_encoder_dir
from models.dataset_builder import label_transcript, segment_window


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    encoder = default_text_encoder_dir()
    return FeatureExtractor(FeatureSpec.for_tokenizer(encoder), encoder, use_vision=False)


def test_each_codec_has_its_own_features_and_cache(extractor: FeatureExtractor, tmp_path: Path) -> None:
    clips = load_clips(DEFAULT_CREMAD_DIR, per_split=1, seed=3)
    files = voice_samples(clips, DEFAULT_CREMAD_DIR, extractor, tmp_path, workers=1)
    called = voice_samples(clips, DEFAULT_CREMAD_DIR, extractor, tmp_path, workers=1, codec=CALL_CODEC)
    assert len(list(tmp_path.glob("audio-*"))) == 2 and len(list(tmp_path.glob(f"audio-*-{CALL_CODEC}"))) == 1
    for file_sample, call_sample in zip(files, called, strict=True):
        assert (file_sample.clip, file_sample.label) == (call_sample.clip, call_sample.label)
        # the round trip keeps the clip's length; the windows cut from it may move by a VAD frame or two
        assert abs(len(file_sample.audio) - len(call_sample.audio)) <= 10
        assert not np.array_equal(file_sample.audio, call_sample.audio)
        assert call_sample.name == f"{file_sample.name}@{CALL_CODEC}" and file_sample.codec is None
    again = voice_samples(clips, DEFAULT_CREMAD_DIR, extractor, tmp_path, workers=1, codec=CALL_CODEC)
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(again, called, strict=True))  # from the cache


def test_a_clip_is_heard_as_the_agent_windows_it(extractor: FeatureExtractor) -> None:
    clips = load_clips(DEFAULT_CREMAD_DIR, per_split=2, seed=5)
    for clip in clips:
        decoded = segment_window(DEFAULT_CREMAD_DIR / clip.file, _row(clip), extractor.spec.vision_fps)
        windows = audio_windows(decoded.audio, decoded.stream, WindowSettings(), SileroVad())
        assert windows, clip.name
        heard = np.concatenate([extractor.extract(label_transcript(w, "")).audio for w in windows])
        features = clip_audio_features(clip, DEFAULT_CREMAD_DIR, extractor)
        np.testing.assert_array_equal(features, heard)
        whole = extractor.extract(label_transcript(decoded, "")).audio
        assert len(features) < len(whole) - 5  # the quiet lead-in and tail no served window holds are gone


def test_an_unknown_codec_is_refused(extractor: FeatureExtractor) -> None:
    clip = load_clips(DEFAULT_CREMAD_DIR, per_split=1)[0]
    with pytest.raises(ConfigError, match="unknown voice codec 'gsm'"):
        clip_audio_features(clip, DEFAULT_CREMAD_DIR, extractor, codec="gsm")


def test_train_rows_share_the_repeats_among_codecs_valid_is_the_files_test_has_both(
    extractor: FeatureExtractor, tmp_path: Path
) -> None:
    options = BuildOptions(cremad_dir=DEFAULT_CREMAD_DIR, cremad_cache_dir=tmp_path, clips_per_split=2,
                           voice_repeat=4, voice_join_fraction=0.0, workers=1, progress=False,
                           voice_codecs=(None, CALL_CODEC, ROOM_HUM))
    voices = _voices(options, extractor)
    assert voices is not None
    train = voices["train"]
    # 2 clips, 4 rows each: 2 decoded from the file (the remainder goes first), 1 per other codec
    assert len(train) == 2 * 4
    assert {codec: sum(s.codec == codec for s in train) for codec in (None, CALL_CODEC, ROOM_HUM)} == {
        None: 4, CALL_CODEC: 2, ROOM_HUM: 2}
    assert [s.codec for s in voices["valid"]] == [None, None]
    assert sorted(s.codec or "" for s in voices["test"]) == ["", "", CALL_CODEC, CALL_CODEC, ROOM_HUM, ROOM_HUM]


def test_voice_quality_reports_what_the_call_codec_moved() -> None:
    names = [f"100{i}_IEO_HAP_HI" for i in range(4)]
    ids = [f"{VOICE_ID_PREFIX}$_${n}" for n in names] + [f"{VOICE_ID_PREFIX}$_${n}@{CALL_CODEC}" for n in names]
    ids.append("tweets$_$7")  # a sentence row is not a voice
    true = [1.0, -1.0, 2.0, 0.0] * 2 + [0.5]
    a_file, a_call = [1.0, -1.0, 2.0, 0.5], [1.5, -1.0, 1.0, 0.5]
    out = {"ids": ids, "true": true, "pred": [*a_file, *a_call, 0.0], "pred_A": [*a_file, *a_call, 0.0],
           "pred_T": [float(i) for i in range(9)]}
    quality = voice_quality(out)
    assert quality["n"] == 4 and quality["pearson_a"] == pytest.approx(np.corrcoef(a_file, true[:4])[0, 1], abs=1e-3)
    call = quality[CALL_CODEC]
    assert call["n"] == 4
    assert call["mean_abs_shift_a"] == pytest.approx(1.5 / 4, abs=1e-4)
    assert call["max_abs_shift_a"] == pytest.approx(1.0, abs=1e-4)
    assert call["pearson_a"] == pytest.approx(np.corrcoef(a_call, true[:4])[0, 1], abs=1e-3)


def _sample(actor: str, name: str, level: float, codec: str | None = None) -> VoiceSample:
    clip = CremaClip(f"audio/{actor}_{name}.opus", actor, "train", "It's eleven o'clock.", "happy", "high",
                     {"A": 0, "D": 0, "F": 0, "H": 5, "N": 0, "S": 0}, 5)
    audio = np.zeros((10, AUDIO_DIM), np.float32)
    audio[:, LEVEL_COLUMN], audio[:, VOICED_COLUMN] = level, 1.0
    ids = np.array([101, 102], np.int64)
    return VoiceSample(clip, 1.0, clip.sentence, ids, np.ones(2, np.int64), np.zeros(2, np.int64), audio,
                       np.zeros((1, 26), np.float32), codec=codec)


def test_a_clips_level_is_taken_relative_to_its_own_actor_through_the_same_codec() -> None:
    loud_actor = [_sample("1001", f"c{i}", -1.0) for i in range(4)]
    quiet_actor = [_sample("1002", f"c{i}", -3.0) for i in range(4)]
    odd = _sample("1001", "shout", -0.5)
    called = [_sample("1001", f"c{i}", -2.0, CALL_CODEC) for i in range(4)]
    out = speaker_centred([*loud_actor, odd, *quiet_actor, *called], (LEVEL_COLUMN,), clips=4, seed=0)
    levels = [float(s.audio[0, LEVEL_COLUMN]) for s in out]
    # every other clip of the actor is drawn (4 of 4), then the clip itself: equally many frames each
    assert levels[:4] == pytest.approx([-1.0 - (-1.0 * 4 - 0.5) / 5] * 4)  # a little quieter than the actor
    assert levels[4] == pytest.approx(-0.5 - (-1.0 * 4 - 0.5) / 5)  # the shout: louder than the actor
    assert levels[5:] == pytest.approx([0.0] * 8)  # the other actor, the other codec: their own references
    assert out[0].audio[0, VOICED_COLUMN] == 1.0  # other columns as they were
