"""Every Prometheus metric of the agent, declared once; stages import them and nothing else knows Prometheus.

All metrics live in `REGISTRY` (not the library's global one), served on `/metrics` by `metrics_handler`.
Label values are bounded: stage and batch names come from `STAGES` / `BATCHED_STAGES`, queue names from
`QUEUES`, alert rules from the rules file, topics from the settings; never a stream, call or participant id
(unbounded, and health-related), never transcript text.

Catalogue (the test suite checks this table against the registry: name, type, labels, unit):

name                                    type      labels    unit    meaning
affectstream_active_sessions            gauge     -         1       WHIP sessions open now (autoscaling)
affectstream_sessions_started_total     counter   -         1       WHIP sessions accepted
affectstream_sessions_rejected_total    counter   reason    1       requests refused, reason in `REJECT_REASONS`
affectstream_draining                   gauge     -         1       1 after SIGTERM: no new session, calls finish
affectstream_ice_failures_total         counter   -         1       sessions ended by ICE failure/timeout
affectstream_video_frames_dropped_total counter   -         1       video frames dropped under load
affectstream_windows_closed_total       counter   closed_by 1       windows cut (Window.closed_by)
affectstream_windows_scored_total       counter   -         1       windows analysed and scored
affectstream_windows_shed_total         counter   -         1       windows shed: the analyser was behind
affectstream_windows_failed_total       counter   -         1       windows whose analysis raised
affectstream_stage_latency_seconds      histogram stage     seconds latency per stage in `STAGES`
affectstream_batch_size                 histogram stage     1       items per model run, `BATCHED_STAGES`
affectstream_queue_depth                gauge     queue     1       items waiting, queue in `QUEUES`
affectstream_messages_published_total   counter   topic     1       messages the broker acknowledged
affectstream_spool_bytes                gauge     -         bytes   size of the on-disk publish spool
affectstream_spool_messages             gauge     -         1       messages waiting in the spool
affectstream_spool_full_total           counter   -         1       messages refused: spool full
affectstream_kafka_reachable            gauge     -         1       1 if a bootstrap server took a TCP connection
affectstream_model_load_seconds         gauge     model     seconds duration of each model's last load
affectstream_alerts_raised_total        counter   rule      1       alert episodes the monitor published
affectstream_monitor_records_total      counter   outcome   1       score messages the monitor read, `MONITOR_OUTCOMES`
affectstream_monitor_sessions           gauge     -         1       sessions the monitor keeps state for
affectstream_monitor_sessions_dropped_total counter reason  1       session states forgotten: idle, capacity, revoked
affectstream_monitor_partitions         gauge     -         1       affect.scores partitions assigned to the monitor
affectstream_monitor_rebalances_total   counter   -         1       partition assignments the monitor received
affectstream_build_info                 info      version   1       package version (value always 1)

Stages of `affectstream_stage_latency_seconds`: `window_close` (a window's last sample at ingest → the window
closed), `speech`, `features`, `scoring` (including the micro-batch wait), `publish_ack` (send →
broker acknowledgement) and `end_to_end` (window closed → score acknowledged).
The process collectors (`process_*`, `python_gc_*`, `python_info`) are registered too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    gc_collector,
    platform_collector,
    process_collector,
)
from prometheus_client.exposition import choose_encoder

STAGES = ("window_close", "speech", "features", "scoring", "publish_ack", "end_to_end")
BATCHED_STAGES = ("speech", "scoring")
QUEUES = ("windows", "speech", "scoring", "publish")
# auth: bad or malformed credentials (any WHIP or feed request); capacity: no session slot; closing: that stream's
# last session is still closing (retry shortly); draining: an offer while the process drains after SIGTERM;
# bad_offer: an offer refused (its body, stream id or SDP); bad_request: HTTP that could not be read (malformed,
# a header not UTF-8, a body too slow).
REJECT_REASONS = ("auth", "capacity", "closing", "draining", "bad_offer", "bad_request")
# evaluated: a new window, judged by the rules; duplicate: (stream key, session, seq) seen before; invalid: not a
# valid affect.scores message.
MONITOR_OUTCOMES = ("evaluated", "duplicate", "invalid")

# Windows are 1–15 s long, so end-to-end latency spans milliseconds (a scored batch) to tens of seconds.
_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

REGISTRY = CollectorRegistry(auto_describe=True)
process_collector.ProcessCollector(registry=REGISTRY)
platform_collector.PlatformCollector(registry=REGISTRY)
gc_collector.GCCollector(registry=REGISTRY)

_NS = "affectstream"

# Sessions and media.
ACTIVE_SESSIONS = Gauge("active_sessions", "WHIP sessions open now", namespace=_NS, registry=REGISTRY)
SESSIONS_STARTED = Counter("sessions_started", "WHIP sessions accepted", namespace=_NS, registry=REGISTRY)
SESSIONS_REJECTED = Counter("sessions_rejected", "WHIP offers refused", ["reason"], namespace=_NS, registry=REGISTRY)
DRAINING = Gauge("draining", "1 while draining after SIGTERM: no new session", namespace=_NS, registry=REGISTRY)
ICE_FAILURES = Counter(
    "ice_failures", "Sessions closed because ICE failed or timed out", namespace=_NS, registry=REGISTRY
)
VIDEO_FRAMES_DROPPED = Counter(
    "video_frames_dropped", "Video frames dropped under load", namespace=_NS, registry=REGISTRY
)

# Windows.
WINDOW_CLOSED = Counter("windows_closed", "Windows cut", ["closed_by"], namespace=_NS, registry=REGISTRY)
WINDOWS_SCORED = Counter("windows_scored", "Windows analysed and scored", namespace=_NS, registry=REGISTRY)
WINDOWS_SHED = Counter(
    "windows_shed", "Windows not analysed because the analyser was behind", namespace=_NS, registry=REGISTRY
)
WINDOWS_FAILED = Counter("windows_failed", "Windows whose analysis raised", namespace=_NS, registry=REGISTRY)

# Stages, batches and queues.
STAGE_LATENCY = Histogram(
    "stage_latency",
    "Latency of each pipeline stage",
    ["stage"],
    namespace=_NS,
    unit="seconds",
    buckets=_LATENCY_BUCKETS_S,
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "batch_size",
    "Items per batched model run",
    ["stage"],
    namespace=_NS,
    buckets=_BATCH_BUCKETS,
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge("queue_depth", "Items waiting in a bounded queue", ["queue"], namespace=_NS, registry=REGISTRY)

# Publishing and the spool.
MESSAGES_PUBLISHED = Counter(
    "messages_published", "Messages the broker acknowledged", ["topic"], namespace=_NS, registry=REGISTRY
)
SPOOL_BYTES = Gauge("spool", "Size of the on-disk publish spool", namespace=_NS, unit="bytes", registry=REGISTRY)
SPOOL_MESSAGES = Gauge("spool_messages", "Messages waiting in the spool", namespace=_NS, registry=REGISTRY)
SPOOL_FULL = Counter("spool_full", "Messages refused because the spool was full", namespace=_NS, registry=REGISTRY)
KAFKA_REACHABLE = Gauge(
    "kafka_reachable",
    "1 if a Kafka bootstrap server took a TCP connection at the last probe",
    namespace=_NS,
    registry=REGISTRY,
)

# Models and alerts.
MODEL_LOAD_SECONDS = Gauge(
    "model_load",
    "Time the last load of each model took",
    ["model"],
    namespace=_NS,
    unit="seconds",
    registry=REGISTRY,
)
ALERTS_RAISED = Counter("alerts_raised", "Alert episodes published", ["rule"], namespace=_NS, registry=REGISTRY)

MONITOR_RECORDS = Counter(
    "monitor_records", "Score messages the monitor read, by outcome", ["outcome"], namespace=_NS, registry=REGISTRY
)
MONITOR_SESSIONS = Gauge("monitor_sessions", "Sessions the monitor keeps state for", namespace=_NS, registry=REGISTRY)
MONITOR_SESSIONS_DROPPED = Counter(
    "monitor_sessions_dropped", "Session states the monitor forgot", ["reason"], namespace=_NS, registry=REGISTRY
)
MONITOR_PARTITIONS = Gauge(
    "monitor_partitions", "affect.scores partitions assigned to the monitor", namespace=_NS, registry=REGISTRY
)
MONITOR_REBALANCES = Counter(
    "monitor_rebalances", "Partition assignments the monitor received", namespace=_NS, registry=REGISTRY
)

BUILD_INFO = Info("build", "The running affectstream version", namespace=_NS, registry=REGISTRY)


def _package_version() -> str:
    try:
        return metadata.version("affectstream")
    except metadata.PackageNotFoundError:
        return "unknown"


BUILD_INFO.info({"version": _package_version()})


def _check(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")
    return value


def observe_stage(stage: str, seconds: float) -> None:
    """Record one latency measured elsewhere (e.g. from media timestamps) for `stage`."""
    STAGE_LATENCY.labels(stage=_check(stage, STAGES, "stage")).observe(seconds)


@contextmanager
def time_stage(stage: str, latencies_ms: dict[str, float] | None = None) -> Iterator[None]:
    """Time the enclosed block (also when it raises) into the stage latency histogram, and, when given,
    into `latencies_ms[stage]` in milliseconds (a Score's per-stage latencies)."""
    child = STAGE_LATENCY.labels(stage=_check(stage, STAGES, "stage"))
    started_s = time.perf_counter()
    try:
        yield
    finally:
        elapsed_s = time.perf_counter() - started_s
        child.observe(elapsed_s)
        if latencies_ms is not None:
            latencies_ms[stage] = elapsed_s * 1000.0


def observe_batch(stage: str, size: int) -> None:
    """Record the size of one batched model run."""
    BATCH_SIZE.labels(stage=_check(stage, BATCHED_STAGES, "batched stage")).observe(size)


def count_rejection(reason: str) -> None:
    SESSIONS_REJECTED.labels(reason=_check(reason, REJECT_REASONS, "rejection reason")).inc()


def count_monitor_record(outcome: str) -> None:
    MONITOR_RECORDS.labels(outcome=_check(outcome, MONITOR_OUTCOMES, "monitor outcome")).inc()


def set_queue_depth(queue: str, depth: int) -> None:
    QUEUE_DEPTH.labels(queue=_check(queue, QUEUES, "queue")).set(depth)


@contextmanager
def time_model_load(model: str) -> Iterator[None]:
    """Time loading `model` (a short fixed name such as "whisper" or a bundle id) into the load gauge."""
    started_s = time.perf_counter()
    yield
    MODEL_LOAD_SECONDS.labels(model=model).set(time.perf_counter() - started_s)


def render(accept: str | None = None) -> tuple[bytes, str]:
    """The exposition of `REGISTRY` and its content type, negotiated from an Accept header."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(REGISTRY), content_type


async def metrics_handler(request: web.Request) -> web.Response:
    """aiohttp handler for `GET /metrics`."""
    body, content_type = render(request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})
