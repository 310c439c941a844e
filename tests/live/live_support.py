"""Helpers for the live end-to-end tests: settings, a tiny live bundle, reference runs, reading Kafka back."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import SecretStr

from agent import topic_reader
from agent.file_source import ReplaySource, file_media
from agent.pipeline import Pipeline, run_stream
from agent.settings import KafkaSettings, Settings, WindowSettings
from agent.stages import Sink
from agent.topic_reader import TopicRecord
from core.speaker_reference import SpeakerReferences
from core.types import Score, StreamId, Transcript

TOKEN = "live-test-token"
REPO = Path(__file__).resolve().parents[2]
DATA = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()
CREMA = DATA / "av" / "derived" / "crema_d_1001_DFA_6emotions.mp4"  # 12.6 s, 6 takes of one sentence
GRID = DATA / "av" / "derived" / "grid_11clips_concat.mp4"  # 33 s, 11 GRID sentences of 3 s
GRID_CLIPS = DATA / "av" / "grid"

# Scores: the same windows scored from the file decoded directly differ only through what the codecs lost:
# Opus (lossy, ~32 kb/s speech, 48 kHz round trip) changes the acoustic descriptors and can change a Whisper
# word; VP8 changes pixels and so face landmarks; window edges may move by a few ms of jitter-buffer timing.
# The test checks that the inputs stay close (audio descriptors r >= 0.97, face descriptors r >= 0.99 per
# window; measured 0.99 and 0.9996) while a few Whisper words may change. Such a perturbation may move a
# window's multimodal score by at most 5 % of the label range (0.3 on a -3..3 sentiment scale), on average by
# at most 2 %; a unimodal head, which sees one perturbed input alone, by at most 8 %. (Measured with the tiny
# test model: max 0.06 %, mean 0.02 % of the range.)
MAX_SCORE_DIFF = 0.05
MEAN_SCORE_DIFF = 0.02
MAX_HEAD_DIFF = 0.08


def export_tiny_live_bundle(encoder_dir: Path, out_dir: Path) -> Path:
    """A tiny random Self-MM on a tiny BERT, with the agent's real feature spec and dims (live-compatible)."""
    import torch
    from tiny_selfmm import make_tiny_encoder

    from core.card import TaskInfo
    from core.features import FeatureSpec
    from exporters.bundle import ExportRequest, export_bundle
    from models.config import SelfMMConfig
    from models.selfmm import SelfMM
    from models.tasks import make_task

    make_tiny_encoder(encoder_dir)
    spec = FeatureSpec.for_tokenizer(encoder_dir)
    torch.manual_seed(0)
    config = SelfMMConfig.preset(
        "mosi", text_encoder_dir=encoder_dir, audio_dim=spec.audio_dim, vision_dim=spec.vision_dim
    )
    model = SelfMM(config).eval()
    task = make_task("sentiment", "mosi")
    export_bundle(model, ExportRequest(
        out_dir=out_dir, model_id="tiny-live-sentiment", model_version="test",
        task=TaskInfo(task.name, task.label_min, task.label_max), feature_spec=spec.to_dict(),
        feature_source="live", text_encoder_dir=encoder_dir, text_max_length=spec.text_max_length,
        audio_dim=spec.audio_dim, vision_dim=spec.vision_dim,
        training={"data": "none (random weights, test only)"}, fp16=False, int8=False,
    ))  # fmt: skip
    return out_dir


def live_settings(bootstrap_servers: str, bundle: Path, spool_dir: Path, **ingest: Any) -> Settings:
    """Loopback-only WebRTC on a free port, own topics, transcripts on, the test bundle, utterance windows."""
    prefix = f"live{uuid.uuid4().hex[:8]}"
    ingest_options: dict[str, Any] = {
        "port": 0, "tokens": [SecretStr(TOKEN)], "ice_loopback": "only", "ice_timeout_s": 10.0,
        "media_timeout_s": 3.0, "max_sessions": 16, "queue_windows": 64,
    }  # fmt: skip
    ingest_options.update(ingest)
    return Settings(
        kafka={"bootstrap_servers": bootstrap_servers, "request_timeout_ms": 2000,
               "topics": {"scores": f"{prefix}.scores", "transcripts": f"{prefix}.transcripts",
                          "alerts": f"{prefix}.alerts", "partitions": 3}},
        publish={"spool_dir": spool_dir, "transcripts_enabled": True, "delivery_timeout_s": 5.0,
                 "retry_backoff_ms": 100},
        scoring={"bundles": [bundle], "providers": ["CPUExecutionProvider"]},
        ingest=ingest_options,
        windows={"mode": "utterance"},
    )  # fmt: skip


