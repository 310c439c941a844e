"""The audio ablation swaps the audio input that reaches the real bundle, and only that input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.scoring import ModelBundle, Scorer
from agent.settings import ScoringSettings
from bench.cremad_anchors import clip_samples
from bench.cremad_replay import ablation_audio, score_ablated, task_score, with_audio
from bench.default_model import Pipeline
from core.features import FeatureExtractor, FeatureSpec
from core.speaker_reference import centred, own_reference, without_quiet_edges
from core.types import Features
from default_model.cremad import DEFAULT_CREMAD_DIR, load_clips
from default_model.dataset import transcript_of, window_of

CLIPS = ("1001_DFA_ANG_XX", "1001_DFA_HAP_XX", "1001_DFA_NEU_XX", "1001_DFA_SAD_XX")
HEAD_MOVES = 1e-3  # an audio head whose output moves less than this over real voices ignores its input


@pytest.fixture(scope="module")
def bundle(default_bundle_dir: Path) -> ModelBundle:
    return ModelBundle.load(default_bundle_dir, None, providers=["CPUExecutionProvider"], variant="fp32")


@pytest.fixture(scope="module")
def features(bundle: ModelBundle) -> list[Features]:
    """Four real takes of actor 1001, whole clip, with the sentence they read (no Whisper needed here)."""
    spec = FeatureSpec.from_dict(bundle.card.feature_spec)
    extractor = FeatureExtractor(spec, bundle.tokenizer_dir, use_vision=False)
    clips = {c.name: c for c in load_clips(DEFAULT_CREMAD_DIR) if c.name in CLIPS}
    return [
        extractor.extract(transcript_of(window_of(clip_samples(DEFAULT_CREMAD_DIR / clips[n].file)), clips[n].sentence))
        for n in CLIPS
    ]


def test_with_audio_changes_the_audio_only(bundle: ModelBundle, features: list[Features]) -> None:
    ablation = ablation_audio(bundle.card)
    recipe = bundle.card.audio_reference
    assert recipe is not None

    def fed(audio: np.ndarray) -> np.ndarray:
        gated = centred(audio, own_reference(audio), recipe.columns, quiet_gate=recipe.quiet_gate)
        return without_quiet_edges(gated, recipe.quiet_edge_rows) if recipe.trim_quiet_edges else gated

    assert ablation.audio.shape == (51, int(bundle.card.input_info("audio").shape[-1]))  # 1 s at 50 frames/s
    for original in features:
        ablated = with_audio(original, ablation.audio)
        assert ablated.audio is ablation.audio
        assert ablated.transcript is original.transcript and ablated.vision is original.vision
        np.testing.assert_array_equal(ablated.input_ids, original.input_ids)
        # what the graph is fed: the clip's own audio, and the ablation row once ablated, each relative to its own
        # frames (no speaker reference here; an ablated window never carries one, so every clip's is the same);
        # the card substitutes no audio: an uninformed audio row would make the ablation a no-op
        assert "audio" not in bundle.card.uninformed_inputs and ablated.audio_reference is None
        np.testing.assert_allclose(bundle.prepare(original).audio, fed(original.audio), atol=1e-6)
        np.testing.assert_allclose(bundle.prepare(ablated).audio, fed(ablation.audio), atol=1e-6)
        assert original.audio.shape[0] > 50  # > 1 s of real audio, not a row of zeros
        assert np.abs(original.audio).sum() > 1.0


async def test_ablated_scores_differ_where_the_audio_head_listens(
    bundle: ModelBundle, features: list[Features]
) -> None:
    scorer = Scorer([bundle], ScoringSettings(max_batch=8, max_wait_ms=0.0))
    scorer.start()
    try:
        ablation = ablation_audio(bundle.card)
        own = [task_score(await scorer.score(f)) for f in features]
        ablated = [await score_ablated(scorer, f, ablation) for f in features]
    finally:
        await scorer.close()
    a = np.array([s.a for s in own])
    a_ablated = np.array([s.a for s in ablated])
    assert np.ptp(a_ablated) < 1e-4  # one audio input: one audio-head output, whatever the text
    assert np.ptp(a) > HEAD_MOVES, f"model {bundle.card.model_version}: the audio head gives {a[0]:.4f} for every voice"
    assert np.abs(a - a_ablated).max() > HEAD_MOVES
    assert np.abs(np.array([s.m for s in own]) - np.array([s.m for s in ablated])).max() > HEAD_MOVES


async def test_the_rated_sentence_bench_can_score_m_with_the_audio_ablated(
    default_bundle_dir: Path, features: list[Features]
) -> None:
    # bench/default_model.py --audio-ablated: whether the voice moves M on the rated sentences (the same words here)
    m: dict[bool, np.ndarray] = {}
    for ablated in (False, True):
        pipe = Pipeline(default_bundle_dir, audio_ablated=ablated)
        pipe.scorer.start()
        try:
            m[ablated] = np.array([await pipe.score(f) for f in features])
        finally:
            await pipe.scorer.close()
    assert np.ptp(m[True]) < 1e-4  # one sentence, one audio input: one M
    assert np.ptp(m[False]) > HEAD_MOVES  # the four voices move M when they are heard
