"""bench/default_model.py --baseline: a second bundle scored on the very same windows and transcripts, and the
paired-bootstrap interval of the difference in r."""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench.default_model import (
    Pipeline,
    baseline_beside,
    corpus_rows,
    paired_r_difference,
    run,
    spoken_path,
    text_path,
)
from core.card import ModelCard
from core.errors import AffectstreamError
from core.features_audio import audio_features
from core.features_text import SPLIT_LETTERS_DIGITS
from core.media import decode_audio
from core.types import SAMPLE_RATE_HZ
from default_model.artefacts import SENTENCES_ONLY_DIR, export_default_bundle
from default_model.build import SENTENCES_ONLY_MODEL_VERSION
from default_model.corpus import CORPORA, RatedSentence
from default_model.dataset import transcript_of, window_of


def test_the_paired_difference_is_zero_for_one_model_and_positive_for_a_better_one() -> None:
    rng = np.random.default_rng(1)
    true = rng.normal(size=300)
    same = true + rng.normal(size=300)
    assert paired_r_difference(same, same, true) == {"difference": 0.0, "ci95": [0.0, 0.0]}
    better = paired_r_difference(true + 0.3 * rng.normal(size=300), same, true)
    assert better["difference"] > 0.2 and 0 < better["ci95"][0] < better["difference"] < better["ci95"][1]


def test_corpus_rows_report_the_baseline_beside_ours() -> None:
    rng = np.random.default_rng(2)
    test = [RatedSentence(corpus, str(i), float(rating), f"sentence {i} of {corpus}")
            for corpus in CORPORA for i, rating in enumerate(rng.uniform(-4, 4, size=8))]
    labels = np.asarray([s.label for s in test])
    ours, base = labels + 0.1 * rng.normal(size=len(test)), labels + rng.normal(size=len(test))
    table = corpus_rows(test, ours, test, ours, [s.text for s in test], (base, base))
    for corpus in CORPORA:
        entry = table[corpus]
        assert entry["baseline_spoken_r"] < entry["ours_spoken_r"]
        assert entry["spoken_minus_baseline"]["difference"] == round(
            entry["ours_spoken_r"] - entry["baseline_spoken_r"], 4)
    assert "baseline_text_r" not in corpus_rows(test, ours, test, ours, [s.text for s in test])[CORPORA[0]]


POSITIVE_AND_NEGATIVE = [
    RatedSentence("amazon", "1", 3.0, "I love this camera, it is wonderful."),
    RatedSentence("amazon", "2", -3.0, "The battery died after a day, what a waste of money."),
]


async def spoken_beside(
    pipe: Pipeline, baseline: Pipeline
) -> tuple[np.ndarray, list[str], dict[str, int], np.ndarray | None]:
    """The spoken path of POSITIVE_AND_NEGATIVE, scored by both pipelines on the same windows."""
    pipe.scorer.start()
    baseline.scorer.start()
    try:
        return await spoken_path(pipe, POSITIVE_AND_NEGATIVE, baseline)
    finally:
        await pipe.scorer.close()
        await baseline.scorer.close()


async def test_the_baseline_scores_the_same_heard_windows(default_bundle_dir: Path) -> None:
    scores, heard, stats, base = await spoken_beside(Pipeline(default_bundle_dir), Pipeline(default_bundle_dir))
    assert stats["no_words"] == 0 and all(heard)
    assert base is not None
    np.testing.assert_allclose(base, scores, atol=1e-4)  # the same bundle on the same windows: the same scores
    assert scores[0] > scores[1]


async def test_the_committed_sentences_only_model_is_scored_beside_the_default(
    default_bundle_dir: Path, tmp_path: Path
) -> None:
    """2.0.0 stays committed (default_model/sentences_only) as the benches' same-run baseline: it exports, the
    bench accepts it beside the default, and it scores the default's heard windows by their words."""
    path, exported = export_default_bundle(tmp_path / "sentences-only", SENTENCES_ONLY_DIR, variants=False)
    card = ModelCard.read(path)
    assert exported and card.model_version == SENTENCES_ONLY_MODEL_VERSION and card.audio_reference is None
    pipe = Pipeline(default_bundle_dir)
    baseline = baseline_beside(pipe, path)
    assert baseline.own_audio  # 2.0.0 reads the audio unfiltered: its own descriptors of the same windows
    scores, _, stats, base = await spoken_beside(pipe, baseline)
    assert stats["no_words"] == 0 and base is not None
    assert scores[0] > scores[1] and base[0] > base[1]


