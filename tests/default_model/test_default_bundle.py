"""The committed default model: small artefacts, exported to a bundle that the agent's scorer runs."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from agent.bundle import resolve_bundles
from agent.scoring import ModelBundle, Scorer, pad_batch
from agent.settings import ScoringSettings
from core.card import ModelCard
from core.errors import ModelError
from core.features import FeatureExtractor, FeatureSpec
from core.types import SAMPLE_RATE_HZ, Features
from default_model.artefacts import (
    DEFAULT_DIR,
    FACTS_FILE,
    SOURCE_FILES,
    bundle_is_current,
    export_default_bundle,
    load_default,
)
from default_model.build import pearson, vader_scores
from default_model.corpus import load_corpus, sample_per_corpus, split_corpus
from default_model.dataset import MAX_SPEECH_S, transcript_of, window_of
from default_model.tts import HELDOUT_VOICES, TRAIN_VOICES, synthesize, voice_for

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_COMMITTED_BYTES = 10 * 1024 * 1024
SAMPLE_PER_CORPUS = 250
POSITIVE = "What a wonderful, beautiful day, I love it and I am so happy."
NEGATIVE = "This is terrible, I hate it, everything is awful and I feel miserable."


@pytest.fixture(scope="module")
def extractor(default_bundle_dir: Path) -> FeatureExtractor:
    spec = FeatureSpec.from_dict(ModelCard.read(default_bundle_dir).feature_spec)
    return FeatureExtractor(spec, default_bundle_dir, use_vision=False)


def _features(extractor: FeatureExtractor, text: str) -> Features:
    audio = synthesize(text, HELDOUT_VOICES[0])
    return extractor.extract(transcript_of(window_of(audio), text))


def _gold_text_features(extractor: FeatureExtractor, text: str, key: str) -> Features:
    """As in training: the sentence spoken by its training voice, with the gold text."""
    audio = synthesize(text, voice_for(key, TRAIN_VOICES))[: int(MAX_SPEECH_S * SAMPLE_RATE_HZ)]
    return extractor.extract(transcript_of(window_of(audio), text))


def test_committed_artefacts_are_small_and_complete() -> None:
    for name in SOURCE_FILES:
        assert (DEFAULT_DIR / name).is_file(), name
    for path in DEFAULT_DIR.rglob("*"):
        assert path.stat().st_size < MAX_COMMITTED_BYTES, path


def test_card_says_what_it_was_trained_on(default_bundle_dir: Path) -> None:
    card = ModelCard.read(default_bundle_dir)
    assert card.feature_source == "live"
    assert card.informed_modalities == ("text", "audio")
    assert set(card.uninformed_inputs) == {"vision"}
    assert not card.uninformed_inputs["vision"].as_array().any()
    assert "not a clinical instrument" in card.intended_use.lower()
    training = card.training
    assert "vaderSentiment==3.3.2" in training["data"] and "espeak-ng" in training["audio"]
    counts = training["counts"]
    assert sum(v.get("sentences", 0) for k, v in counts.items() if k.startswith("train/")) > 10000
    assert counts["train/cremad"]["clips"] > 5000  # and the voices of the CREMA-D train actors
    assert "CREMA-D" in training["audio"]
    quality = training["quality"]["test_split_gold_text"]
    assert set(quality) == {"tweets", "movie_reviews", "amazon", "nyt"}
    assert all({"pearson_ours", "pearson_vader"} <= set(q) for q in quality.values())


def test_bundle_scores_windows_in_the_agent_scorer(default_bundle_dir: Path, extractor: FeatureExtractor) -> None:
    spec = extractor.spec.to_dict()
    bundle = ModelBundle.load(default_bundle_dir, spec, providers=["CPUExecutionProvider"])
    positive, negative = _features(extractor, POSITIVE), _features(extractor, NEGATIVE)
    rng = np.random.default_rng(0)
    faced = Features(**{**{f: getattr(positive, f) for f in positive.__dataclass_fields__},
                        "vision": rng.normal(size=(20, extractor.spec.vision_dim)).astype(np.float32)})

    async def score_all() -> list[float]:
        scorer = Scorer([bundle], ScoringSettings(max_batch=4, max_wait_ms=5.0))
        scorer.start()
        try:
            results = await asyncio.gather(*(scorer.score(f) for f in (positive, negative, faced)))
        finally:
            await scorer.close()
        return [r[0].m for r in results]

    pos, neg, pos_with_face = asyncio.run(score_all())
    assert -3.5 < neg < pos < 3.5
    assert pos > 0.5 and neg < -0.5
    # the card's "no face" substitution: a real-looking face never reaches the untrained vision branch
    assert pos_with_face == pytest.approx(pos, abs=1e-5)


def test_int8_graph_ships_within_its_budget_and_keeps_the_ranking(
    extractor: FeatureExtractor, tmp_path: Path
) -> None:
    variants_dir, _ = export_default_bundle(tmp_path / "with-variants", DEFAULT_DIR)
    card = ModelCard.read(variants_dir)
    int8 = card.variant("int8")
    assert int8 is not None, "the default model's int8 graph was dropped: over its accuracy budget"
    assert int8.validation.passed and int8.validation.max_abs_diff["M"] <= 0.05 * 6
    assert card.text_packed and card.variant("fp16") is not None
    spec = extractor.spec.to_dict()
    fp32 = ModelBundle.load(variants_dir, spec, providers=["CPUExecutionProvider"])
    quantised = ModelBundle.load(variants_dir, spec, variant="int8")
    feeds = pad_batch([fp32.prepare(_features(extractor, t)) for t in (POSITIVE, NEGATIVE)])
    scores = quantised.run(feeds)["M"]
    pos, neg = scores
    assert pos > 0.5 and neg < -0.5
    assert np.abs(scores - fp32.run(feeds)["M"]).max() <= int8.validation.atol


def test_bundle_is_current_until_the_artefacts_change(default_bundle_dir: Path, tmp_path: Path) -> None:
    assert bundle_is_current(default_bundle_dir, DEFAULT_DIR)
    assert export_default_bundle(default_bundle_dir, DEFAULT_DIR, variants=False) == (default_bundle_dir, False)
    changed = tmp_path / "default"
    shutil.copytree(DEFAULT_DIR, changed)
    facts = json.loads((changed / FACTS_FILE).read_text())
    facts["model_version"] += "-edited"
    (changed / FACTS_FILE).write_text(json.dumps(facts))
    assert not bundle_is_current(default_bundle_dir, changed)
    assert not bundle_is_current(tmp_path / "missing", DEFAULT_DIR)


def test_a_different_text_encoder_is_refused(tmp_path: Path) -> None:
    changed = tmp_path / "default"
    shutil.copytree(DEFAULT_DIR, changed)
    facts = json.loads((changed / FACTS_FILE).read_text())
    facts["text_encoder"]["weights_sha256"] = "0" * 64
    (changed / FACTS_FILE).write_text(json.dumps(facts))
    with pytest.raises(ModelError, match="not the encoder the default model"):
        load_default(changed)


def test_default_bundle_is_used_only_when_none_is_configured(default_bundle_dir: Path, tmp_path: Path) -> None:
    assert resolve_bundles([tmp_path / "mine"], default=default_bundle_dir) == [tmp_path / "mine"]
    assert resolve_bundles([], default=default_bundle_dir) == [default_bundle_dir]
    with pytest.raises(ModelError, match="affectstream model bundle"):
        resolve_bundles([], default=tmp_path / "never-exported")


def test_beats_vader_on_gold_text_where_the_card_claims_it(
    default_bundle_dir: Path, extractor: FeatureExtractor
) -> None:
    """Through the exported ONNX graph, on a fixed sample of the held-out test split (gold text)."""
    card = ModelCard.read(default_bundle_dir)
    claims = card.training["quality"]["test_split_gold_text"]
    assert all(q["pearson_ours"] > q["pearson_vader"] for q in claims.values()), claims  # the build's claim
    # re-measured here where the margin is wide enough for a 250-sentence sample
    better = [c for c, q in claims.items() if q["pearson_ours"] > q["pearson_vader"] + 0.05]
    assert {"movie_reviews", "amazon"} <= set(better)
    test = split_corpus(load_corpus(REPO_ROOT / ".affectstream" / "cache" / "vader"))["test"]
    bundle = ModelBundle.load(default_bundle_dir, extractor.spec.to_dict(), providers=["CPUExecutionProvider"])
    for corpus in ("movie_reviews", "amazon"):
        sample = sample_per_corpus([s for s in test if s.corpus == corpus], SAMPLE_PER_CORPUS, seed=99)
        items = [bundle.prepare(_gold_text_features(extractor, s.text, s.key)) for s in sample]
        ours = np.concatenate([bundle.run(pad_batch(items[i: i + 32]))["M"] for i in range(0, len(items), 32)])
        labels = np.asarray([s.label for s in sample])
        vader = vader_scores([s.text for s in sample])
        assert pearson(ours, labels) > pearson(vader, labels), corpus
