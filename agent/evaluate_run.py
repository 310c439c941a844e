"""One evaluation: a run's scores (JSON lines or a Kafka topic) and a labels CSV -> the report on disk.

Matching and metrics are agent/evaluate.py's; the report is agent/report.py's. Every input is checked at
this boundary (decoding, the affect.scores schema, values) and refused with a ConfigError naming where; the
report directory is written whole or left as it was (core/atomic_output.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from agent import messages
from agent.errors import PublishError
from agent.evaluate import evaluate
from agent.jsonl_sink import read_jsonl
from agent.report import write_report
from agent.settings import KafkaSettings
from agent.topic_reader import read_topic
from core.atomic_output import AtomicOutput
from core.errors import ConfigError
from core.labels import read_labels

log = logging.getLogger(__name__)


def run_evaluate(
    labels: Path, out: Path, *, scores: Path | None = None, topic: str | None = None,
    compare: Path | None = None, task: str | None = None, dataset: str | None = None,
    kafka: KafkaSettings | None = None,
) -> dict[str, Any]:
    """Load scores and labels, evaluate (and compare), write the report; returns it."""

    with AtomicOutput(out, directory=True) as report_dir:  # an unusable --out fails before any work
        segments = read_labels(labels)
        if scores is not None:
            score_messages, source, name = read_jsonl(scores, "scores"), str(scores), scores.stem
        else:
            assert topic is not None
            score_messages, source, name = _topic_messages(kafka or KafkaSettings(), topic), f"kafka:{topic}", topic
        run = evaluate(score_messages, segments, name=name, task=task, dataset=dataset, labels_source=str(labels))
        sources = {"scores": source, "labels": str(labels)}
        other = None
        if compare is not None:
            other_name = compare.stem if compare.stem != name else f"{compare.stem} (compare)"
            other = evaluate(read_jsonl(compare, "scores"), segments, name=other_name, task=run.task,
                             dataset=run.dataset, labels_source=str(labels))  # fmt: skip
            sources["compare"] = str(compare)
        report = write_report(run, report_dir.staging, sources=sources, other=other)
    log.info("wrote report to %s (%d plots)", out, len(report["plots"]))
    return report


def _topic_messages(kafka: KafkaSettings, topic: str) -> list[dict[str, Any]]:
    """The topic's messages, each checked against the affect.scores schema (ConfigError naming its offset)."""
    out = []
    for record in read_topic(kafka, topic):
        try:
            message = record.message
            messages.validate("scores", message)
        except (ValueError, PublishError) as exc:  # not JSON (json.JSONDecodeError is a ValueError), not valid
            where = f"kafka:{topic} partition {record.partition} offset {record.offset}"
            raise ConfigError(f"{where}: not an affect.scores message: {exc}") from None
        out.append(message)
    return out
