"""CREMA-D clips through the real replay path, each window scored again with its audio input ablated.

Every clip is a replayed file (`agent.replay.replay`, direct, fast, no shedding) through one runtime
(`agent.runtime.open_runtime`: Silero VAD windows, Whisper, `FeatureExtractor`, the ONNX `Scorer`); an actor's
clips are one call, replayed one after another on one stream (`actor_calls`), the actors' calls side by side.
A score sink keeps, per window, its duration and outputs, and scores the window's own Features once more with
the audio replaced (`ablation_audio`), so the ablation needs no second Whisper pass.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.file_source import PARTICIPANT_ID, ReplaySource
from agent.replay import ReplayOptions, replay
from agent.runtime import open_runtime
from agent.settings import Settings
from agent.stages import ScoringStage
from bench.cremad_metrics import WindowScore
from core.card import ModelCard
from core.features_audio import audio_features
from core.types import SAMPLE_RATE_HZ, Features, Score, StreamId, TaskScore
from models.adapters.crema_d import CremaClip

log = logging.getLogger(__name__)

TASK = "sentiment"
CALL_ORDER_SEED = 0


@dataclass(frozen=True, slots=True)
class Ablation:
    """The audio input that stands for "no audio", and where it came from."""

    audio: np.ndarray  # float32 [n, audio_dim]
    source: str


@dataclass(frozen=True, slots=True)
class ReplayedClips:
    windows: dict[str, list[WindowScore]]  # clip name -> its windows, in order (empty: no window)
    failed_windows: int
    errors: dict[str, str]  # clip name -> why its replay failed
    ablation: Ablation
    model_version: str
    wall_s: float


SILENCE_S = 1.0


def ablation_audio(card: ModelCard) -> Ablation:
    """The card's uninformed audio row when it has one (a model whose audio learned nothing); else the
    descriptors of one second of digital silence, as the agent computes them: the same input for every clip,
    a voice with nothing in it. (All-zero descriptors would not be silence: 0 is full-scale loudness.)"""
    uninformed = card.uninformed_inputs.get("audio")
    if uninformed is not None:
        return Ablation(uninformed.as_array(), "the model card's uninformed audio row")
    silence = audio_features(np.zeros(int(SILENCE_S * SAMPLE_RATE_HZ), np.float32))
    return Ablation(silence, f"the audio descriptors of {SILENCE_S:g} s of silence (no uninformed audio row)")


def with_audio(features: Features, audio: np.ndarray) -> Features:
    """The same window's features with another audio input (text, vision and transcript unchanged), read on its
    own: no speaker reference, so every clip's ablated input is the same."""
    return dataclasses.replace(features, audio=audio, audio_reference=None)


def task_score(tasks: Sequence[TaskScore]) -> TaskScore:
    return next(t for t in tasks if t.task == TASK)


async def score_ablated(scorer: ScoringStage, features: Features, ablation: Ablation) -> TaskScore:
    return task_score(await scorer.score(with_audio(features, ablation.audio)))


def replay_settings(bundle: Path, variant: str) -> Settings:
    return Settings(scoring={"bundles": [bundle], "providers": ["CPUExecutionProvider"], "graph_variant": variant})


def actor_calls(clips: Sequence[CremaClip], seed: int = CALL_ORDER_SEED) -> dict[str, list[CremaClip]]:
    """Each actor's clips in a seeded random order: the clips of one call, moods mixed as a conversation's are."""
    calls: dict[str, list[CremaClip]] = {}
    for clip in clips:
        calls.setdefault(clip.actor, []).append(clip)
    rng = np.random.default_rng(seed)
    return {actor: [own[i] for i in rng.permutation(len(own))] for actor, own in sorted(calls.items())}


async def replay_clips(clips: Sequence[CremaClip], cremad_dir: Path, settings: Settings) -> ReplayedClips:
    """Replay every clip once; per clip, its windows' outputs with and without audio.

    Each actor is one participant of one call (`actor_calls`): their clips are replayed one after another on the
    same stream, so the speaker reference the pipeline keeps for them (core/speaker_reference.py) has heard their
    earlier clips, as it would have heard a patient's earlier speech; the actors' calls run concurrently so the
    scorer batches across them."""
    card = ModelCard.read(Path(settings.scoring.bundles[0]))
    ablation = ablation_audio(card)
    windows: dict[str, list[WindowScore]] = {clip.name: [] for clip in clips}
    now_playing: dict[str, str] = {}  # call id -> the clip it is replaying
    pending: list[asyncio.Task[None]] = []
    started = time.perf_counter()
    failed, errors, done = 0, {}, 0
    async with open_runtime(settings, publish=False, replay=True) as runtime:
        scorer = runtime.pipeline.scorer

        async def keep(score: Score, slot: list[WindowScore]) -> None:
            own, ablated = task_score(score.tasks), await score_ablated(scorer, score.features, ablation)
            slot.append(WindowScore(score.window.duration_s, own.m, own.a, ablated.m, ablated.a,
                                    score.features.transcript.text.strip()))  # fmt: skip

        async def sink(score: Score) -> None:
            # the ablated scoring runs beside the pipeline, so the scorer batches it with other windows
            slot = windows[now_playing[score.window.stream.call_id]]
            pending.append(asyncio.create_task(keep(score, slot)))

        pipeline = runtime.pipeline.with_sinks(scores=[sink])
        options = ReplayOptions(pace="fast", via="direct", progress=False)

        async def call(actor: str, own: list[CremaClip]) -> None:
            nonlocal failed, done
            stream = StreamId(f"cremad-actor-{actor}", PARTICIPANT_ID)
            for clip in own:
                now_playing[stream.call_id] = clip.name
                summary = await replay([ReplaySource(stream, Path(cremad_dir) / clip.file)], pipeline, settings,
                                       options)
                for result in summary.files:
                    failed += result.failed
                    if result.error:
                        errors[clip.name] = result.error
                done += 1
                if done % 100 == 0:
                    log.info("CREMA-D replay: %d/%d clips", done, len(clips))

        await asyncio.gather(*(call(actor, own) for actor, own in actor_calls(clips).items()))
        await asyncio.gather(*pending)
    return ReplayedClips(windows, failed, errors, ablation, card.model_version, time.perf_counter() - started)