def whip_url(base: str, call_id: str, participant_id: str = "p1", role: str = "patient") -> str:
    return f"{base}/whip?call_id={call_id}&participant_id={participant_id}&role={role}"


@dataclass
class Collected:
    scores: list[Score]
    transcripts: list[Transcript]


def pipeline_with(pipeline: Pipeline, windows: WindowSettings, collect: Collected | None = None) -> Pipeline:
    """The same models with other window settings and sinks of their own (one process, one model each)."""
    sinks = () if collect is None else (_append(collect.scores),)
    transcript_sinks = () if collect is None else (_append(collect.transcripts),)
    return replace(pipeline, window_settings=windows, score_sinks=sinks, transcript_sinks=transcript_sinks)


def _append(target: list[Any]) -> Sink[Any]:
    async def sink(item: Any) -> None:
        target.append(item)

    return sink


async def reference_run(path: Path, pipeline: Pipeline, windows: WindowSettings, vision_fps: float) -> Collected:
    """The file decoded directly (no WebRTC) through the very same models, without shedding: a call of its own
    (its speaker reference starts empty, as the live stream's does, whatever ran before)."""
    collected = Collected([], [])
    stream = StreamId("reference", path.stem[:100])
    media = file_media(ReplaySource(stream, path), vision_fps, pace="fast")
    own = replace(pipeline_with(pipeline, windows, collected), speaker_references=SpeakerReferences())
    await run_stream(stream, media, own, shed_on_overload=False)
    collected.scores.sort(key=lambda s: s.window.seq)
    collected.transcripts.sort(key=lambda t: t.window.seq)
    return collected


def read_topic(bootstrap_servers: str, topic: str, *, timeout_s: float = 20.0,
               quiet_s: float = 1.0) -> list[TopicRecord]:  # fmt: skip
    """Every record of `topic` from the beginning, in offset order per partition; none came for `quiet_s`."""
    kafka = KafkaSettings(bootstrap_servers=bootstrap_servers, request_timeout_ms=3000)
    return topic_reader.read_topic(kafka, topic, timeout_s=timeout_s, if_missing="wait", quiet_s=quiet_s)


def by_stream(records: list[TopicRecord]) -> dict[str, list[dict[str, Any]]]:
    """Messages per stream key in arrival (offset) order; one key lives on one partition."""
    out: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        out.setdefault(record.key, []).append(record.message)
    return out


async def wait_for(predicate, timeout_s: float = 10.0, step_s: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step_s)
    return bool(predicate())


@dataclass
class ServeProcess:
    """`affectstream serve` in a subprocess (its output in a file: a pipe nobody reads could block it)."""

    process: asyncio.subprocess.Process
    base: str
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    async def wait_ready(self, timeout_s: float = 90.0) -> list[int]:
        """The distinct /readyz statuses seen until it answered 200."""
        seen: list[int] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}: {self.output()}")
            try:
                async with aiohttp.ClientSession() as http, http.get(f"{self.base}/readyz") as response:
                    status = response.status
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
                continue
            if not seen or seen[-1] != status:
                seen.append(status)
            if status == 200:
                return seen
            await asyncio.sleep(0.05)
        raise AssertionError(f"serve not ready within {timeout_s} s: {seen}")

    async def exit_code(self, timeout_s: float) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout_s)

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def start_serve(settings: Settings, bundle: Path, workdir: Path, **env: str) -> ServeProcess:
    """`python -m cli serve` on a free port with `settings`' broker and topics, the test bundle, loopback ICE and
    the test token; `env` adds AFFECTSTREAM_ variables."""
    from agent.broker import free_port

    port = free_port()
    topics = settings.kafka.topics
    full_env = dict(
        os.environ,
        AFFECTSTREAM_KAFKA__BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers,
        AFFECTSTREAM_KAFKA__TOPICS__SCORES=topics.scores,
        AFFECTSTREAM_KAFKA__TOPICS__TRANSCRIPTS=topics.transcripts,
        AFFECTSTREAM_KAFKA__TOPICS__ALERTS=topics.alerts,
        AFFECTSTREAM_SCORING__BUNDLES=json.dumps([str(bundle)]),
        AFFECTSTREAM_SCORING__PROVIDERS='["CPUExecutionProvider"]',
        AFFECTSTREAM_PUBLISH__SPOOL_DIR=str(workdir / "serve-spool"),
        AFFECTSTREAM_INGEST__TOKENS=TOKEN,
        AFFECTSTREAM_INGEST__ICE_LOOPBACK="only",
        **env,
    )
    log_path = workdir / "serve.log"
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli", "serve", "--port", str(port), cwd=REPO, env=full_env,
            stdout=log_file, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    return ServeProcess(process, f"http://127.0.0.1:{port}", log_path)
