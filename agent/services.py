"""Builds the process-wide components every stream shares, once, from settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from agent.bundle import ModelBundle, resolve_bundles
from agent.pipeline import Services
from agent.publish import Publisher
from agent.scoring import Scorer
from agent.settings import Settings
from agent.speech import SpeechRecognizer
from agent.vad import SileroVad
from core.features import FeatureExtractor, FeatureSpec
from core.types import Score, Transcript

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    services: Services
    publisher: Publisher | None
    bundles: tuple[ModelBundle, ...]


def load_bundles(settings: Settings) -> tuple[tuple[ModelBundle, ...], FeatureSpec]:
    """The configured (or default) bundles; all must ask for the same features, which the agent computes."""
    paths = resolve_bundles([Path(p) for p in settings.scoring.bundles])
    first = ModelBundle.load(
        paths[0], None, providers=settings.scoring.providers, variant=settings.scoring.graph_variant,
        intra_op_threads=settings.scoring.intra_op_threads,
    )
    spec = FeatureSpec.from_dict(first.card.feature_spec)
    agent_spec = spec.to_dict()
    bundles = [
        ModelBundle.load(
            path, agent_spec, providers=settings.scoring.providers, variant=settings.scoring.graph_variant,
            intra_op_threads=settings.scoring.intra_op_threads,
        )
        for path in paths
    ]
    return tuple(bundles), spec


def _vision_needed(bundles: tuple[ModelBundle, ...]) -> bool:
    return any("vision" not in bundle.card.uninformed_inputs for bundle in bundles)


@dataclass
class _Models:
    bundles: tuple[ModelBundle, ...]
    extractor: FeatureExtractor
    recognizer: SpeechRecognizer
    scorer: Scorer
    vad: SileroVad


def _load_models(settings: Settings) -> _Models:
    """Blocking (seconds): bundles, feature extractor, Whisper, scorer and VAD."""
    bundles, spec = load_bundles(settings)
    extractor = FeatureExtractor(spec, bundles[0].tokenizer_dir, use_vision=_vision_needed(bundles))
    return _Models(bundles, extractor, SpeechRecognizer(settings.speech), Scorer(bundles, settings.scoring),
                   SileroVad())  # fmt: skip


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings, *, publish: bool = True, replay: bool = False
) -> AsyncIterator[Runtime]:
    """Load models (off the event loop, so a server already listening keeps answering), connect the
    publisher; everything is released on exit (publisher flushed first)."""
    models = await asyncio.to_thread(_load_models, settings)
    publisher = Publisher(settings.kafka, settings.publish) if publish else None
    services = Services(
        window_settings=settings.windows,
        vad=models.vad,
        recognizer=models.recognizer,
        extractor=models.extractor,
        scorer=models.scorer,
        queue_windows=settings.ingest.queue_windows,
    )
    try:
        if publisher is not None:
            await publisher.start()
            services.score_sinks.append(_score_publisher(publisher, replay))
            if settings.publish.transcripts_enabled:
                services.transcript_sinks.append(_transcript_publisher(publisher, replay))
        models.scorer.start()
        yield Runtime(services, publisher, models.bundles)
    finally:
        await models.scorer.close()
        if publisher is not None:
            await publisher.close()
        models.recognizer.close()
        models.extractor.close()


def _score_publisher(publisher: Publisher, replay: bool):  # type: ignore[no-untyped-def]
    async def sink(score: Score) -> None:
        await publisher.publish_score(score, replay=replay)

    return sink


def _transcript_publisher(publisher: Publisher, replay: bool):  # type: ignore[no-untyped-def]
    async def sink(transcript: Transcript) -> None:
        await publisher.publish_transcript(transcript, replay=replay)

    return sink

