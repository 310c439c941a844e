"""The Kafka contract: pure functions that turn agent values into validated messages (docs/kafka.md).

A message is a JSON object validated against `agent/schemas/<topic>.v<version>.json` before it leaves the
process; its key is the stream key and its headers repeat what a consumer needs for routing and
deduplication (stream key, session, seq) without parsing the body. Consumers validate each message against
the schema of its own `schema_version` (older versions stay readable). Errors never quote message content
(transcripts are health data).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal

import jsonschema

from agent.errors import PublishError
from agent.rules import AlertEvent
from core.types import Score, StreamId, Transcript, Window

Kind = Literal["scores", "transcripts", "alerts"]
KINDS: tuple[Kind, ...] = ("scores", "transcripts", "alerts")
SCHEMA_VERSIONS: dict[Kind, int] = {"scores": 2, "transcripts": 2, "alerts": 2}  # the versions written
# What a message of schema version 1 (before sessions) is read as: StreamId's default session.
V1_SESSION = "0"

Headers = list[tuple[str, bytes]]
SCHEMA_DIR = Path(__file__).parent / "schemas"


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message ready for Kafka: which topic kind, key, encoded value and headers."""

    kind: Kind
    key: str
    value: bytes  # UTF-8 JSON
    headers: tuple[tuple[str, bytes], ...]

    @property
    def seq(self) -> int:
        return int(dict(self.headers)["seq"])


