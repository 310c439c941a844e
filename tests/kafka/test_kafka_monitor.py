"""The monitor against a real broker: one alert and one clear per episode, across a crash and restart."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from kafka_factories import SECRET_TEXT, make_score
from kafka_helpers import kafka_settings, monitor_env, publish_settings, read_topic

from agent import messages
from agent.publish import Publisher
from core.types import StreamId

pytestmark = pytest.mark.integration
CHILD = Path(__file__).with_name("monitor_child.py")
RULES = """
rules:
  - {name: low_sentiment, kind: mean_below, task: sentiment, windows: 3, threshold: -1.0,
     clear_threshold: -0.5, persist: 2}
"""
PATIENT = StreamId("call-m", "patient", "patient")
CLINICIAN = StreamId("call-m", "clinician", "clinician")


def _spawn(bootstrap: str, prefix: str, group: str, rules: Path, crash: str) -> subprocess.Popen[str]:
    """The monitor with a fault-injection hook (monitor_child.py), or the real CLI when crash == "none"."""
    if crash == "none":
        command = [sys.executable, "-m", "cli", "--log-level", "DEBUG", "monitor", "--rules", str(rules)]
    else:
        command = [sys.executable, str(CHILD), bootstrap, prefix, group, str(rules), crash]
    env = {**os.environ, **monitor_env(bootstrap, prefix, group)}
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip


async def _publish(publisher: Publisher, values: list[float], start: int) -> None:
    for seq, value in enumerate(values, start):
        assert await publisher.publish_score(make_score(PATIENT, seq, sentiment=value)) == "acked"
        assert await publisher.publish_score(make_score(CLINICIAN, seq, sentiment=1.0)) == "acked"


def _alerts(bootstrap: str, topic: str, at_least: int, timeout_s: float = 30.0) -> list:
    return read_topic(bootstrap, topic, at_least=at_least, timeout_s=timeout_s, quiet_s=1.5)


@pytest.mark.parametrize("crash", ["after_ack", "before_send", "external"])
async def test_monitor_killed_mid_episode_raises_exactly_one_alert(kafka_broker, tmp_path: Path, crash: str) -> None:
    """(c) SIGKILL the monitor mid-episode (at the worst moments, or from outside); restart it."""
    prefix, group = f"mon{uuid.uuid4().hex[:6]}", f"monitor-{crash}"
    kafka = kafka_settings(kafka_broker.bootstrap_servers, prefix)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    publisher = Publisher(kafka, publish_settings(tmp_path / "spool"))
    await publisher.start()
    await _publish(publisher, [0.5, -2.0, -2.0, -2.0, -2.0, -2.0], start=0)  # raise expected at seq 3
    # Re-sent copies (as after a spool replay) with other values: counted, they would clear the episode.
    await _publish(publisher, [3.0, 3.0], start=4)

    first = _spawn(kafka.bootstrap_servers, prefix, group, rules, "none" if crash == "external" else crash)
    if crash == "external":
        seen = await asyncio.to_thread(_alerts, kafka.bootstrap_servers, kafka.topics.alerts, 1)
        assert [a.message["event"] for a in seen] == ["raised"]
        await asyncio.sleep(1.0)  # let it commit, so the restart also exercises the silent re-read
        first.kill()
    out, err = await asyncio.to_thread(first.communicate, timeout=60)
    assert first.returncode == -9, err[-3000:]

    await _publish(publisher, [-2.0, -2.0, 1.0, 1.0, 1.0, 1.0], start=6)  # clear expected at seq 10
    second = _spawn(kafka.bootstrap_servers, prefix, group, rules, "none")
    try:
        received = await asyncio.to_thread(_alerts, kafka.bootstrap_servers, kafka.topics.alerts, 2, 45.0)
    finally:
        second.terminate()
        out, err = await asyncio.to_thread(second.communicate, timeout=30)
        await publisher.close()
    assert second.returncode == 0, err[-3000:]
    assert "monitor state rebuilt" in err and SECRET_TEXT.split()[-1] not in err + out  # logs: no transcript
    for alert in received:
        messages.validate("alerts", alert.message)
        assert alert.key == PATIENT.key
    events = [(a.message["event"], a.message["episode_seq"], a.message["seq"]) for a in received]
    assert events == [("raised", 3, 3), ("cleared", 3, 10)]
