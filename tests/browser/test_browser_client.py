"""A real browser streams to a running agent: headless Chromium opens the page `serve` hosts at `/`, captures
its fake camera and microphone (fed from a real recording), sends them over WHIP, and shows the scores.

Everything is real: the agent (Whisper, features, ONNX Runtime, WebRTC via aiortc), the Kafka broker, and
Chromium's WebRTC stack. The test checks that the stream's scores arrive on Kafka AND on the page (same
windows, same values), and that /metrics counted what happened.

It runs twice: over http on 127.0.0.1 (a secure origin as loopback), and over https (ingest.tls_cert_path) on
a name that is not loopback, so that only TLS makes the page a secure origin that may use the camera: the
certificate is self-signed here and Chromium trusts exactly its public key (tests/tls_cert.py).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import ssl
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from uuid import uuid4

import aiohttp
import pytest
from cdp import Chromium, Page
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from tls_cert import SelfSigned, self_signed

from agent.broker import EmbeddedBroker
from agent.loopback import configure_loopback, current_mode
from agent.runtime import open_runtime
from agent.server import AgentServer
from agent.settings import Settings
from agent.tokens import mint_for
from cli.demo import read_scores
from core.types import StreamId

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SECRET = secrets.token_urlsafe(32)  # the agent's ingest.token_secret: the page gets scoped tokens, as in production
WINDOWS_WHILE_LIVE = 2
TABLE_ROWS = 12  # the page shows the last 12 windows
HTTPS_HOST = "agent.test"  # not loopback: Chromium resolves it to 127.0.0.1 (--host-resolver-rules)


@dataclass(frozen=True)
class Origin:
    """How the page is served: http on 127.0.0.1, or https on HTTPS_HOST with a self-signed certificate."""

    cert: SelfSigned | None = None

    def page_url(self, base_url: str) -> str:
        return base_url.replace("127.0.0.1", HTTPS_HOST) if self.cert else base_url

    def chromium_args(self) -> list[str]:
        if self.cert is None:
            return []
        return [*self.cert.chromium_args(), f"--host-resolver-rules=MAP {HTTPS_HOST} 127.0.0.1"]

    def client_ssl(self) -> ssl.SSLContext | bool:
        """What the test's own HTTP requests verify the agent with (the certificate names 127.0.0.1 too)."""
        return ssl.create_default_context(cafile=self.cert.cert) if self.cert else True


def _settings(bootstrap_servers: str, bundle: Path, spool_dir: Path, origin: Origin) -> Settings:
    base = Settings()
    tls = {"tls_cert_path": origin.cert.cert, "tls_key_path": origin.cert.key} if origin.cert else {}
    return base.model_copy(update={
        "kafka": base.kafka.model_copy(update={"bootstrap_servers": bootstrap_servers}),
        "ingest": base.ingest.model_copy(
            update={"port": 0, "token_secret": SecretStr(SECRET), "ice_loopback": "only", **tls}
        ),
        "publish": base.publish.model_copy(update={"spool_dir": spool_dir}),
        "scoring": base.scoring.model_copy(
            update={"bundles": [bundle], "providers": ["CPUExecutionProvider"]}
        ),
    })


def _capture_args(wav: Path, y4m: Path) -> list[str]:
    return [
        "--use-fake-ui-for-media-stream",  # grant camera + microphone without a prompt
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        f"--use-file-for-fake-video-capture={y4m}",
        "--disable-features=WebRtcHideLocalIpsWithMdns",  # real host candidates, not .local names
        "--autoplay-policy=no-user-gesture-required",
    ]


async def _metrics(base_url: str, client_ssl: ssl.SSLContext | bool) -> dict[str, float]:
    """Every sample on /metrics as {'name{label="v"}': value}."""
    async with aiohttp.ClientSession() as http, http.get(f"{base_url}/metrics", ssl=client_ssl) as response:
        assert response.status == 200
        text = await response.text()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def _delta(after: dict[str, float], before: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


async def _wait_status(page: Page, wanted: str, timeout_s: float) -> None:
    try:
        status = await page.wait_for(
            f"['{wanted}', 'error'].includes(affectstream.status) && affectstream.status", timeout_s
        )
    except TimeoutError:
        pytest.fail(f"page never reached {wanted!r}: {await _page_state(page)}; console: {page.console}")
    if status != wanted:
        detail = await page.evaluate("affectstream.error")
        pytest.fail(f"page status {status!r}: {detail}; console: {page.console}")


async def _page_state(page: Page) -> str:
    return str(await page.evaluate(
        "JSON.stringify({status: document.getElementById('status').textContent,"
        " connection: affectstream.connection, feed: affectstream.feed, scores: affectstream.scores.length})"
    ))


async def _wait_metric(
    base_url: str, client_ssl: ssl.SSLContext | bool, name: str, value: float, timeout_s: float
) -> dict[str, float]:
    deadline = time.monotonic() + timeout_s
    while True:
        samples = await _metrics(base_url, client_ssl)
        if samples.get(name) == value or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.2)