@cache
def schema(kind: Kind, version: int | None = None) -> dict[str, Any]:
    """The JSON Schema of one topic (the current version unless given)."""
    version = SCHEMA_VERSIONS[kind] if version is None else version
    text = (SCHEMA_DIR / f"{kind}.v{version}.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _validator(kind: Kind, version: int) -> jsonschema.Draft202012Validator:
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    return jsonschema.Draft202012Validator(schema(kind, version), format_checker=checker)


def _version_of(kind: Kind, message: dict[str, Any]) -> int:
    """The message's own schema version when it is one we know, else the current one (which then fails)."""
    version = message.get("schema_version")
    known = isinstance(version, int) and not isinstance(version, bool) and 1 <= version <= SCHEMA_VERSIONS[kind]
    return version if known else SCHEMA_VERSIONS[kind]  # type: ignore[return-value]


def validate(kind: Kind, message: dict[str, Any]) -> None:
    """Raise PublishError naming the failing field (never its value) if `message` breaks the schema of its
    `schema_version` (any version this agent knows: a consumer reads what older agents wrote)."""
    version = _version_of(kind, message)
    errors = sorted(_validator(kind, version).iter_errors(message), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(message)"
        what = str(first.validator)
        if first.validator == "required" and isinstance(first.instance, dict):  # names a field, not a value
            what += " " + ", ".join(f for f in first.validator_value if f not in first.instance)
        raise PublishError(
            f"{kind} message breaks schema v{version} at {where}: {what} ({len(errors)} error(s))",
            retryable=False,
        )


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stream_dict(stream: StreamId) -> dict[str, str]:
    return {
        "call_id": stream.call_id,
        "participant_id": stream.participant_id,
        "role": stream.role,
        "key": stream.key,
    }


def stream_of(message: dict[str, Any]) -> StreamId:
    """The stream and session a validated message (any schema version) is about."""
    s = message["stream"]
    return StreamId(s["call_id"], s["participant_id"], s["role"], session_id=message.get("session", V1_SESSION))


def score_message(score: Score, *, replay: bool, produced_at: str | None = None) -> dict[str, Any]:
    """The affect.scores body of one window: scores, quality and latencies; no transcript text."""
    window = score.window
    if window.shed:
        return shed_message(window, replay=replay, produced_at=produced_at)
    features = score.features
    latencies_ms = {"speech": features.transcript.latency_ms, "features": features.latency_ms}
    latencies_ms.update(score.latencies_ms)
    return {
        "schema_version": SCHEMA_VERSIONS["scores"],
        "stream": stream_dict(window.stream),
        "session": window.stream.session_id,
        "seq": window.seq,
        "start_s": window.start_s,
        "end_s": window.end_s,
        "closed_by": window.closed_by,
        "shed": window.shed,
        "scores": [
            {
                "task": task.task,
                "m": task.m,
                "t": task.t,
                "a": task.a,
                "v": task.v,
                "label_min": task.label_min,
                "label_max": task.label_max,
                "model_id": task.model_id,
                "model_version": task.model_version,
            }
            for task in score.tasks
        ],
        "quality": {
            "speech_ratio": features.speech_ratio,
            "face_visible_ratio": features.face_visible_ratio,
        },
        "latencies_ms": {stage: max(0.0, float(ms)) for stage, ms in latencies_ms.items()},
        "produced_at": produced_at or utc_now_iso(),
        "replay": replay,
    }


def shed_message(window: Window, *, replay: bool, produced_at: str | None = None) -> dict[str, Any]:
    """The affect.scores body of a window shed under load: reported, with no scores and quality 0."""
    return {
        "schema_version": SCHEMA_VERSIONS["scores"],
        "stream": stream_dict(window.stream),
        "session": window.stream.session_id,
        "seq": window.seq,
        "start_s": window.start_s,
        "end_s": window.end_s,
        "closed_by": window.closed_by,
        "shed": True,
        "scores": [],
        "quality": {"speech_ratio": 0.0, "face_visible_ratio": 0.0},
        "latencies_ms": {},
        "produced_at": produced_at or utc_now_iso(),
        "replay": replay,
    }


def transcript_message(transcript: Transcript, *, replay: bool, produced_at: str | None = None) -> dict[str, Any]:
    """The affect.transcripts body of one window (health data: only sent when enabled)."""
    window = transcript.window
    return {
        "schema_version": SCHEMA_VERSIONS["transcripts"],
        "stream": stream_dict(window.stream),
        "session": window.stream.session_id,
        "seq": window.seq,
        "start_s": window.start_s,
        "end_s": window.end_s,
        "text": transcript.text,
        "words": [
            {"text": w.text, "start_s": w.start_s, "end_s": w.end_s, "probability": w.probability}
            for w in transcript.words
        ],
        "language": transcript.language,
        "no_speech_prob": transcript.no_speech_prob,
        "latency_ms": max(0.0, transcript.latency_ms),
        "produced_at": produced_at or utc_now_iso(),
        "replay": replay,
    }


def alert_id(monitor_id: str, event: AlertEvent) -> str:
    """Deterministic: a re-sent alert has the same id, so consumers can deduplicate it."""
    stream = event.stream
    return f"{monitor_id}|{stream.key}|{stream.session_id}|{event.rule}|{event.episode_seq}|{event.event}"


def alert_message(event: AlertEvent, *, monitor_id: str, produced_at: str | None = None) -> dict[str, Any]:
    """The affect.alerts body of one raise or clear."""
    return {
        "schema_version": SCHEMA_VERSIONS["alerts"],
        "alert_id": alert_id(monitor_id, event),
        "monitor_id": monitor_id,
        "stream": stream_dict(event.stream),
        "session": event.stream.session_id,
        "rule": event.rule,
        "event": event.event,
        "episode_seq": event.episode_seq,
        "seq": event.seq,
        "start_s": event.start_s,
        "end_s": event.end_s,
        "task": event.task,
        "statistic": event.statistic,
        "value": event.value,
        "threshold": event.threshold,
        "windows": event.windows,
        "severity": event.severity,
        "produced_at": produced_at or utc_now_iso(),
        "replay": event.replay,
    }


def _joined(values: list[str]) -> str:
    return ",".join(dict.fromkeys(values))  # unique, first-seen order


def headers(kind: Kind, message: dict[str, Any]) -> Headers:
    """Kafka headers of a message: schema version, stream key, session, window seq, replay flag, model
    id/version."""
    out: Headers = [
        ("schema_version", str(message["schema_version"]).encode()),
        ("stream_key", message["stream"]["key"].encode()),
        ("session", message["session"].encode()),
        ("seq", str(message["seq"]).encode()),
        ("replay", b"1" if message["replay"] else b"0"),
    ]
    if kind == "scores":
        out.append(("model_id", _joined([s["model_id"] for s in message["scores"]]).encode()))
        out.append(("model_version", _joined([s["model_version"] for s in message["scores"]]).encode()))
    if kind == "alerts":
        out.append(("rule", message["rule"].encode()))
        out.append(("event", message["event"].encode()))
    return out


def envelope(kind: Kind, message: dict[str, Any]) -> Envelope:
    """Validate and encode a message; the key is the stream key so a stream stays in one partition."""
    validate(kind, message)
    try:
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise PublishError(f"{kind} message holds NaN or infinity: JSON cannot carry it", retryable=False) from None
    value = text.encode()
    return Envelope(kind, message["stream"]["key"], value, tuple(headers(kind, message)))


def decode(value: bytes) -> dict[str, Any]:
    """Parse a message body; a consumer validates it with `validate` when it must trust it."""
    loaded: dict[str, Any] = json.loads(value)
    return loaded
