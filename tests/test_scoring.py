"""The scorer: bundle checks, padding, micro-batching across streams, several bundles, uninformed inputs."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from tiny_selfmm import AUDIO_DIM, VISION_DIM, export_tiny_bundle, make_tiny_encoder, tiny_feature_spec

from agent.bundle import ModelBundle, ModelInputs
from agent.runtime import load_bundles
from agent.scoring import Scorer, length_runs, pad_batch, split_cost_tokens
from agent.settings import ScoringSettings
from core.card import UninformedInput
from core.errors import ModelError
from core.features import FeatureSpec
from core.speaker_reference import (
    FLOOR_BELS,
    FRAMES,
    LOUDEST_WITHIN_BELS,
    QUIET_LEVEL_BELS,
    ReferenceRecipe,
    counted_frames,
    loud_frames,
    own_reference,
    quiet_rows,
)
from core.types import Features, StreamId, Transcript, Window

pytestmark = pytest.mark.integration  # real ONNX Runtime sessions on exported graphs


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_encoder(tmp_path_factory.mktemp("encoder") / "encoder")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, encoder: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scoring")
    no_face = UninformedInput(rows=((0.0,) * VISION_DIM,), reason="test: vision not informed")
    return {
        "sentiment": export_tiny_bundle(encoder, root / "sentiment", seed=1),
        "depression": export_tiny_bundle(encoder, root / "depression", seed=2, task="depression"),
        "no_vision": export_tiny_bundle(
            encoder,
            root / "no_vision",
            seed=1,
            informed_modalities=("text", "audio"),
            uninformed_inputs={"vision": no_face},
        ),
    }


def make_features(
    seed: int,
    *,
    stream: str = "s0",
    seq: int = 0,
    vision: np.ndarray | None = None,
    audio_dim: int = AUDIO_DIM,
) -> Features:
    rng = np.random.default_rng(seed)
    n_tokens, n_audio, n_vision = (
        int(rng.integers(3, 40)),
        int(rng.integers(1, 150)),
        int(rng.integers(1, 30)),
    )
    ids = np.concatenate([[2], rng.integers(5, 60, n_tokens - 2), [3]]).astype(np.int64)
    window = Window(StreamId("call-1", stream), seq, 0.0, 1.0, np.zeros(16, np.float32), (), "utterance")
    return Features(
        transcript=Transcript(window, "", (), "en", 0.0, 0.0),
        input_ids=ids,
        attention_mask=np.ones_like(ids),
        token_type_ids=np.zeros_like(ids),
        audio=rng.standard_normal((n_audio, audio_dim)).astype(np.float32),
        vision=vision if vision is not None else rng.standard_normal((n_vision, VISION_DIM)).astype(np.float32),
        speech_ratio=1.0,
        face_visible_ratio=1.0,
        latency_ms=0.0,
    )


def test_pad_batch_pads_to_the_longest_and_keeps_true_lengths() -> None:
    a = ModelInputs(
        np.array([2, 7, 3]),
        np.ones(3, np.int64),
        np.zeros(3, np.int64),
        np.ones((4, 2), np.float32),
        np.ones((1, 3), np.float32),
    )
    b = ModelInputs(
        np.array([2, 3]),
        np.ones(2, np.int64),
        np.zeros(2, np.int64),
        np.full((1, 2), 5, np.float32),
        np.full((6, 3), 7, np.float32),
    )
    feeds = pad_batch([a, b])
    assert feeds["input_ids"].tolist() == [[2, 7, 3], [2, 3, 0]]
    assert feeds["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert feeds["audio"].shape == (2, 4, 2) and feeds["audio_lengths"].tolist() == [4, 1]
    assert feeds["audio"][1, 1:].sum() == 0 and feeds["audio"][1, 0].tolist() == [5, 5]
    assert feeds["vision"].shape == (2, 6, 3) and feeds["vision_lengths"].tolist() == [1, 6]
    assert feeds["input_ids"].dtype == np.int64 and feeds["vision"].dtype == np.float32


def test_load_refuses_other_features_and_modified_graphs(bundles: dict[str, Path], tmp_path: Path) -> None:
    other = dict(tiny_feature_spec(), audio_dim=29)
    with pytest.raises(ModelError, match="audio_dim: model 5 != agent 29"):
        ModelBundle.load(bundles["sentiment"], other)
    copy = tmp_path / "tampered"
    copy.mkdir()
    for path in bundles["sentiment"].iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    (copy / "model.onnx").write_bytes((copy / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(ModelError, match="sha256"):
        ModelBundle.load(copy, tiny_feature_spec())
    with pytest.raises(ModelError, match="no card.json"):
        ModelBundle.load(tmp_path, tiny_feature_spec())


def test_load_logs_the_provider_that_runs(bundles: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.bundle")
    bundle = ModelBundle.load(
        bundles["sentiment"], tiny_feature_spec(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert bundle.providers[0] == "CPUExecutionProvider"  # no GPU here
    assert bundle.graph_name == "fp32"
    assert "runs on CPUExecutionProvider" in caplog.text


async def _score_all(scorer: Scorer, streams: list[list[Features]]) -> list[list[tuple]]:
    async def one_stream(items: list[Features]) -> list[tuple]:
        return [await scorer.score(f) for f in items]

    scorer.start()
    try:
        return list(await asyncio.gather(*(one_stream(items) for items in streams)))
    finally:
        await scorer.close()


def test_length_runs_cut_where_padding_costs_more_than_a_run() -> None:
    lengths = [40, 5, 6, 41, 5, 39, 6, 40]
    runs = length_runs(lengths, split_cost_tokens=32)
    assert sorted(i for run in runs for i in run) == list(range(len(lengths)))  # every row once
    assert [sorted(lengths[i] for i in run) for run in runs] == [[5, 5, 6, 6], [39, 40, 40, 41]]
    assert length_runs(lengths, split_cost_tokens=0) == [sorted(range(8), key=lambda i: lengths[i])]
    assert len(length_runs(lengths, split_cost_tokens=10_000)) == 1  # a run costs more than any padding
    assert length_runs([], 32) == [] and length_runs([7], 32) == [[0]]


def _load(bundles: dict[str, Path], *names: str) -> list[ModelBundle]:
    return [ModelBundle.load(bundles[n], tiny_feature_spec()) for n in names]


@pytest.mark.parametrize("split_cost_tokens", [None, 0, 8])  # None: the default, one call for packed graphs
async def test_32_concurrent_streams_score_exactly_as_one_at_a_time(
    bundles: dict[str, Path], split_cost_tokens: int | None
) -> None:
    streams = [[make_features(100 * s + k, stream=f"p{s}", seq=k) for k in range(3)] for s in range(32)]
    loaded = _load(bundles, "sentiment", "depression")
    settings = ScoringSettings(max_batch=16, max_wait_ms=20, split_cost_tokens=split_cost_tokens)
    batched = Scorer(loaded, settings)
    got = await _score_all(batched, streams)
    single = Scorer(loaded, ScoringSettings(max_batch=1, max_wait_ms=0))
    want = await _score_all(single, [[f] for items in streams for f in items])
    assert max(s.batch_size for s in batched.stats) > 1  # it really batched
    runs_per_bundle = max(s.runs for s in batched.stats) / len(loaded)
    assert runs_per_bundle == 1 if split_cost_tokens in (None, 0) else runs_per_bundle > 1  # rows reordered
    assert max(s.batch_size for s in single.stats) == 1
    flat_got = [scores for items in got for scores in items]
    flat_want = [scores for (scores,) in want]
    for got_scores, want_scores in zip(flat_got, flat_want, strict=True):
        assert [t.task for t in got_scores] == ["sentiment", "depression"]
        for g, w in zip(got_scores, want_scores, strict=True):
            for field in ("m", "t", "a", "v"):
                assert abs(getattr(g, field) - getattr(w, field)) <= 1e-5
    depression = flat_got[0][1]
    assert (depression.label_min, depression.label_max) == (0.0, 24.0)
    assert depression.model_id == "tiny-depression-2"


async def test_uninformed_vision_gets_the_cards_neutral_input(bundles: dict[str, Path]) -> None:
    no_vision, with_vision = _load(bundles, "no_vision", "sentiment")  # same weights (seed 1)
    base = make_features(7)
    face = make_features(7, vision=np.full((12, VISION_DIM), 3.0, np.float32))
    scorer = Scorer([no_vision, with_vision], ScoringSettings(max_batch=4, max_wait_ms=5))
    (a,), (b,) = await _score_all(scorer, [[base], [face]])
    assert a[0].m == pytest.approx(b[0].m, abs=1e-6)  # live vision never reaches the untrained branch
    assert abs(a[1].m - b[1].m) > 1e-4  # while a model that was trained on vision does see it
    neutral = make_features(7, vision=np.zeros((1, VISION_DIM), np.float32))
    direct = with_vision.run(pad_batch([with_vision.prepare(neutral)]))["M"][0]
    assert a[0].m == pytest.approx(float(direct), abs=1e-6)


async def test_zero_wait_still_batches_windows_that_are_already_queued(bundles: dict[str, Path]) -> None:
    scorer = Scorer(_load(bundles, "sentiment"), ScoringSettings(max_batch=8, max_wait_ms=0))
    results = await _score_all(scorer, [[make_features(i)] for i in range(8)])
    assert [len(scores) for (scores,) in results] == [1] * 8
    assert max(s.batch_size for s in scorer.stats) > 1
    assert sum(s.batch_size for s in scorer.stats) == 8


async def test_a_bad_window_fails_alone(bundles: dict[str, Path]) -> None:
    scorer = Scorer(_load(bundles, "sentiment"), ScoringSettings(max_batch=8, max_wait_ms=50))
    scorer.start()
    try:
        good = asyncio.ensure_future(scorer.score(make_features(1)))
        bad = asyncio.ensure_future(scorer.score(make_features(2, audio_dim=7)))
        await asyncio.wait([good, bad])
    finally:
        await scorer.close()
    assert len(good.result()) == 1
    with pytest.raises(ModelError, match=r"audio features must be \[frames, 5\]"):
        bad.result()
    assert scorer.stats[0].batch_size == 2


async def test_close_fails_waiting_windows(bundles: dict[str, Path]) -> None:
    scorer = Scorer(_load(bundles, "sentiment"), ScoringSettings(max_batch=64, max_wait_ms=10_000))
    scorer.start()
    pending = asyncio.ensure_future(scorer.score(make_features(3)))
    await asyncio.sleep(0.05)
    await scorer.close()
    with pytest.raises(ModelError):
        await pending


def test_split_cost_defaults_to_one_call_for_packed_graphs(bundles: dict[str, Path]) -> None:
    (bundle,) = _load(bundles, "sentiment")
    assert bundle.card.text_packed
    assert split_cost_tokens(bundle, ScoringSettings()) == 0
    assert split_cost_tokens(bundle, ScoringSettings(split_cost_tokens=8)) == 8  # an explicit setting wins
    bundle.card = replace(bundle.card, text_packed=False)  # a bundle exported before packing
    assert split_cost_tokens(bundle, ScoringSettings()) == 32


def test_only_right_padded_text_is_scored(bundles: dict[str, Path]) -> None:
    (bundle,) = _load(bundles, "sentiment")
    padded = replace(make_features(1), attention_mask=np.array([1, 1, 1, 0]), input_ids=np.array([2, 9, 3, 0]),
                     token_type_ids=np.zeros(4, np.int64))
    assert bundle.prepare(padded).attention_mask.tolist() == [1, 1, 1, 0]
    for mask in ([0, 1, 1, 1], [1, 0, 1, 1], [1, 2, 1, 1]):
        with pytest.raises(ModelError, match="right padding"):
            bundle.prepare(replace(padded, attention_mask=np.array(mask)))


# -- the runtime's bundles (agent/runtime.py load_bundles) -----------------------------------------------------


@pytest.fixture(scope="module")
def agent_spec_bundle(tmp_path_factory: pytest.TempPathFactory, encoder: Path) -> Path:
    """A tiny bundle whose card holds a whole FeatureSpec, as the bundles the runtime loads do."""
    spec = replace(FeatureSpec.for_tokenizer(encoder), audio_dim=AUDIO_DIM, vision_dim=VISION_DIM)
    return export_tiny_bundle(encoder, tmp_path_factory.mktemp("agent-spec") / "bundle", feature_spec=spec.to_dict())


def test_the_runtime_opens_each_bundle_once(agent_spec_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    open_session = ort.InferenceSession

    def counted(path: str, *args: Any, **kwargs: Any) -> Any:
        opened.append(path)
        return open_session(path, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", counted)
    scoring = ScoringSettings(bundles=[agent_spec_bundle], providers=["CPUExecutionProvider"])
    (bundle,), spec = load_bundles(scoring)
    assert len(opened) == 1  # the feature spec comes from the card, not from a session of its own
    assert spec.to_dict() == bundle.card.feature_spec


@pytest.mark.parametrize("spinning", [False, True])
def test_the_runtimes_sessions_take_the_thread_settings(agent_spec_bundle: Path, spinning: bool) -> None:
    scoring = ScoringSettings(
        bundles=[agent_spec_bundle], providers=["CPUExecutionProvider"], intra_op_threads=2,
        intra_op_spinning=spinning,
    )  # fmt: skip
    (bundle,), _ = load_bundles(scoring)
    options = bundle.session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if spinning else "0")


# -- a model that reads the voice relative to the speaker (card audio_reference, core/speaker_reference.py) ----


@pytest.fixture(scope="module")
def speaker_bundle(tmp_path_factory: pytest.TempPathFactory, encoder: Path) -> Path:
    return export_tiny_bundle(encoder, tmp_path_factory.mktemp("speaker") / "bundle", seed=1,
                              audio_reference=ReferenceRecipe.of((0, 2)))


def test_the_speaker_reference_is_subtracted_from_the_cards_columns(speaker_bundle: Path) -> None:
    bundle = ModelBundle.load(speaker_bundle, tiny_feature_spec(), providers=["CPUExecutionProvider"])
    features = make_features(3)
    reference = np.arange(AUDIO_DIM, dtype=np.float32) + 1.0
    prepared = bundle.prepare(replace(features, audio_reference=reference))
    counted = counted_frames(features.audio)  # column 2 is the pitch: relative where counted, 0 elsewhere
    assert 0 < counted.sum() < len(counted)
    expected = features.audio.copy()
    expected[:, 0] -= reference[0]
    expected[:, 2] = np.where(counted, expected[:, 2] - reference[2], 0.0)
    np.testing.assert_allclose(prepared.audio, expected)
    alone = bundle.prepare(features)  # no reference known: the window's own frames
    own = own_reference(features.audio)
    expected = features.audio.copy()
    expected[:, 0] -= own[0]
    expected[:, 2] = np.where(counted, expected[:, 2] - own[2], 0.0)
    np.testing.assert_allclose(alone.audio, expected, atol=1e-6)
    with pytest.raises(ModelError, match="audio_reference must be"):
        bundle.prepare(replace(features, audio_reference=np.zeros(3, np.float32)))


async def test_the_same_window_scores_differently_against_another_speakers_reference(speaker_bundle: Path) -> None:
    bundle = ModelBundle.load(speaker_bundle, tiny_feature_spec(), providers=["CPUExecutionProvider"])
    features = make_features(4)
    quiet, loud = (replace(features, audio_reference=np.full(AUDIO_DIM, level, np.float32)) for level in (-4.0, 2.0))
    scorer = Scorer([bundle], ScoringSettings(max_batch=4, max_wait_ms=5))
    (a,), (b,) = await _score_all(scorer, [[quiet], [loud]])
    assert abs(a[0].m - b[0].m) > 1e-4


def _with_reference(bundle: Path, copy: Path, **reference: Any) -> dict[str, Any]:
    """A copy of `bundle` whose card's audio_reference has `reference` set; the card as written."""
    copy.mkdir(exist_ok=True)
    for path in bundle.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    card = json.loads((copy / "card.json").read_text())
    card["audio_reference"].update(reference)
    (copy / "card.json").write_text(json.dumps(card))
    return card