def _essentials(messages: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What the page and Kafka must agree on."""
    return [
        (m["stream"]["call_id"], m["stream"]["participant_id"], m["seq"], m["start_s"], m["end_s"], m["shed"],
         tuple((s["task"], s["m"], s["t"], s["a"], s["v"]) for s in m["scores"]))
        for m in sorted(messages, key=lambda m: m["seq"])
    ]


@dataclass
class Observed:
    """What one browser session produced, seen from Kafka, the page and /metrics."""

    on_kafka: list[dict[str, Any]]
    on_page: list[dict[str, Any]]
    table_rows: int
    metrics_before: dict[str, float]
    metrics_live: dict[str, float]
    metrics_ended: dict[str, float]
    metrics_after: dict[str, float]
    static: dict[str, tuple[int, str]]
    informs_vision: bool
    address_bar_query: str
    delete_status: int
    page_origin: list[Any]  # [location.protocol, window.isSecureContext]


async def _browser_session(
    settings: Settings, stream: StreamId, chromium_path: str, capture: list[str], profile_dir: Path, origin: Origin
) -> Observed:
    """Start the agent, let Chromium stream through the page until 2 windows are scored, stop, collect."""
    query = urlencode({"call_id": stream.call_id, "participant_id": stream.participant_id, "role": stream.role})
    # the tokens in the fragment, which the browser never sends: a publisher's of this participant, a viewer's
    publisher = mint_for(SECRET, "publisher", stream.call_id, stream.participant_id, role=stream.role, ttl_s=600)
    fragment = urlencode({"token": publisher, "view_token": mint_for(SECRET, "viewer", stream.call_id, ttl_s=600)})
    async with open_runtime(settings) as runtime:
        server = AgentServer(settings, runtime)
        base = await server.start()
        tls = origin.client_ssl()
        try:
            before = await _metrics(base, tls)
            async with Chromium.launch(chromium_path, profile_dir, [*capture, *origin.chromium_args()]) as browser:
                page = await browser.open(f"{origin.page_url(base)}/?{query}#{fragment}")
                await page.wait_for("document.readyState === 'complete' && !!window.affectstream", 15)
                address_bar_query = await page.evaluate("window.location.search + window.location.hash")
                page_origin = await page.evaluate("[window.location.protocol, window.isSecureContext]")
                await page.evaluate("document.getElementById('start').click()")
                await _wait_status(page, "live", 30)
                live = await _metrics(base, tls)
                await page.wait_for(f"affectstream.scores.length >= {WINDOWS_WHILE_LIVE}", 60)
                await page.evaluate("document.getElementById('stop').click()")
                await _wait_status(page, "stopped", 10)
                delete_status = await page.evaluate("affectstream.deleteStatus")
                # the session ends once its last window is scored and handed to the publisher
                ended = await _wait_metric(base, tls, "affectstream_active_sessions", 0, 30)
                assert runtime.publisher is not None
                await runtime.publisher.wait_drained(30)
                kafka = settings.kafka
                on_kafka = await asyncio.to_thread(
                    read_scores, kafka.bootstrap_servers, kafka.topics.scores, stream.key
                )
                on_page = await page.wait_for(
                    f"affectstream.scores.length >= {max(1, len(on_kafka))} && affectstream.scores", 10
                )
                rows = await page.evaluate("document.querySelectorAll('#windows tbody tr').length")
                if os.environ.get("AFFECTSTREAM_TEST_SCREENSHOT"):
                    await page.screenshot(Path(os.environ["AFFECTSTREAM_TEST_SCREENSHOT"]))
            static = await _http_probes(base, tls, stream)
            after = await _metrics(base, tls)
        finally:
            await server.close()
    informs_vision = "vision" in runtime.bundles[0].card.informed_modalities
    return Observed(
        on_kafka, on_page, rows, before, live, ended, after, static, informs_vision, address_bar_query,
        delete_status, page_origin,
    )


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_chromium_streams_camera_and_microphone_and_shows_the_scores(
    scheme: str,
    kafka_broker: EmbeddedBroker,
    live_bundle: Path,
    fake_capture: tuple[Path, Path],
    chromium_path: str,
    tmp_path: Path,
) -> None:
    stream = StreamId(f"browser-{uuid4().hex[:8]}", "patient-1", "patient")
    origin = Origin(self_signed(tmp_path / "tls", HTTPS_HOST) if scheme == "https" else None)
    settings = _settings(kafka_broker.bootstrap_servers, live_bundle, tmp_path / "spool", origin)
    previous_loopback = current_mode()
    try:
        seen = await _browser_session(
            settings, stream, chromium_path, _capture_args(*fake_capture), tmp_path / "chromium", origin
        )
    finally:
        configure_loopback(previous_loopback)
    on_kafka = seen.on_kafka
    # a secure origin (the camera needs one): over https by TLS alone, the name is not loopback
    assert seen.page_origin == [f"{scheme}:", True]

    # the same windows with the same scores on Kafka and on the page
    assert on_kafka, "no score of the browser's stream arrived on Kafka"
    assert _essentials(seen.on_page) == _essentials(on_kafka)
    assert sorted(seen.on_page, key=lambda m: m["seq"]) == on_kafka  # the feed's messages are Kafka's own
    assert [m["seq"] for m in on_kafka] == list(range(len(on_kafka)))
    assert len(on_kafka) >= WINDOWS_WHILE_LIVE
    # utterances closed by silence; the page's Stop (WHIP DELETE) flushed the one in progress, if any
    assert {m["closed_by"] for m in on_kafka[:-1]} == {"utterance"}
    assert on_kafka[-1]["closed_by"] in ("utterance", "stream_end")
    assert seen.delete_status == 200
    assert seen.table_rows == sum(max(1, len(m["scores"])) for m in on_kafka[-TABLE_ROWS:])
    scored = [m for m in on_kafka if not m["shed"]]
    assert scored, "every window was shed"
    assert all(m["stream"]["role"] == stream.role for m in on_kafka)
    # real media went through the browser: the recording is speech (and a face, when the model reads faces)
    assert max(m["quality"]["speech_ratio"] for m in scored) > 0.3
    assert all(s["label_min"] <= s["m"] <= s["label_max"] for m in scored for s in m["scores"])
    if seen.informs_vision:
        assert max(m["quality"]["face_visible_ratio"] for m in scored) > 0.5

    # /metrics counted what the test saw
    before, after = seen.metrics_before, seen.metrics_after
    assert seen.metrics_live["affectstream_active_sessions"] == 1
    assert seen.metrics_ended["affectstream_active_sessions"] == 0
    assert _delta(after, before, "affectstream_sessions_started_total") == 1
    assert _delta(after, before, "affectstream_windows_scored_total") == len(scored)
    assert _delta(after, before, "affectstream_windows_shed_total") == len(on_kafka) - len(scored)
    published = f'affectstream_messages_published_total{{topic="{settings.kafka.topics.scores}"}}'
    assert _delta(after, before, published) == len(on_kafka)
    for stage in ("speech", "features", "scoring"):
        assert _delta(after, before, _latency_count(stage)) == len(scored)
    assert _delta(after, before, _latency_count("publish_ack")) >= len(on_kafka)
    closed_by = Counter(m["closed_by"] for m in on_kafka)
    closed_metric = "affectstream_windows_closed_total"
    closed_deltas = {k: _delta(after, before, k) for k in after if k.startswith(closed_metric + "{")}
    assert sum(closed_deltas.values()) == len(on_kafka)
    for reason, count in closed_by.items():
        assert closed_deltas[f'{closed_metric}{{closed_by="{reason}"}}'] == count
    assert _delta(after, before, "affectstream_ice_failures_total") == 0
    assert after['affectstream_model_load_seconds{model="whisper"}'] > 0
    assert after["affectstream_spool_messages"] == 0  # everything reached the broker
    assert seen.static == {"app.js": (200, "text/javascript"), "chart.js": (200, "text/javascript"),
                           "style.css": (200, "text/css"), "nope.txt": (404, ""),
                           "feed without token": (401, ""), "feed with a wrong token": (401, ""),
                           "feed with the token in its URL": (401, ""),
                           "feed with another call's viewer token": (403, "")}
    # the page took the tokens from its URL's fragment and removed them from the address bar
    assert seen.address_bar_query == "?" + urlencode(
        {"call_id": stream.call_id, "participant_id": stream.participant_id, "role": stream.role}
    )


def _latency_count(stage: str) -> str:
    return f'affectstream_stage_latency_seconds_count{{stage="{stage}"}}'


async def _http_probes(
    base_url: str, client_ssl: ssl.SSLContext | bool, stream: StreamId
) -> dict[str, tuple[int, str]]:
    """Status and content type of the page's assets, a missing asset, and the score feed with wrong credentials."""
    feed = f"{base_url}/streams/{stream.call_id}/{stream.participant_id}/scores"
    viewer = mint_for(SECRET, "viewer", stream.call_id, ttl_s=60)
    urls = {name: (f"{base_url}/static/{name}", "") for name in ("app.js", "chart.js", "style.css", "nope.txt")}
    urls.update({"feed without token": (feed, ""), "feed with a wrong token": (feed, "wrong"),
                 "feed with the token in its URL": (f"{feed}?token={viewer}", ""),
                 "feed with another call's viewer token": (feed, mint_for(SECRET, "viewer", "other", ttl_s=60))})
    found: dict[str, tuple[int, str]] = {}
    async with aiohttp.ClientSession() as http:
        for name, (url, token) in urls.items():
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.get(url, ssl=client_ssl, headers=headers) as response:
                found[name] = (response.status, response.content_type if response.status == 200 else "")
    return found

