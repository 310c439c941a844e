"""`model build` (the default recipe, with the voices) end to end on a handful of clips and sentences, one epoch:
the CREMA-D path builds its rows relative to each actor's voice, trains, and exports a bundle the agent scores
with a speaker reference."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from agent.bundle import ModelBundle
from core.audio_columns import LEVEL_COLUMN
from core.card import ModelCard
from core.features import FeatureExtractor, FeatureSpec
from core.speaker_reference import FLOOR_BELS, FRAMES, own_reference, quiet_rows
from core.types import Transcript
from default_model.build import (
    AUDIO_QUIET_EDGE_ROWS,
    AUDIO_QUIET_GATE,
    AUDIO_SPEAKER_COLUMNS,
    AUDIO_TRIM_QUIET_EDGES,
    MODEL_VERSION,
    TEXT_FROM_RATED_SENTENCES,
    TEXT_NORMALISER,
    VOICES_TRAIN_SEED_OFFSET,
    BuildOptions,
    build,
    train_seed,
)
from default_model.cremad import DEFAULT_CREMAD_DIR
from default_model.dataset import VOICE_ID_PREFIX, window_of
from models.datasets import load_mmsa_pickle


@pytest.mark.integration
def test_a_tiny_voices_build_trains_and_exports_a_speaker_relative_model(tmp_path: Path) -> None:
    options = BuildOptions(out_dir=tmp_path / "committed", bundle_dir=tmp_path / "bundle", work_dir=tmp_path / "work",
                           cremad_dir=DEFAULT_CREMAD_DIR, clips_per_split=4, sentences_per_corpus=6,
                           spoken_per_corpus=3, max_epochs=1, progress=False)
    report = build(options)
    voices = report.quality["cremad_test_actors_gold_text"]
    assert voices["n"] == 4 and np.isfinite(voices["pearson_a"])
    assert report.counts["train/cremad"]["clips"] == 4
    card = ModelCard.read(tmp_path / "bundle")
    assert card.model_version == MODEL_VERSION
    # the weights draw from the training seed, the data and its splits from the build's seed (default_model.build)
    assert card.training["train_seed"] == options.seed + VOICES_TRAIN_SEED_OFFSET != card.training["seed"]
    assert card.feature_spec["text_normaliser"] == TEXT_NORMALISER  # and the agent reads transcripts with it
    assert card.audio_reference is not None and card.audio_reference.columns == AUDIO_SPEAKER_COLUMNS
    assert (card.audio_reference.floor_bels, card.audio_reference.frames) == (FLOOR_BELS, FRAMES)
    assert card.audio_reference.quiet_gate == AUDIO_QUIET_GATE
    assert card.audio_reference.trim_quiet_edges == AUDIO_TRIM_QUIET_EDGES
    assert "speaker_reference" in card.training["voices"] and "speaker's own voice" in card.training["deviation"]
    # the voices' twelve neutral sentences are marked as text that carries no label; the card says whether the
    # build let them train the text branch (models.config.text_from_labelled_rows)
    said = "train neither the text encoder nor the text head" in card.training["deviation"]
    assert said == TEXT_FROM_RATED_SENTENCES
    train = load_mmsa_pickle(tmp_path / "work" / "vader_espeak.pkl")["train"]
    is_voice = np.asarray([key.startswith(f"{VOICE_ID_PREFIX}$_$") for key in train.ids])
    assert is_voice.any() and (~is_voice).any()
    assert train.text_labelled is not None and train.text_labelled.tolist() == (~is_voice).tolist()
    if AUDIO_TRIM_QUIET_EDGES:  # every voice row has the card's number of gated rows at each edge, as served
        assert card.audio_reference.quiet_edge_rows == AUDIO_QUIET_EDGE_ROWS
        for row in np.flatnonzero(is_voice):
            loud = np.flatnonzero(~quiet_rows(train.audio[row, : int(train.audio_lengths[row])]))
            lead, tail = loud[0], int(train.audio_lengths[row]) - 1 - loud[-1]
            assert lead == tail == AUDIO_QUIET_EDGE_ROWS, train.ids[row]

    spec = FeatureSpec.from_dict(card.feature_spec)
    bundle = ModelBundle.load(tmp_path / "bundle", spec.to_dict(), providers=["CPUExecutionProvider"])
    extractor = FeatureExtractor(spec, tmp_path / "bundle", use_vision=False)
    rng = np.random.default_rng(0)
    tone = (0.3 * np.sin(np.arange(32000) * 2 * np.pi * 180 / 16000) * (1 + rng.random(32000))).astype(np.float32)
    features = extractor.extract(Transcript(window_of(tone), "fine", (), "en", 0.0, 0.0))
    alone = bundle.prepare(features).audio  # no reference given: the window's own
    quieter = own_reference(features.audio)
    quieter[LEVEL_COLUMN] -= 1.0  # a speaker 10 dB quieter than this window
    against = bundle.prepare(replace(features, audio_reference=quieter)).audio
    # the same window reads 1 bel louder against the quieter speaker's reference; the other columns are the same
    # (the gated rows at the edges are one fixed row whatever the reference)
    spoken = ~quiet_rows(alone)
    assert not spoken[:AUDIO_QUIET_EDGE_ROWS].any() and not spoken[len(alone) - AUDIO_QUIET_EDGE_ROWS:].any()
    np.testing.assert_allclose(against[spoken, LEVEL_COLUMN] - alone[spoken, LEVEL_COLUMN], 1.0, atol=1e-5)
    np.testing.assert_allclose(against[:, 1:9], alone[:, 1:9])


def test_only_the_voices_model_trains_from_its_own_seed() -> None:
    """2.0.0's recipe keeps the build's seed for its weights; the voices model's weights draw from seed + offset."""
    assert train_seed(BuildOptions(seed=7, cremad_dir=None)) == 7
    assert train_seed(BuildOptions(seed=7)) == 7 + VOICES_TRAIN_SEED_OFFSET
    assert BuildOptions().cremad_dir == DEFAULT_CREMAD_DIR  # the default recipe hears the voices
