"""One evaluation: a run's scores (JSON lines or a Kafka topic) and a labels CSV -> the report on disk.

Matching and metrics are agent/evaluate.py's; the report is agent/report.py's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.evaluate import evaluate
from agent.jsonl_sink import read_jsonl
from agent.report import write_report
from agent.settings import KafkaSettings
from agent.topic_reader import read_topic
from core.labels import read_labels


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
        records = read_topic(kafka or KafkaSettings(), topic)
        messages, source, name = [r.message for r in records], f"kafka:{topic}", topic
    run = evaluate(messages, segments, name=name, task=task, dataset=dataset)
    sources = {"scores": source, "labels": str(labels)}
    other = None
    if compare is not None:
        other_name = compare.stem if compare.stem != name else f"{compare.stem} (compare)"
        other = evaluate(read_jsonl(compare), segments, name=other_name, task=run.task, dataset=run.dataset)
        sources["compare"] = str(compare)
    return write_report(run, out, sources=sources, other=other)
