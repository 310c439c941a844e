"""The process's runtime: every stage loaded once from settings, the publisher connected, one pipeline.

`open_runtime` gives the pipeline its sinks when it builds it: the publisher's first (when publishing), then
the caller's, in the order given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.bundle import ModelBundle, resolve_bundles
from agent.pipeline import Pipeline
from agent.publish import Publisher
from agent.scoring import Scorer
from agent.settings import ScoringSettings, Settings
from agent.speech import SpeechRecognizer
from agent.stages import ScoreSink, TranscriptSink
from agent.vad import SileroVad
from core.card import ModelCard
from core.features import FeatureExtractor, FeatureSpec
from core.types import Score, Transcript

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Runtime:
    """What `open_runtime` holds open: the pipeline built with its sinks, the publisher, the loaded bundles."""

    pipeline: Pipeline
    publisher: Publisher | None
    bundles: tuple[ModelBundle, ...]


def load_bundles(scoring: ScoringSettings) -> tuple[tuple[ModelBundle, ...], FeatureSpec]:
    """The configured (or default) bundles, each opened once with the scoring settings' session options;
    all must ask for the features of the first one's card, which the agent computes."""
    paths = resolve_bundles([Path(p) for p in scoring.bundles])
    spec = FeatureSpec.from_dict(ModelCard.read(paths[0]).feature_spec)
    agent_spec = spec.to_dict()
    bundles = tuple(
        ModelBundle.load(
            path, agent_spec, providers=scoring.providers, variant=scoring.graph_variant,
            intra_op_threads=scoring.intra_op_threads, intra_op_spinning=scoring.intra_op_spinning,
        )
        for path in paths
    )  # fmt: skip
    return bundles, spec


def _vision_needed(bundles: tuple[ModelBundle, ...]) -> bool:
    return any("vision" not in bundle.card.uninformed_inputs for bundle in bundles)


@dataclass
class _Models:
    bundles: tuple[ModelBundle, ...]
    extractor: FeatureExtractor
    recognizer: SpeechRecognizer
    scorer: Scorer
    vad: SileroVad


def _load_models(settings: Settings, words_needed: bool) -> _Models:
    """Blocking (seconds): bundles, feature extractor, Whisper, scorer and VAD."""
    bundles, spec = load_bundles(settings.scoring)
    extractor = FeatureExtractor(spec, bundles[0].tokenizer_dir, use_vision=_vision_needed(bundles))
    recognizer = SpeechRecognizer(settings.speech, words_needed=words_needed)
    return _Models(bundles, extractor, recognizer, Scorer(bundles, settings.scoring), SileroVad())


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    publish: bool = True,
    replay: bool = False,
    score_sinks: Sequence[ScoreSink] = (),
    transcript_sinks: Sequence[TranscriptSink] = (),
) -> AsyncIterator[Runtime]:
    """Load models (off the event loop, so a server already listening keeps answering), connect the
    publisher; everything is released on exit (publisher flushed first).

    The pipeline's score sinks are the publisher's (when `publish`), then `score_sinks`; its transcript
    sinks the publisher's (when `publish.transcripts_enabled`), then `transcript_sinks`. The publisher's
    sinks only hand the result over (agent/publish.py owns acks, retries and the spool); everything handed
    over is acknowledged or spooled before this context exits.
    """
    # word times are only read from published or written transcripts
    words_needed = bool(transcript_sinks) or (publish and settings.publish.transcripts_enabled)
    models = await asyncio.to_thread(_load_models, settings, words_needed)
    publisher = Publisher(settings.kafka, settings.publish) if publish else None
    try:
        pipeline = Pipeline(
            window_settings=settings.windows,
            vad=models.vad,
            recognizer=models.recognizer,
            extractor=models.extractor,
            scorer=models.scorer,
            queue_windows=settings.ingest.queue_windows,
        )
        if publisher is not None:
            await publisher.start()
            transcripts_published = settings.publish.transcripts_enabled
            pipeline = pipeline.with_sinks(
                scores=[_score_publisher(publisher, replay)],
                transcripts=[_transcript_publisher(publisher, replay)] if transcripts_published else [],
            )
        models.scorer.start()
        yield Runtime(pipeline.with_sinks(score_sinks, transcript_sinks), publisher, models.bundles)
    finally:
        await models.scorer.close()
        if publisher is not None:
            await publisher.close()
        models.recognizer.close()
        models.extractor.close()


def _score_publisher(publisher: Publisher, replay: bool) -> ScoreSink:
    async def sink(score: Score) -> None:
        publisher.enqueue_score(score, replay=replay)  # returns at once: analysis never waits on Kafka

    return sink


def _transcript_publisher(publisher: Publisher, replay: bool) -> TranscriptSink:
    async def sink(transcript: Transcript) -> None:
        publisher.enqueue_transcript(transcript, replay=replay)

    return sink