async def test_a_baseline_that_reads_other_features_is_refused(default_bundle_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(default_bundle_dir, other)
    card = json.loads((other / "card.json").read_text())
    card["feature_spec"]["vision_fps"] = card["feature_spec"]["vision_fps"] / 2
    (other / "card.json").write_text(json.dumps(card))
    args = argparse.Namespace(bundle=default_bundle_dir, variant="fp32", audio_ablated=False, baseline=other)
    with pytest.raises(AffectstreamError, match="reads other features"):
        await run(args)


def test_a_baseline_with_another_text_rule_reads_the_transcripts_its_own_way(
    default_bundle_dir: Path, tmp_path: Path
) -> None:
    """2.0.0's card names no text_normaliser; the default's does. The bench scores both on one transcript each."""
    other = tmp_path / "no-text-rule"
    shutil.copytree(default_bundle_dir, other)
    card = json.loads((other / "card.json").read_text())
    assert card["feature_spec"].pop("text_normaliser") == SPLIT_LETTERS_DIGITS
    (other / "card.json").write_text(json.dumps(card))
    pipe, baseline = Pipeline(default_bundle_dir), Pipeline(other)
    heard = pipe.extractor.extract(transcript_of(window_of(np.zeros(SAMPLE_RATE_HZ, np.float32)), "lay red at s0 now"))
    np.testing.assert_array_equal(pipe.own_features(heard).input_ids, heard.input_ids)
    theirs = baseline.own_features(heard)
    assert not np.array_equal(theirs.input_ids, heard.input_ids)
    np.testing.assert_array_equal(theirs.input_ids, baseline.extractor.tokenize("lay red at s0 now")[0])
    assert theirs.audio is heard.audio  # only the tokens are the baseline's own


async def test_a_baseline_with_another_high_pass_hears_the_windows_its_own_way(
    default_bundle_dir: Path, tmp_path: Path, shared_data: Path
) -> None:
    """2.0.0's card names no audio_highpass_hz; the voices model's does: the baseline scores the same windows
    with the descriptors of its own audio (and synthesises the gold-text path's speech anew, not the build's copy)."""
    other = tmp_path / "no-high-pass"
    shutil.copytree(default_bundle_dir, other)
    card = json.loads((other / "card.json").read_text())
    spec = card["feature_spec"]
    if spec.pop("audio_highpass_hz", None) is None:  # none: as 2.0.0's card says it (the key left out)
        spec["audio_highpass_hz"] = 60.0
    (other / "card.json").write_text(json.dumps(card))
    pipe = Pipeline(default_bundle_dir)
    baseline = baseline_beside(pipe, other)
    assert baseline.spec.audio_highpass_hz != pipe.spec.audio_highpass_hz and baseline.own_audio
    audio = decode_audio(shared_data / "av" / "grid" / "grid_brbk7n.mpg")  # mains hum, which a high-pass removes
    heard = pipe.extractor.extract(transcript_of(window_of(audio), "bin red by k seven now"))
    theirs = baseline.own_features(heard)
    np.testing.assert_array_equal(theirs.audio, audio_features(audio, baseline.spec.audio_highpass_hz))
    assert not np.array_equal(theirs.audio, heard.audio)
    cached = {"amazon/1": replace(heard, transcript=None)}  # the build's copy: arrays only
    sentence = RatedSentence("amazon", "1", 3.0, "I love this camera.")
    baseline.scorer.start()
    try:
        assert len(await text_path(baseline, [sentence], cached)) == 1  # synthesised anew, no raw audio needed
    finally:
        await baseline.scorer.close()
