"""A hung broker (the tansu process frozen with SIGSTOP: its sockets stay open, nothing is answered).

A send to it waits for its acks until the producer's delivery timeout, one request timeout at most
(agent/kafka_config.py). The publisher owns that wait: handing a score over never waits on Kafka, what waits
in memory stays bounded (beyond `queue_size` the backlog goes to the spool), and once the broker answers
again every window is on the topic, once after deduplication, in order per stream.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import pytest
from kafka_factories import make_score
from kafka_helpers import first_seen_seqs, frozen, kafka_settings, publish_settings, read_topic
from pydantic import SecretStr

from agent import messages
from agent.broker import EmbeddedBroker
from agent.loopback import configure_loopback, current_mode
from agent.publish import Publisher
from agent.runtime import open_runtime
from agent.server import AgentServer
from agent.settings import Settings
from agent.stream_client import stream_file
from core.types import Score, StreamId

pytestmark = pytest.mark.integration
STREAMS = [StreamId("call-f", "patient", "patient"), StreamId("call-f", "clinician", "clinician"),
           StreamId("call-g", "patient", "patient")]  # fmt: skip
QUEUE = 30  # messages the publisher may hold in memory before it spills to the spool
FREEZE_S = 8.0  # shorter than the 11 s a send waits for its acks: the spill, not a timeout, frees memory


async def test_a_frozen_broker_never_holds_up_the_hand_over_and_the_backlog_spills_to_the_spool(
    fresh_kafka_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    broker = fresh_kafka_broker
    kafka = kafka_settings(broker.bootstrap_servers).model_copy(update={"request_timeout_ms": 10_000})
    publisher = Publisher(kafka, publish_settings(tmp_path / "spool", delivery_timeout_s=30.0), queue_size=QUEUE)
    assert publisher.ack_wait_s > FREEZE_S
    await publisher.start()
    published: dict[str, list[int]] = {s.key: [] for s in STREAMS}
    for seq in range(3):
        for stream in STREAMS:
            assert await publisher.publish_score(make_score(stream, seq)) == "acked"
            published[stream.key].append(seq)
    hand_over_s: list[float] = []
    held: list[int] = []
    with frozen(broker):
        frozen_at = time.monotonic()
        seq = 3
        while time.monotonic() - frozen_at < FREEZE_S:
            for stream in STREAMS:
                started = time.perf_counter()
                publisher.enqueue_score(make_score(stream, seq))
                hand_over_s.append(time.perf_counter() - started)
                published[stream.key].append(seq)
            held.append(publisher.unsettled)
            seq += 1
            await asyncio.sleep(0.1)
        spilled, spooled = publisher.stats.spilled, publisher.spool_pending
    assert await publisher.wait_drained(90), f"spool still holds {publisher.spool_pending}"
    await publisher.close()

    total = sum(len(seqs) for seqs in published.values())
    received = await asyncio.to_thread(read_topic, kafka.bootstrap_servers, kafka.topics.scores,
                                       at_least=total, timeout_s=30)  # fmt: skip
    for record in received:
        messages.validate("scores", record.message)
    assert first_seen_seqs(received) == published  # every window once after dedupe, in order per stream
    assert max(hand_over_s) < 0.5  # a hand-over is a schema check and an append, never a wait for acks
    assert spilled > 0 and spooled > 0  # the backlog went to disk while the broker was silent ...
    assert max(held) <= 2 * QUEUE  # ... so memory stayed bounded (slack: messages handed over during an fsync)
    print(f"frozen {FREEZE_S:.0f} s: {total} messages, hand-over max {max(hand_over_s) * 1000:.2f} ms, "
          f"held in memory max {max(held)}, spilled {spilled}, spooled {spooled}")


# -- a live call over WebRTC while the broker is frozen for 45 s ----------------------------------------------

CALL_FREEZE_S = 45.0
TOKEN = "freeze-test-token"


def _long_call(out: Path, source: Path, times: int) -> Path:
    """`source` played `times` times in a row (packets copied, timestamps shifted: no re-encoding), so that
    a 45 s freeze fits inside one call."""
    gap_s = 0.5  # keeps decode timestamps increasing across the seam (B-frames start before 0)
    with av.open(str(source)) as first, av.open(str(out), "w") as output:
        duration_s = first.duration / av.time_base
        streams = {s.index: output.add_stream_from_template(s) for s in first.streams}
        for turn in range(times):
            with av.open(str(source)) as media:
                for packet in media.demux():
                    if packet.dts is None:
                        continue
                    time_base = packet.stream.time_base
                    shift = round(turn * (duration_s + gap_s) / time_base)
                    packet.pts, packet.dts = packet.pts + shift, packet.dts + shift
                    packet.stream = streams[packet.stream.index]
                    packet.time_base = time_base
                    output.mux(packet)
    return out


def _call_settings(bootstrap_servers: str, bundle: Path, spool_dir: Path) -> Settings:
    """Production Kafka timeouts (10 s requests, 30 s delivery) and window queue (8); loopback-only WebRTC."""
    prefix = f"freeze{uuid.uuid4().hex[:8]}"
    return Settings(
        kafka={"bootstrap_servers": bootstrap_servers,
               "topics": {"scores": f"{prefix}.scores", "transcripts": f"{prefix}.transcripts",
                          "alerts": f"{prefix}.alerts", "partitions": 3}},
        publish={"spool_dir": spool_dir},
        scoring={"bundles": [bundle], "providers": ["CPUExecutionProvider"]},
        ingest={"port": 0, "tokens": [SecretStr(TOKEN)], "ice_loopback": "only", "ice_timeout_s": 10.0,
                "media_timeout_s": 5.0},
        windows={"mode": "utterance"},
    )  # fmt: skip


@dataclass
class _Call:
    """When each window reached the sink after the publisher's (handed over), and the freeze's bounds."""

    handed_over_s: dict[int, float] = field(default_factory=dict)
    window_end_s: dict[int, float] = field(default_factory=dict)
    shed: list[int] = field(default_factory=list)
    frozen_s: tuple[float, float] = (0.0, 0.0)
    cpu_s: float = 0.0  # this process's CPU time during the freeze
    under_way: asyncio.Event = field(default_factory=asyncio.Event)  # two windows are done

    async def sink(self, score: Score) -> None:
        self.handed_over_s[score.window.seq] = time.monotonic()
        self.window_end_s[score.window.seq] = score.window.end_s
        if len(self.handed_over_s) >= 2:
            self.under_way.set()
        if score.window.shed:
            self.shed.append(score.window.seq)

    def lag_s(self) -> dict[int, float]:
        """Per window: hand-over time minus media end time, less the smallest such lag (the stream's start
        and the fastest window's analysis): how much later than the best window it was done."""
        raw = {seq: self.handed_over_s[seq] - self.window_end_s[seq] for seq in self.handed_over_s}
        best = min(raw.values())
        return {seq: lag - best for seq, lag in raw.items()}

    def during_freeze(self, seq: int) -> bool:
        return self.frozen_s[0] <= self.handed_over_s[seq] <= self.frozen_s[1]


async def _freeze_mid_call(broker: EmbeddedBroker, call: _Call) -> None:
    await call.under_way.wait()
    cpu_before = time.process_time()
    with frozen(broker):
        started = time.monotonic()
        await asyncio.sleep(CALL_FREEZE_S)
        call.frozen_s = (started, time.monotonic())
    call.cpu_s = time.process_time() - cpu_before


@pytest.fixture()
def _restore_loopback() -> Iterator[None]:
    """The server here offers loopback ICE candidates only (a process-wide aioice setting): undo it after."""
    previous = current_mode()
    yield
    configure_loopback(previous)


@pytest.mark.slow
@pytest.mark.usefixtures("_restore_loopback")
async def test_kafka_frozen_45_s_mid_webrtc_call_sheds_nothing_and_delays_no_analysis(
    fresh_kafka_broker: EmbeddedBroker, sentiment_bundle: Path, shared_data: Path, tmp_path: Path
) -> None:
    broker = fresh_kafka_broker
    recording = _long_call(tmp_path / "call.mp4", shared_data / "av" / "derived" / "grid_11clips_concat.mp4", 2)
    settings = _call_settings(broker.bootstrap_servers, sentiment_bundle, tmp_path / "spool")
    call = _Call()
    async with open_runtime(settings, score_sinks=[call.sink]) as runtime:
        publisher = runtime.publisher
        assert publisher is not None
        server = AgentServer(settings, runtime)
        base = await server.start()
        freeze = asyncio.create_task(_freeze_mid_call(broker, call))
        try:
            sent = await stream_file(recording, f"{base}/whip?call_id=frozen&participant_id=p1&role=patient", TOKEN)
        finally:
            await server.close()  # the call's last window is scored and handed over
        await freeze
        thawed_s = call.frozen_s[1]
        assert await publisher.wait_drained(120), f"spool still holds {publisher.spool_pending}"
        drained_after_s = time.monotonic() - thawed_s
        stats = publisher.stats
    windows = len(call.handed_over_s)
    received = await asyncio.to_thread(read_topic, broker.bootstrap_servers, settings.kafka.topics.scores,
                                       at_least=windows, timeout_s=30)  # fmt: skip

    # the freeze was mid-call, and long enough for a send to give up waiting (11 s) while the call went on
    assert call.frozen_s[1] - call.frozen_s[0] >= CALL_FREEZE_S and sent.audio_s > 60
    during = sorted(seq for seq in call.handed_over_s if call.during_freeze(seq))
    outside = sorted(set(call.handed_over_s) - set(during))
    assert len(during) >= 10 and any(call.handed_over_s[s] > call.frozen_s[1] for s in outside)
    # no window shed: the analyser never waited on the broker, so its queue of 8 windows never filled
    assert call.shed == [] and sorted(call.handed_over_s) == list(range(windows))
    assert stats.send_failures >= 1 and stats.spooled > 0 and stats.spool_full == 0
    # every window on affect.scores once it thawed: once after dedupe, in order, none shed
    assert first_seen_seqs(received) == {"frozen/p1": list(range(windows))}
    assert not any(r.message["shed"] for r in received)
    # the analyser's latency is the same frozen or not: a window is done as soon after its media as before
    lag = call.lag_s()
    worst_outside, worst_during = max(lag[s] for s in outside), max(lag[s] for s in during)
    assert worst_during <= worst_outside + 2.0, (worst_during, worst_outside)
    print(
        f"\n{windows} windows, {len(during)} handed over during the {CALL_FREEZE_S:.0f} s freeze; lag behind the "
        f"best window: during max {worst_during:.2f} s / median {statistics.median(lag[s] for s in during):.2f} s, "
        f"outside max {worst_outside:.2f} s / median {statistics.median(lag[s] for s in outside):.2f} s; "
        f"process CPU during the freeze {call.cpu_s / CALL_FREEZE_S:.2f} cores; spooled {stats.spooled}, "
        f"send failures {stats.send_failures}; spool drained {drained_after_s:.1f} s after the thaw"
    )
