"""Messages validate against their schemas, and an incompatible schema change fails here."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
from kafka_contract import load_snapshot, required_fields
from kafka_factories import SECRET_TEXT, make_score

from agent import messages
from agent.errors import PublishError
from agent.file_source import collect_sources
from agent.rules import AlertEvent
from agent.transcripts_io import stream_for_file
from core.types import StreamId

STREAM = StreamId("call-1", "patient-7", "patient", session_id="s1")


def _alert_event() -> AlertEvent:
    return AlertEvent(STREAM, "low_sentiment", "raised", 4, 5, 10.0, 12.0, "sentiment", "mean", -1.4, -1.0, 5,
                      "warning", False)  # fmt: skip


@pytest.mark.parametrize("kind", messages.KINDS)
def test_schemas_are_valid_draft_2020_12(kind: messages.Kind) -> None:
    schema = messages.schema(kind)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema_version"] == {"const": messages.SCHEMA_VERSIONS[kind]}


@pytest.mark.parametrize("kind", messages.KINDS)
def test_schema_versions_match_the_snapshot(kind: messages.Kind) -> None:
    """Removing, renaming, retyping or adding a required field needs a new schema version + snapshot."""
    snapshot = load_snapshot()[kind]
    assert str(messages.SCHEMA_VERSIONS[kind]) in snapshot, "current version has no snapshot entry"
    for version, fields in snapshot.items():
        assert required_fields(messages.schema(kind, int(version))) == fields, f"{kind} v{version} changed"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda s: s["required"].remove("seq"), "seq"),
        (lambda s: s["properties"].__setitem__("seq", {"type": "string"}), "seq"),
        (lambda s: s["$defs"]["task_score"]["properties"]["m"].__setitem__("type", "string"), "scores[].m"),
        (lambda s: s["$defs"]["stream"]["required"].append("tenant"), "stream.tenant"),
    ],
)
def test_an_incompatible_change_is_detected(mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    changed = copy.deepcopy(messages.schema("scores"))
    if field == "stream.tenant":
        changed["$defs"]["stream"]["properties"]["tenant"] = {"type": "string"}
    mutate(changed)
    before = load_snapshot()["scores"][str(messages.SCHEMA_VERSIONS["scores"])]
    after = required_fields(changed)
    assert after != before
    assert field in set(before) ^ set(after) or before.get(field) != after.get(field)


def test_score_message_validates_and_carries_no_transcript_text() -> None:
    score = make_score(STREAM, 3, sentiment=-1.25, depression=16.0)
    message = messages.score_message(score, replay=True)
    messages.validate("scores", message)
    env = messages.envelope("scores", message)
    assert SECRET_TEXT.split()[1].encode() not in env.value
    assert "text" not in json.dumps(message)
    assert env.key == "call-1/patient-7"
    headers = dict(env.headers)
    assert headers == {
        "schema_version": b"2", "stream_key": b"call-1/patient-7", "session": b"s1", "seq": b"3", "replay": b"1",
        "model_id": b"selfmm-mosi,selfmm-phq", "model_version": b"1.0.0,0.1.0",
    }  # fmt: skip
    assert message["scores"][1] == {
        "task": "depression", "m": 16.0, "t": None, "a": None, "v": None, "label_min": 0.0, "label_max": 27.0,
        "model_id": "selfmm-phq", "model_version": "0.1.0",
    }  # fmt: skip
    assert message["latencies_ms"] == {"speech": 12.5, "features": 3.0, "scoring": 4.0}
    assert message["produced_at"].endswith("Z")
    assert message["session"] == "s1" and messages.stream_of(message) == STREAM


def test_transcript_and_alert_messages_validate() -> None:
    transcript = make_score(STREAM, 0).features.transcript
    env = messages.envelope("transcripts", messages.transcript_message(transcript, replay=False))
    assert json.loads(env.value)["text"] == SECRET_TEXT
    assert dict(env.headers)["replay"] == b"0"
    alert = messages.alert_message(_alert_event(), monitor_id="mon")
    messages.validate("alerts", alert)
    assert alert["alert_id"] == "mon|call-1/patient-7|s1|low_sentiment|4|raised"
    assert alert["session"] == "s1" and dict(messages.envelope("alerts", alert).headers)["session"] == b"s1"


def test_a_bad_message_names_the_field_never_the_content() -> None:
    transcript = make_score(STREAM, 0).features.transcript
    message = messages.transcript_message(transcript, replay=False)
    message["no_speech_prob"] = 7.0
    with pytest.raises(PublishError, match="no_speech_prob") as info:
        messages.envelope("transcripts", message)
    assert "zebra" not in str(info.value)
    del message["text"]
    message["no_speech_prob"] = 0.1
    with pytest.raises(PublishError, match="required") as info:
        messages.validate("transcripts", message)
    score = messages.score_message(make_score(STREAM, 1, sentiment=float("nan")), replay=False)
    with pytest.raises(PublishError, match="NaN"):
        messages.envelope("scores", score)


def test_the_documented_examples_validate() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "kafka.md").read_text("utf-8")
    examples = [json.loads(block.split("```", 1)[0]) for block in doc.split("```json\n")[1:]]
    kinds = ["alerts" if "alert_id" in e else "transcripts" if "text" in e else "scores" for e in examples]
    assert sorted(kinds) == ["alerts", "scores", "transcripts"]
    for kind, example in zip(kinds, examples, strict=True):
        messages.validate(kind, example)  # type: ignore[arg-type]


def test_a_shed_window_is_reported_without_scores() -> None:
    window = make_score(STREAM, 9).window
    env = messages.envelope("scores", messages.shed_message(window, replay=False))
    body = json.loads(env.value)
    assert (body["shed"], body["scores"], body["seq"]) == (True, [], 9)
    assert dict(env.headers)["model_id"] == b""


def test_version_1_messages_stay_readable_as_session_0() -> None:
    """Consumers dispatch on schema_version: what an agent before sessions wrote still validates."""
    v2 = messages.score_message(make_score(STREAM, 3), replay=False)
    v1 = {k: v for k, v in v2.items() if k != "session"} | {"schema_version": 1}
    messages.validate("scores", v1)
    assert messages.stream_of(v1).session_key == ("call-1/patient-7", "0")
    with pytest.raises(PublishError, match="v2 .*required session"):
        messages.validate("scores", {k: v for k, v in v2.items() if k != "session"})
    with pytest.raises(PublishError, match="v1 .*additionalProperties"):
        messages.validate("scores", v1 | {"session": "s1"})
    with pytest.raises(PublishError, match="v2 .*schema_version"):
        messages.validate("scores", v2 | {"schema_version": 3})


def test_a_session_id_is_checked_like_the_other_ids() -> None:
    with pytest.raises(ValueError, match="session_id must be"):
        StreamId("call-1", "patient-7", session_id="-leading-dash")
    assert StreamId("call-1", "patient-7").session_id == "0"
    assert StreamId("c", "p", session_id="a").key == StreamId("c", "p", session_id="b").key == "c/p"


def test_a_replay_has_a_deterministic_session_so_a_rerun_is_the_same_identity(tmp_path: Path) -> None:
    recording = tmp_path / "call.wav"
    recording.write_bytes(b"\0")
    first, rerun = (collect_sources([recording])[0].stream for _ in range(2))
    assert first == rerun and first.session_id == "recording"
    part = collect_sources([recording], start_s=1.5, end_s=4.0)[0].stream
    assert (part.key, part.session_id) == (first.key, "recording-1.5-4")
    assert stream_for_file(recording).session_id == "recording"
    headers = dict(messages.envelope("scores", messages.score_message(make_score(first, 0), replay=True)).headers)
    assert (headers["stream_key"], headers["session"], headers["seq"]) == (b"call.wav/replay", b"recording", b"0")
