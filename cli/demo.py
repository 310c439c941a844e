"""The main job on the embedded defaults: broker + agent + a generated two-party call over WebRTC → score tables."""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from agent.broker import EmbeddedBroker, free_port
from agent.runtime import open_runtime
from agent.server import AgentServer
from agent.settings import KafkaSettings, Settings
from agent.stream_client import stream_file
from agent.topic_reader import read_topic
from cli.sample_call import PATIENT, PATIENT_TAKES, ensure_sample_call
from core.types import StreamId

log = logging.getLogger(__name__)

DEMO_DIR = Path(".affectstream") / "demo"
DEMO_CALL = "demo-call"


def demo_settings(settings: Settings, bootstrap_servers: str) -> Settings:
    """The demo's own corner of the settings: embedded broker, loopback-only WebRTC, a one-off token."""
    return settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"bootstrap_servers": bootstrap_servers}),
            "ingest": settings.ingest.model_copy(
                update={"port": 0, "tokens": [SecretStr(secrets.token_urlsafe(16))], "ice_loopback": "only"}
            ),
            "publish": settings.publish.model_copy(update={"spool_dir": DEMO_DIR / "spool"}),
        }
    )


def demo_stream(participant: str) -> StreamId:
    """The stream of one participant of the demo's call (its role is its name: clinician, patient)."""
    return StreamId(DEMO_CALL, participant, participant)


async def run_demo(settings: Settings, call: dict[str, Path]) -> dict[str, list[dict[str, Any]]]:
    """Stream each participant's file of `call` into a running agent over WebRTC, at once as one call; returns
    each participant's score messages read back from Kafka."""

    token = settings.ingest.tokens[0].get_secret_value()
    async with open_runtime(settings) as runtime:
        server = AgentServer(settings, runtime)
        base = await server.start()
        try:
            urls = {}
            for participant, path in call.items():
                stream = demo_stream(participant)
                urls[participant] = (f"{base}/whip?call_id={stream.call_id}&participant_id={stream.participant_id}"
                                     f"&role={stream.role}")
                print(f"streaming {path} as {participant} over WebRTC to {urls[participant]} (real time) ...",
                      flush=True)
            sent = (stream_file(call[participant], url, token, realtime=True) for participant, url in urls.items())
            results = await asyncio.gather(*sent)
            for participant, result in zip(urls, results, strict=True):
                print(f"{participant}: sent {result.audio_s:.1f} s of audio and {result.video_frames} video frames",
                      flush=True)
        finally:
            await server.close()  # waits for each stream's last window to be scored and published
        assert runtime.publisher is not None
        await runtime.publisher.wait_drained(30)
    kafka = settings.kafka
    return {p: read_scores(kafka.bootstrap_servers, kafka.topics.scores, demo_stream(p).key) for p in call}


def read_scores(bootstrap_servers: str, topic: str, stream_key: str, timeout_s: float = 20) -> list[dict[str, Any]]:
    """Every score message of `stream_key` on `topic`, read from the beginning (no consumer group)."""
    records = read_topic(KafkaSettings(bootstrap_servers=bootstrap_servers), topic, timeout_s=timeout_s,
                         if_missing="empty")  # fmt: skip
    return sorted((r.message for r in records if r.key == stream_key), key=lambda m: m["seq"])


def format_table(scores: list[dict[str, Any]]) -> str:
    lines = [f"{'seq':>3}  {'start_s':>7}  {'end_s':>7}  {'closed_by':<10}  {'task':<10}  {'M':>6}  "
             f"{'T':>6}  {'A':>6}  {'V':>6}  {'speech':>6}  {'face':>5}"]
    for message in scores:
        quality = message.get("quality", {})
        tasks = message.get("scores") or [{"task": "(shed)"}]
        for task in tasks:
            values = [task.get(k) for k in ("m", "t", "a", "v")]
            cells = "  ".join(f"{v:6.2f}" if isinstance(v, float | int) else f"{'-':>6}" for v in values)
            lines.append(
                f"{message['seq']:>3}  {message['start_s']:7.2f}  {message['end_s']:7.2f}  "
                f"{message['closed_by']:<10}  {task['task']:<10}  {cells}  "
                f"{quality.get('speech_ratio', 0):6.2f}  {quality.get('face_visible_ratio', 0):5.2f}"
            )
    return "\n".join(lines)


def demo(settings: Settings) -> int:
    from default_model.cremad import DEFAULT_CREMAD_DIR  # where the shared corpus lies beside the repository

    call = ensure_sample_call(DEMO_DIR / "sample_call_v4", DEFAULT_CREMAD_DIR)  # v4: clinician and patient
    with EmbeddedBroker("127.0.0.1", free_port()) as broker:
        print(f"embedded Kafka broker (tansu) on {broker.bootstrap_servers}", flush=True)
        configured = demo_settings(settings, broker.bootstrap_servers)
        scores = asyncio.run(run_demo(configured, call))
    if not any(scores.values()):
        print("no scores arrived on Kafka")
        return 1
    scored = (m["scores"][0] for messages in scores.values() for m in messages if m.get("scores"))
    first: dict[str, Any] = next(scored, {})  # every window shed: the header without a model
    print(f"\nscores read back from topic {configured.kafka.topics.scores} (model {first.get('model_id', '?')} "
          f"{first.get('model_version', '')}; M = multimodal score in [{first.get('label_min', '?')}, "
          f"{first.get('label_max', '?')}], T/A/V = unimodal heads):")
    for participant, messages in scores.items():
        print(f"\n{demo_stream(participant).key}:")
        print(format_table(messages))
    if PATIENT in scores:
        print("\nThe patient says \"It's eleven o'clock\" in turn in these voices (CREMA-D's voice-only raters): "
              + "; ".join(f"{take.voice} ({take.heard})" for take in PATIENT_TAKES) + ".")
    print("\nNot a clinical instrument: see the model card (card.json in the bundle) for what it was trained on.")
    return 0
