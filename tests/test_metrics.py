"""agent.metrics: the documented catalogue matches the registry; the exposition renders; helpers record."""

from __future__ import annotations

import re
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import metrics as prom_metrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from agent import metrics

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
_ROW = re.compile(r"^(affectstream_\w+)\s+(counter|gauge|histogram|info)\s+(\S+)\s+(\S+)\s+\S")


def _catalogue() -> dict[str, tuple[str, tuple[str, ...], str]]:
    """The table in the module docstring: exposition name -> (type, label names, unit)."""
    rows = {}
    for line in (metrics.__doc__ or "").splitlines():
        match = _ROW.match(line)
        if match:
            name, kind, labels, unit = match.groups()
            rows[name] = (kind, () if labels == "-" else tuple(labels.split(",")), unit)
    return rows


def _declared() -> dict[str, prom_metrics.MetricWrapperBase]:
    """Every metric object the module declares, by the name it is exposed under."""
    found = {}
    for value in vars(metrics).values():
        if isinstance(value, prom_metrics.MetricWrapperBase):
            suffix = {"counter": "_total", "info": "_info"}.get(value._type, "")
            found[value._name + suffix] = value
    return found


def _value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_catalogue_documents_every_declared_metric_and_nothing_else():
    catalogue = _catalogue()
    assert len(catalogue) >= 19
    assert set(catalogue) == set(_declared())


@pytest.mark.parametrize("name", sorted(_catalogue()))
def test_declared_metric_matches_its_documented_type_labels_and_unit(name):
    kind, labels, unit = _catalogue()[name]
    metric = _declared()[name]
    assert metric._type == kind
    if kind != "info":  # an Info's keys are given when it is set, not declared
        assert tuple(metric._labelnames) == labels
    assert metric._unit == ("" if unit == "1" else unit)


def test_issue_metrics_are_all_present():
    required = {
        "affectstream_active_sessions",
        "affectstream_windows_scored_total",
        "affectstream_windows_shed_total",
        "affectstream_stage_latency_seconds",
        "affectstream_batch_size",
        "affectstream_queue_depth",
        "affectstream_video_frames_dropped_total",
        "affectstream_spool_bytes",
        "affectstream_spool_messages",
        "affectstream_ice_failures_total",
        "affectstream_model_load_seconds",
        "affectstream_spool_full_total",
        "affectstream_alerts_raised_total",
    }
    assert required <= set(_catalogue())
    assert {"window_close", "speech", "features", "scoring", "publish_ack"} <= set(metrics.STAGES)


def test_no_metric_is_labelled_with_identities_or_text():
    forbidden = {"stream", "stream_key", "call_id", "participant_id", "session", "text", "transcript"}
    for metric in _declared().values():
        assert not forbidden & set(metric._labelnames), metric._name