def test_load_refuses_a_reference_taken_another_way(speaker_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "other-floor"
    card = _with_reference(speaker_bundle, copy, floor_bels=-6.0)
    with pytest.raises(ModelError, match="speaker reference taken another way"):
        ModelBundle.load(copy, tiny_feature_spec())
    card["audio_reference"] = {"columns": [0, 7], "floor_bels": FLOOR_BELS, "frames": FRAMES,
                               "loudest_within_bels": LOUDEST_WITHIN_BELS}
    (copy / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="outside the graph's 5 audio columns"):
        ModelBundle.load(copy, tiny_feature_spec())
    card["audio_reference"] = {**card["audio_reference"], "columns": [0], "voiced_only": [2]}  # another agent's rule
    (copy / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="malformed model card.*which this agent does not apply"):
        ModelBundle.load(copy, tiny_feature_spec())


def test_a_card_with_the_quiet_gate_gets_its_quiet_frames_as_one_row(speaker_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "gated"
    _with_reference(speaker_bundle, copy, quiet_gate=True)
    gated = ModelBundle.load(copy, tiny_feature_spec(), providers=["CPUExecutionProvider"])
    plain = ModelBundle.load(speaker_bundle, tiny_feature_spec(), providers=["CPUExecutionProvider"])
    features = make_features(3)
    quiet = ~loud_frames(features.audio)
    assert 0 < quiet.sum() < len(quiet)
    prepared, before = gated.prepare(features).audio, plain.prepare(features).audio
    np.testing.assert_array_equal(prepared[~quiet], before[~quiet])
    assert (prepared[quiet, 1:] == 0).all() and (prepared[quiet, 0] == QUIET_LEVEL_BELS).all()


def test_a_card_that_trims_quiet_edges_scores_a_window_wherever_the_vad_cut_it(
    speaker_bundle: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "trimmed"
    _with_reference(speaker_bundle, copy, quiet_gate=True, trim_quiet_edges=True)
    trimmed = ModelBundle.load(copy, tiny_feature_spec(), providers=["CPUExecutionProvider"])
    features = replace(make_features(3), audio_reference=np.ones(AUDIO_DIM, np.float32))
    pause = np.zeros((1, AUDIO_DIM), np.float32)
    pause[0, 0] = FLOOR_BELS - 3.0  # unvoiced and quiet: what the VAD's padding holds
    later = replace(features, audio=np.concatenate([np.repeat(pause, 6, axis=0), features.audio,
                                                    np.repeat(pause, 9, axis=0)]))
    prepared, moved = trimmed.prepare(features).audio, trimmed.prepare(later).audio
    np.testing.assert_array_equal(prepared, moved)
    loud = np.flatnonzero(loud_frames(features.audio))
    assert len(prepared) == loud[-1] - loud[0] + 1 < len(later.audio)
    outputs = [trimmed.run(pad_batch([trimmed.prepare(f)]))["M"][0] for f in (features, later)]
    assert outputs[0] == outputs[1]
    untrimmed = ModelBundle.load(speaker_bundle, tiny_feature_spec(), providers=["CPUExecutionProvider"])
    assert len(untrimmed.prepare(later).audio) == len(later.audio)  # a card without the trim reads every frame

    # a card that puts 4 gated rows back at each edge: the same input for every cut, 4 + the speech + 4 rows
    edged = tmp_path / "edged"
    _with_reference(speaker_bundle, edged, quiet_gate=True, trim_quiet_edges=True, quiet_edge_rows=4)
    kept = ModelBundle.load(edged, tiny_feature_spec(), providers=["CPUExecutionProvider"])
    further = replace(features, audio=np.concatenate([np.repeat(pause, 11, axis=0), features.audio,
                                                      np.repeat(pause, 5, axis=0)]))
    inputs = [kept.prepare(f).audio for f in (features, later, further)]
    np.testing.assert_array_equal(inputs[0], inputs[1])
    np.testing.assert_array_equal(inputs[0], inputs[2])
    assert len(inputs[0]) == len(prepared) + 8
    assert quiet_rows(inputs[0][:4]).all() and quiet_rows(inputs[0][-4:]).all()
