"""`affectstream evaluate`: replayed scores vs a labels CSV -> report.json, report.md and PNG plots."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from agent.errors import BrokerError
from agent.evaluate import evaluate, read_labels
from agent.jsonl_sink import read_jsonl
from agent.kafka_config import common_kwargs
from agent.messages import decode
from agent.report import write_report
from agent.settings import KafkaSettings
from cli.options import build_settings
from core.errors import ConfigError

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate_command(
        labels: Annotated[
            Path, typer.Option(help="CSV: file, start_s, end_s, label[, label_T, label_A, label_V]")
        ],
        out: Annotated[Path, typer.Option(help="directory for report.json, report.md and the plots")],
        scores: Annotated[Path | None, typer.Option(help="scores as JSON lines (replay --output)")] = None,
        topic: Annotated[str | None, typer.Option(help="read the scores from this Kafka topic")] = None,
        compare: Annotated[
            Path | None, typer.Option(help="a second run's scores (JSON lines) to compare side by side")
        ] = None,
        task: Annotated[str | None, typer.Option(help="task to evaluate if the scores hold several")] = None,
        dataset: Annotated[
            str | None, typer.Option(help="MMSA metric flavour: mosi, mosei or sims (default: by range)")
        ] = None,
    ) -> None:
        """Match scored windows to labelled segments and write a report with metrics, latency and plots."""

        settings = build_settings()
        if (scores is None) == (topic is None):
            raise typer.BadParameter("give exactly one of --scores FILE.jsonl or --topic T")
        report = run_evaluate(labels, out, scores=scores, topic=topic, compare=compare, task=task,
                              dataset=dataset, kafka=settings.kafka)
        metrics = report["run"]["metrics"].get("m", {})
        counts = report["run"]["counts"]
        typer.echo(f"{counts['matched_segments']}/{counts['segments']} segments matched by "
                   f"{counts['matched_windows']}/{counts['windows']} windows; "
                   + ", ".join(f"{k} {v}" for k, v in metrics.items()))
        typer.echo(f"report: {out / 'report.md'}")


def run_evaluate(
    labels: Path, out: Path, *, scores: Path | None = None, topic: str | None = None,
    compare: Path | None = None, task: str | None = None, dataset: str | None = None,
    kafka: KafkaSettings | None = None,
) -> dict[str, Any]:
    """Load scores and labels, evaluate (and compare), write the report; returns it."""

    segments = read_labels(labels)
    if scores is not None:
        messages, source, name = list(read_jsonl(scores)), str(scores), scores.stem
    else:
        assert topic is not None
        kafka = kafka or KafkaSettings()  # type: ignore[call-arg]
        messages, source, name = read_topic(kafka, topic), f"kafka:{topic}", topic
    run = evaluate(messages, segments, name=name, task=task, dataset=dataset)
    sources = {"scores": source, "labels": str(labels)}
    other = None
    if compare is not None:
        other_name = compare.stem if compare.stem != name else f"{compare.stem} (compare)"
        other = evaluate(read_jsonl(compare), segments, name=other_name, task=run.task, dataset=run.dataset)
        sources["compare"] = str(compare)
    return write_report(run, out, sources=sources, other=other)


def read_topic(kafka: KafkaSettings, topic: str, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Every message on `topic`, from the beginning to the end offsets seen at the start (no group)."""




    try:
        consumer = KafkaConsumer(**common_kwargs(kafka), group_id=None, enable_auto_commit=False)
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at {kafka.bootstrap_servers}: {exc}", retryable=True) from exc
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if not partitions:
            raise ConfigError(f"Kafka topic {topic!r} does not exist or has no partitions")
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise BrokerError(f"reading {topic} took longer than {timeout_s} s", retryable=True)
            for records in consumer.poll(timeout_ms=500).values():
                messages.extend(decode(record.value) for record in records)
        return messages
    finally:
        consumer.close()