def test_openmetrics_exposition_parses_with_documented_types_and_units():
    metrics.STAGE_LATENCY.labels(stage="scoring")  # make sure a labelled child exists
    body, content_type = metrics.render(OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text")
    text = body.decode()
    assert text.rstrip().endswith("# EOF")
    families = {family.name: family for family in parse_openmetrics(text)}
    for name, (kind, _labels, unit) in _catalogue().items():
        family_name = name.removesuffix("_total") if kind == "counter" else name.removesuffix("_info")
        family = families[family_name if kind in ("counter", "info") else name]
        assert family.type == kind, name
        assert family.unit == ("" if unit == "1" else unit), name
    assert "process_cpu_seconds" in families


def test_text_exposition_carries_current_values():
    metrics.WINDOWS_SCORED.inc(3)
    metrics.SPOOL_BYTES.set(4096)
    body, content_type = metrics.render(None)
    assert content_type.startswith("text/plain")
    samples = {
        sample.name: sample.value
        for family in parse_text(body.decode())
        for sample in family.samples
        if not sample.labels
    }
    assert samples["affectstream_windows_scored_total"] == _value("affectstream_windows_scored_total")
    assert samples["affectstream_windows_scored_total"] >= 3
    assert samples["affectstream_spool_bytes"] == 4096


def test_time_stage_records_one_observation_of_the_elapsed_time():
    count = _value("affectstream_stage_latency_seconds_count", stage="speech")
    total_s = _value("affectstream_stage_latency_seconds_sum", stage="speech")
    under_25ms = _value("affectstream_stage_latency_seconds_bucket", stage="speech", le="0.025")
    started = time.perf_counter()
    with metrics.time_stage("speech"):
        time.sleep(0.03)
    elapsed_s = time.perf_counter() - started
    assert _value("affectstream_stage_latency_seconds_count", stage="speech") == count + 1
    recorded_s = _value("affectstream_stage_latency_seconds_sum", stage="speech") - total_s
    assert 0.03 <= recorded_s <= elapsed_s
    assert _value("affectstream_stage_latency_seconds_bucket", stage="speech", le="0.025") == under_25ms


def test_time_stage_records_even_when_the_stage_raises():
    count = _value("affectstream_stage_latency_seconds_count", stage="features")
    with pytest.raises(RuntimeError, match="boom"), metrics.time_stage("features"):
        raise RuntimeError("boom")
    assert _value("affectstream_stage_latency_seconds_count", stage="features") == count + 1


def test_time_stage_also_keeps_the_milliseconds_when_asked():
    total_s = _value("affectstream_stage_latency_seconds_sum", stage="scoring")
    latencies_ms = {"speech": 1.0}
    with metrics.time_stage("scoring", latencies_ms):
        time.sleep(0.02)
    recorded_s = _value("affectstream_stage_latency_seconds_sum", stage="scoring") - total_s
    assert latencies_ms["speech"] == 1.0 and latencies_ms["scoring"] >= 20.0
    assert latencies_ms["scoring"] == pytest.approx(recorded_s * 1000)  # one measurement, two units


def test_unknown_stage_is_refused_and_nothing_is_recorded():
    before = metrics.render()[0]
    with pytest.raises(ValueError, match="unknown stage 'speach'"):
        with metrics.time_stage("speach"):
            pass
    with pytest.raises(ValueError, match="unknown stage"):
        metrics.observe_stage("decode", 0.1)
    assert b'stage="speach"' not in metrics.render()[0]
    assert b'stage="speach"' not in before


def test_observe_stage_and_batch_land_in_the_right_buckets():
    le_1 = _value("affectstream_stage_latency_seconds_bucket", stage="window_close", le="1.0")
    le_5 = _value("affectstream_stage_latency_seconds_bucket", stage="window_close", le="5.0")
    metrics.observe_stage("window_close", 2.0)
    assert _value("affectstream_stage_latency_seconds_bucket", stage="window_close", le="1.0") == le_1
    assert _value("affectstream_stage_latency_seconds_bucket", stage="window_close", le="5.0") == le_5 + 1

    le_4 = _value("affectstream_batch_size_bucket", stage="scoring", le="4.0")
    le_8 = _value("affectstream_batch_size_bucket", stage="scoring", le="8.0")
    metrics.observe_batch("scoring", 5)
    assert _value("affectstream_batch_size_bucket", stage="scoring", le="4.0") == le_4
    assert _value("affectstream_batch_size_bucket", stage="scoring", le="8.0") == le_8 + 1
    with pytest.raises(ValueError, match="batched stage"):
        metrics.observe_batch("features", 2)


def test_queue_depth_and_model_load_helpers():
    metrics.set_queue_depth("scoring", 7)
    assert _value("affectstream_queue_depth", queue="scoring") == 7
    with pytest.raises(ValueError, match="unknown queue 'kafka'"):
        metrics.set_queue_depth("kafka", 1)
    with metrics.time_model_load("test-model"):
        time.sleep(0.01)
    assert 0.01 <= _value("affectstream_model_load_seconds", model="test-model") < 5


def test_active_sessions_tracks_in_progress_sessions():
    before = _value("affectstream_active_sessions")
    with metrics.ACTIVE_SESSIONS.track_inprogress():
        assert _value("affectstream_active_sessions") == before + 1
    assert _value("affectstream_active_sessions") == before


def test_build_info_names_the_installed_version():
    from importlib.metadata import version

    assert _value("affectstream_build_info", version=version("affectstream")) == 1


async def test_metrics_handler_serves_text_and_openmetrics():
    app = web.Application()
    app.router.add_get("/metrics", metrics.metrics_handler)
    metrics.ICE_FAILURES.inc()
    expected = _value("affectstream_ice_failures_total")
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        body = await response.text()
        assert f"affectstream_ice_failures_total {expected}" in body

        response = await client.get("/metrics", headers={"Accept": OPENMETRICS})
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        families = {family.name: family for family in parse_openmetrics(await response.text())}
        assert families["affectstream_ice_failures"].samples[0].value == expected
