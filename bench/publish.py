"""Publish benchmark: sustained score publish rate, and the spool's write and drain rates.

Against the embedded tansu broker on this machine. Baselines measured in the same run: a bare kafka-python
producer sending the same pre-encoded score messages (no validation, no ordering pump, no spool), and bare
`Spool.append` of the same records one fsync per record. Rows:
- publisher, sustained: `publish_score` from `--streams` concurrent streams, each awaiting its own acks;
- publisher, one stream: one window at a time, each awaited (the latency-bound case);
- spool write: the broker down, every `publish_score` returns once fsync'd in the spool;
- spool drain: the broker back, the spool drained in order to the broker.
The JSON Schema validation of every message (jsonschema, ~0.2-0.4 ms here) bounds the publisher's rate;
its own row shows that cost. Prints a table and writes bench/results/publish.json.

    .venv/bin/python -m bench.publish [--messages 5000] [--streams 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from kafka import KafkaProducer

from agent import messages
from agent.broker import EmbeddedBroker, free_port
from agent.kafka_config import producer_kwargs
from agent.publish import Publisher, encode_record
from agent.settings import KafkaSettings, PublishSettings
from agent.spool import Spool
from agent.topics import ensure_topics
from core.types import Features, Score, StreamId, TaskScore, Transcript, Window

REPO = Path(__file__).resolve().parents[1]


def make_score(stream: StreamId, seq: int) -> Score:
    window = Window(stream, seq, seq * 2.0, seq * 2.0 + 2.0, np.zeros(0, np.float32), (), "utterance")
    transcript = Transcript(window, "", (), "en", 0.0, 10.0)
    ids = np.zeros(1, np.int64)
    features = Features(
        transcript, ids, ids, ids, np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32), 0.8, 1.0, 3.0
    )
    task = TaskScore("sentiment", 0.4, 0.3, 0.1, -0.2, -3.0, 3.0, "selfmm-mosi", "1.0.0")
    return Score(features, (task,), {"scoring": 4.0})


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def build_and_validate(count: int) -> float:
    """Message building + JSON Schema validation + encoding alone (CPU, done by every publish)."""
    scores = [make_score(StreamId("b", "p"), i) for i in range(count)]
    start = time.perf_counter()
    for score in scores:
        messages.envelope("scores", messages.score_message(score, replay=False))
    return _rate(count, time.perf_counter() - start)


def bare_producer(kafka: KafkaSettings, publish: PublishSettings, count: int) -> float:
    scores = [make_score(StreamId("b", "p"), i) for i in range(count)]
    envs = [messages.envelope("scores", messages.score_message(score, replay=False)) for score in scores]
    producer = KafkaProducer(**producer_kwargs(kafka, publish))
    start = time.perf_counter()
    for env in envs:
        producer.send(kafka.topics.scores, key=env.key.encode(), value=env.value, headers=list(env.headers))
    producer.flush()
    elapsed = time.perf_counter() - start
    producer.close()
    return _rate(count, elapsed)


def bare_spool(directory: Path, count: int) -> float:
    env = messages.envelope("scores", messages.score_message(make_score(StreamId("b", "p"), 0), replay=False))
    record = encode_record(env)
    with Spool(directory, 1 << 30) as spool:
        start = time.perf_counter()
        for _ in range(count):
            spool.append([record])
        return _rate(count, time.perf_counter() - start)


async def publish_streams(
    publisher: Publisher, streams: int, count: int, offset: int = 0
) -> tuple[float, list]:
    per_stream = count // streams

    async def one(index: int) -> list[str]:
        stream = StreamId(f"call-{index}", "patient")
        return [await publisher.publish_score(make_score(stream, offset + seq)) for seq in range(per_stream)]

    start = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(streams)))
    return _rate(per_stream * streams, time.perf_counter() - start), [d for r in results for d in r]


async def run(args: argparse.Namespace, work: Path) -> dict[str, object]:
    broker = EmbeddedBroker("127.0.0.1", free_port())
    broker.start()
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, request_timeout_ms=1000)
    publish = PublishSettings(spool_dir=work / "spool", delivery_timeout_s=2.0, retry_backoff_ms=100)
    rows: dict[str, float] = {}
    try:
        ensure_topics(kafka, [kafka.topics.scores])
        rows["bare kafka-python producer (baseline)"] = bare_producer(kafka, publish, args.messages)
        rows["build + validate + encode only (CPU)"] = build_and_validate(args.messages // 5)
        rows["bare spool append, fsync each (baseline)"] = bare_spool(work / "bare-spool", args.messages // 5)
        publisher = Publisher(kafka, publish)
        await publisher.start()
        rows["publisher, sustained"], sent = await publish_streams(publisher, args.streams, args.messages)
        assert set(sent) == {"acked"}, "broker up: every message should be acknowledged"
        start = time.perf_counter()
        single = args.messages // 10
        for seq in range(single):
            await publisher.publish_score(make_score(StreamId("solo", "patient"), seq))
        rows["publisher, one stream, each awaited"] = _rate(single, time.perf_counter() - start)

        await asyncio.to_thread(broker.stop)
        first = await publisher.publish_score(make_score(StreamId("outage", "patient"), 0))  # detects outage
        assert first == "spooled"
        rows["spool write (broker down)"], spooled = await publish_streams(
            publisher, args.streams, args.messages, offset=10_000
        )
        assert set(spooled) == {"spooled"}, "broker down: every message should be spooled"
        pending = publisher.spool_pending
        await asyncio.to_thread(broker.start)
        start = time.perf_counter()
        drained = await publisher.wait_drained(300)
        rows["spool drain (broker back)"] = _rate(pending, time.perf_counter() - start)
        assert drained, "spool did not drain"
        await publisher.close()
    finally:
        broker.stop()
    base_kafka = rows["bare kafka-python producer (baseline)"]
    base_spool = rows["bare spool append, fsync each (baseline)"]
    ratios = {
        "publisher sustained / bare producer": rows["publisher, sustained"] / base_kafka,
        "spool write / bare spool append": rows["spool write (broker down)"] / base_spool,
        "spool drain / bare producer": rows["spool drain (broker back)"] / base_kafka,
    }
    return {
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "messages": args.messages,
        "streams": args.streams,
        "message_bytes": len(encode_record(messages.envelope(
            "scores", messages.score_message(make_score(StreamId("b", "p"), 0), replay=False)))),
        "rates_msg_per_s": rows,
        "ratios": ratios,
    }  # fmt: skip


def _print(report: dict[str, object]) -> None:
    rates = report["rates_msg_per_s"]
    ratios = report["ratios"]
    assert isinstance(rates, dict) and isinstance(ratios, dict)
    print(f"{'path':<45} {'msg/s':>10}")
    for name, rate in rates.items():
        print(f"{name:<45} {rate:>10.0f}")
    print()
    for name, ratio in ratios.items():
        print(f"{name:<45} {ratio:>10.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "publish.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="affectstream-bench-"))
    try:
        report = asyncio.run(run(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
