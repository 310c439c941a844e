"""Cluster rehearsal: three agents behind HAProxy on one Kafka broker, six real WebRTC calls through the proxy, a
rolling restart, a reconnect, a Kafka outage and a crash; then every window is read back from Kafka.

    .venv/bin/python -m bench.cluster_rehearsal [--bundle DIR] [--outage-s 20] [--out PATH]

It starts (bench/_cluster.py) the embedded tansu broker, three `affectstream serve` processes (each with its own
port, spool directory and ingest.public_url; scoped tokens only), HAProxy from the distribution in front of them
(deploy/haproxy-rehearsal.cfg: round robin over the agents whose /readyz is 200, no affinity) and `affectstream
monitor` with a rule that raises once per session. Each call is an aiortc peer sending a real recording
(encoded once: Opus, VP8) in real time to the proxy's /whip. Three waves, calls of 12.6 s (CREMA-D, six takes of
one sentence) or 3 s (one GRID sentence):

1. Three score feeds of call-1 are opened through the proxy (round robin: one per agent, so two of them are
   served by agents that do not own the call). call-1 and call-2 start. While they run, tokens of call-2 are
   used on call-1's feed and offer (through the proxy, once per agent) and on its session (DELETE at its
   owner): each must be refused. call-2's participant reconnects 3 s in (a 3 s sentence), offered through the
   proxy while its first session still runs: should the offer reach that session's agent, it answers 409 and
   the offer goes again, so another agent takes it; the first session ends at 7 s.
2. call-3's agent gets SIGTERM 3 s into the call: it must turn unready at once and HAProxy must take it out;
   call-4 and call-5 (3 s) then go to the other agents; call-3 goes on to its end, the agent exits 0 within
   ingest.drain_timeout_s and is started again.
3. Kafka is paused for `--outage-s` (SIGSTOP: the embedded broker keeps topics in memory only, so a restart
   would lose them): every agent must stay ready while call-6 runs and its agent spools; that agent is killed
   with SIGKILL while Kafka is still down; Kafka resumes; the agent restarts on the same spool directory and
   must send everything it spooled.

Then the scores topic is read back whole and each session's windows are counted (bench/_topic_audit.py), and
the monitor's alerts. It prints a table of what it checked and writes JSON (bench/results/cluster_rehearsal.json);
the exit code is 1 when a check failed. tests/live/test_cluster_rehearsal.py runs the same scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from agent import topic_reader
from agent.broker import EmbeddedBroker, free_port
from agent.settings import KafkaSettings, TopicSettings
from agent.stream_client import EncodedRecording, StreamError, StreamResult, encode_recording, stream_recording
from agent.tokens import mint_for
from agent.topic_reader import TopicRecord
from bench._cluster import (
    AgentProcess,
    Cluster,
    MonitorProcess,
    ProxyProcess,
    SessionEvent,
    agent_env,
    monitor_env,
    paused,
    probe,
)
from bench._topic_audit import SessionWindows, audit
from core.card import DEFAULT_BUNDLE_DIR

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data").resolve()
LONG_CALL = DATA / "av" / "derived" / "crema_d_1001_DFA_6emotions.mp4"  # 12.6 s: six takes of one sentence
SHORT_CALL = DATA / "av" / "grid" / "grid_bbaf2n.mpg"  # 3 s: one sentence
RESULTS = REPO / "bench" / "results" / "cluster_rehearsal.json"

AGENTS = 3
PARTICIPANT, ROLE = "p1", "patient"
TOKEN_TTL_S = 3600
DRAIN_TIMEOUT_S = 60.0
OUTAGE_S = 20.0
READY_TIMEOUT_S = 240.0  # three agents load their models at once on a small machine
RECONNECT_AFTER_S = 3.0  # call-2's second session is offered this long after its first opened ...
FIRST_SESSION_S = 7.0  # ... which sends this much of the recording, then ends
SIGTERM_AFTER_S = 3.0
CLIENT_DRAIN_S = 1.0  # after its last packet a client waits this long before DELETE (the server may lag)
RULES = """\
rules:
  - name: every_session
    kind: mean_above
    task: sentiment
    windows: 1
    threshold: -3.5   # below the scale's -3: the first scored window of every session raises, none clears
    persist: 1
    severity: info
"""


@dataclass(frozen=True)
class Media:
    long: EncodedRecording
    short: EncodedRecording
    first_part: EncodedRecording  # the first FIRST_SESSION_S of `long`


@dataclass
class SessionFacts:
    call_id: str
    session_id: str
    owner: str  # the agent that logged it opened
    location: str  # the Location the client got, and sent its DELETE to
    owner_url: str
    closed: str | None  # why its owner closed it ("delete": the client's DELETE reached it)
    logged_by: list[str]  # every agent whose log names the session
    audio_s: float  # media the client sent
    refused_offers: list[int] = field(default_factory=list)  # statuses of offers refused before it was taken


@dataclass
class Refusal:
    what: str  # "feed", "publish" or "delete"
    status: int
    agent: str  # the agent that answered
    reason: str


@dataclass
class FeedFacts:
    agent: str  # the agent that served it (HAProxy's X-Served-By)
    windows: list[tuple[str, int]]  # (session, seq) of call-1's windows it delivered


@dataclass
class DrainFacts:
    agent: str
    unready_after_s: float  # SIGTERM to the first 503 from its /readyz
    alive_while_draining: bool  # /healthz 200 then
    proxy_out_after_s: float  # SIGTERM to HAProxy reporting it DOWN
    exit_code: int
    exit_after_s: float  # SIGTERM to exit
    drain_timeout_s: float
    restart_ready_s: float


@dataclass
class OutageFacts:
    paused_s: float  # SIGSTOP to SIGCONT of the broker
    readiness: dict[str, list[int]]  # /readyz statuses of each agent, sampled while paused (before the kill)
    killed: str
    spooled_before_kill: int  # the killed agent's spool, from its /readyz
    on_kafka_before_restart: int  # call-6's distinct windows on Kafka after the resume, before the restart
    spool_found_at_restart: int | None  # what the restarted agent logged: records found in its spool ...
    spool_drained_at_restart: int | None  # ... and drained
    restart_ready_s: float
    spool_left: dict[str, int] = field(default_factory=dict)  # each agent's spool at the end


@dataclass
class Rehearsal:
    agents: list[str]
    sessions: dict[str, SessionFacts]  # by session id
    calls: dict[str, list[str]]  # call id -> its session ids, in order
    feeds: list[FeedFacts]
    call1_on_kafka: list[tuple[str, int]]  # (session, seq) of call-1 read from the topic after the call
    refusals: list[Refusal]
    call1_open_after_refusals: bool  # the refused DELETE ended nothing
    monitor_sessions_after_wave1: int  # the monitor's /readyz "sessions"
    alerts_after_wave1: dict[str, int]  # call-2's sessions -> raised alerts
    drain: DrainFacts
    new_call_owners: list[str]  # call-4 and call-5, offered once HAProxy had taken the drained agent out
    outage: OutageFacts
    windows: dict[str, SessionWindows]  # by session id: every window of the scores topic
    alerts: dict[str, int]  # by session id: distinct raised alert ids
    monitor_ready_at_end: bool
    timings_s: dict[str, float] = field(default_factory=dict)

    def session_of(self, call_id: str, index: int = 0) -> SessionFacts:
        return self.sessions[self.calls[call_id][index]]


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


# -- calls, tokens and requests ------------------------------------------------------------------------------


def publisher_token(cluster: Cluster, call_id: str) -> str:
    return mint_for(cluster.secret, "publisher", call_id, PARTICIPANT, role=ROLE, ttl_s=TOKEN_TTL_S)


def viewer_token(cluster: Cluster, call_id: str) -> str:
    return mint_for(cluster.secret, "viewer", call_id, ttl_s=TOKEN_TTL_S)


def whip_url(base: str, call_id: str) -> str:
    return f"{base}/whip?call_id={call_id}&participant_id={PARTICIPANT}&role={ROLE}"


def first_seconds(recording: EncodedRecording, seconds: float) -> EncodedRecording:
    def before(packet: Any) -> bool:
        return packet.pts is not None and packet.time_base is not None and packet.pts * packet.time_base < seconds

    audio = tuple(p for p in recording.audio if before(p))
    video = tuple(p for p in recording.video if before(p))
    return EncodedRecording(recording.name, audio, video, min(seconds, recording.audio_s))


def load_media() -> Media:
    long = encode_recording(LONG_CALL)
    return Media(long, encode_recording(SHORT_CALL), first_seconds(long, FIRST_SESSION_S))


async def place_call(cluster: Cluster, recording: EncodedRecording, call_id: str, *,
                     busy_retries: int = 0) -> tuple[StreamResult, list[int]]:  # fmt: skip
    """Stream `recording` as `call_id`'s participant through the proxy; an offer its agent refuses because the
    participant's session there is still live (409) is offered again, up to `busy_retries` times."""
    refused: list[int] = []
    while True:
        try:
            result = await stream_recording(
                replace(recording, name=call_id), whip_url(cluster.proxy.base, call_id),
                publisher_token(cluster, call_id), drain_s=CLIENT_DRAIN_S,
            )  # fmt: skip
            return result, refused
        except StreamError as exc:
            if exc.status != 409 or len(refused) >= busy_retries:
                raise
            refused.append(exc.status)


async def opened_session(cluster: Cluster, call_id: str, client: asyncio.Task[Any], *,
                         known: frozenset[str] = frozenset(), timeout_s: float = 30.0) -> SessionEvent:  # fmt: skip
    """The first session of `call_id` not in `known` that an agent logged opened (the client's error, should it
    fail first)."""
    key = f"{call_id}/{PARTICIPANT}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for event in cluster.session_events():
            if event.event == "opened" and event.detail == key and event.session_id not in known:
                return event
        if client.done():
            client.result()
        await asyncio.sleep(0.1)
    raise RuntimeError(f"no agent opened a new session of {key} within {timeout_s:.0f} s")


async def refused(what: str, method: str, url: str, token: str, agent: str = "",
                  body: bytes | None = None) -> Refusal:  # fmt: skip
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/sdp"
    async with aiohttp.ClientSession() as http, http.request(method, url, data=body, headers=headers) as response:
        reason = (await response.text()).strip()[:120]
        return Refusal(what, response.status, response.headers.get("X-Served-By", agent), reason)


@dataclass
class Feed:
    """A score feed (Server-Sent Events) read in the background."""

    agent: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def windows(self, key: str) -> list[tuple[str, int]]:
        return sorted({(e["session"], e["seq"]) for e in self.events if e["stream"]["key"] == key})

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def open_feed(url: str, token: str) -> Feed:
    feed, opened = Feed(), asyncio.Event()

    async def read() -> None:
        timeout = aiohttp.ClientTimeout(total=None)
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url, headers=headers) as response:
            if response.status != 200:
                raise RuntimeError(f"feed {url} answered {response.status}: {await response.text()}")
            feed.agent = response.headers.get("X-Served-By", "")
            opened.set()
            async for line in response.content:
                if line.startswith(b"data: "):
                    feed.events.append(json.loads(line[6:]))

    feed.task = asyncio.create_task(read())
    waiting = asyncio.create_task(opened.wait())
    await asyncio.wait([feed.task, waiting], timeout=15, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if feed.task.done():
        feed.task.result()
    if not opened.is_set():
        raise RuntimeError(f"feed {url} did not open")
    return feed


async def read_back(kafka: KafkaSettings, topic: str, *, timeout_s: float = 30.0) -> list[TopicRecord]:
    """Every record of `topic` once none came for 2 s."""
    reader = KafkaSettings(bootstrap_servers=kafka.bootstrap_servers, request_timeout_ms=3000)
    return await asyncio.to_thread(
        topic_reader.read_topic, reader, topic, timeout_s=timeout_s, if_missing="wait", quiet_s=2.0
    )


def windows_of(records: list[TopicRecord], call_id: str) -> list[tuple[str, int]]:
    key = f"{call_id}/{PARTICIPANT}"
    return sorted({(r.message["session"], r.message["seq"]) for r in records if r.key == key})


async def raised_alerts(kafka: KafkaSettings, sessions: set[str], timeout_s: float) -> dict[str, int]:
    """Distinct raised alert ids per session, once every one of `sessions` has one (or at the deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        alerts = await read_back(kafka, kafka.topics.alerts)
        ids: dict[str, set[str]] = {}
        for record in alerts:
            if record.message["event"] == "raised":
                ids.setdefault(record.message["session"], set()).add(record.message["alert_id"])
        if sessions <= ids.keys() or time.monotonic() > deadline:
            return {session: len(found) for session, found in ids.items()}
        await asyncio.sleep(1.0)


async def until_unready(agent: AgentProcess, since: float, timeout_s: float = 10.0) -> float:
    while (await agent.readyz()).status != 503:
        if time.monotonic() - since > timeout_s:
            raise RuntimeError(f"{agent.name} still ready {timeout_s:.0f} s after SIGTERM")
        await asyncio.sleep(0.01)
    return time.monotonic() - since


async def settled_spool(agent: AgentProcess, settle_s: float = 1.0) -> int:
    """The agent's spool once it held the same number of messages for `settle_s` (the last window's hand-over
    to the spool may lag its session's end by a moment)."""
    last, since = -1, time.monotonic()
    while True:
        now = (await agent.readyz()).spool_messages
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= settle_s:
            return now
        await asyncio.sleep(0.2)


async def sample_readiness(agents: list[AgentProcess], until: float, every_s: float = 0.25) -> dict[str, list[int]]:
    samples: dict[str, list[int]] = {agent.name: [] for agent in agents}
    while time.monotonic() < until:
        for agent, answer in zip(agents, await asyncio.gather(*(a.readyz() for a in agents)), strict=True):
            samples[agent.name].append(answer.status)
        await asyncio.sleep(every_s)
    return samples


# -- the cluster ---------------------------------------------------------------------------------------------


def plan_cluster(broker: EmbeddedBroker, bundle: Path, workdir: Path, *,
                 drain_timeout_s: float = DRAIN_TIMEOUT_S) -> Cluster:  # fmt: skip
    """The parts, on free ports of 127.0.0.1, with the rehearsal's own topics and token secret; none started."""
    prefix = f"rehearsal{uuid.uuid4().hex[:8]}"
    topics = TopicSettings(scores=f"{prefix}.scores", transcripts=f"{prefix}.transcripts",
                           alerts=f"{prefix}.alerts", partitions=3)  # fmt: skip
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, request_timeout_ms=2000, topics=topics)
    secret = secrets.token_urlsafe(48)
    agents = []
    for index in range(AGENTS):
        port, home = free_port(), workdir / f"agent-{index}"
        env = agent_env(kafka, bundle, home / "spool", port, secret, drain_timeout_s)
        agents.append(AgentProcess(f"agent-{index}", port, home, env))
    monitor_port = free_port()
    return Cluster(
        broker, kafka, secret, agents, ProxyProcess(free_port(), free_port(), workdir / "proxy"),
        MonitorProcess(monitor_port, workdir / "monitor", monitor_env(kafka, monitor_port, f"{prefix}-monitor")),
    )  # fmt: skip


async def start_cluster(cluster: Cluster) -> None:
    """Every part started; returns once each agent is ready and in the proxy, and the monitor consumes."""
    for agent in cluster.agents:
        await agent.start()
    cluster.proxy.start(cluster.agents)
    await cluster.monitor.start(RULES)
    await asyncio.gather(*(agent.wait_ready(READY_TIMEOUT_S) for agent in cluster.agents))
    await cluster.monitor.wait_ready(60.0)
    for agent in cluster.agents:
        await cluster.proxy.wait_state(agent.name, "UP", 10.0)


async def stop_cluster(cluster: Cluster) -> None:
    await asyncio.gather(*(agent.stop() for agent in cluster.agents), return_exceptions=True)
    with contextlib.suppress(Exception):
        await cluster.monitor.stop()
    cluster.proxy.stop()


# -- the waves -----------------------------------------------------------------------------------------------


@dataclass
class Placed:
    """Each call's sessions as they were taken: (the opening its agent logged, what the client saw)."""

    sessions: dict[str, list[tuple[SessionEvent, StreamResult, list[int]]]] = field(default_factory=dict)

    def add(self, call_id: str, event: SessionEvent, outcome: tuple[StreamResult, list[int]]) -> None:
        self.sessions.setdefault(call_id, []).append((event, *outcome))


@dataclass
class WaveOne:
    feeds: list[FeedFacts]
    call1_on_kafka: list[tuple[str, int]]
    refusals: list[Refusal]
    call1_open_after_refusals: bool
    monitor_sessions: int
    alerts: dict[str, int]


async def wave_one(cluster: Cluster, media: Media, placed: Placed) -> WaveOne:
    proxy = cluster.proxy.base
    feeds = [await open_feed(f"{proxy}/calls/call-1/scores", viewer_token(cluster, "call-1")) for _ in cluster.agents]
    call1 = asyncio.create_task(place_call(cluster, media.long, "call-1"))
    call2 = asyncio.create_task(place_call(cluster, media.first_part, "call-2"))
    first, second = await opened_session(cluster, "call-1", call1), await opened_session(cluster, "call-2", call2)
    reconnect_at = time.monotonic() + RECONNECT_AFTER_S

    owner = cluster.agent(first.agent)
    other_viewer, other_publisher = viewer_token(cluster, "call-2"), publisher_token(cluster, "call-2")
    refusals = [await refused("feed", "GET", f"{proxy}/calls/call-1/scores", other_viewer) for _ in cluster.agents]
    refusals += [await refused("publish", "POST", whip_url(proxy, "call-1"), other_publisher, body=b"v=0\r\n")
                 for _ in cluster.agents]  # fmt: skip
    refusals.append(await refused("delete", "DELETE", f"{owner.base}/whip/{first.session_id}", other_publisher,
                                  owner.name))  # fmt: skip
    await asyncio.sleep(0.5)
    still_open = not any(e.session_id == first.session_id and e.event == "closed" for e in owner.session_events())

    await asyncio.sleep(max(0.0, reconnect_at - time.monotonic()))
    reconnect = asyncio.create_task(place_call(cluster, media.short, "call-2", busy_retries=len(cluster.agents)))
    rejoined = await opened_session(cluster, "call-2", reconnect, known=frozenset({second.session_id}))
    for event, task in ((first, call1), (second, call2), (rejoined, reconnect)):
        placed.add(event.detail.split("/")[0], event, await task)
    for agent in cluster.agents:
        await agent.wait_idle(60.0)

    call1_on_kafka = windows_of(await read_back(cluster.kafka, cluster.kafka.topics.scores), "call-1")
    deadline = time.monotonic() + 20.0
    while any(set(call1_on_kafka) - set(f.windows("call-1/p1")) for f in feeds):
        if time.monotonic() > deadline:
            break  # the check says which feed missed what
        await asyncio.sleep(0.2)
    feed_facts = [FeedFacts(feed.agent, feed.windows("call-1/p1")) for feed in feeds]
    for feed in feeds:
        await feed.close()

    alerts = await raised_alerts(cluster.kafka, {second.session_id, rejoined.session_id}, timeout_s=30.0)
    monitor_sessions = int((await cluster.monitor.readyz()).body.get("sessions", 0))
    return WaveOne(feed_facts, call1_on_kafka, refusals, still_open, monitor_sessions,
                   {s: alerts.get(s, 0) for s in (second.session_id, rejoined.session_id)})  # fmt: skip


@dataclass
class WaveTwo:
    drain: DrainFacts
    new_call_owners: list[str]


async def wave_two(cluster: Cluster, media: Media, placed: Placed, drain_timeout_s: float) -> WaveTwo:
    call3 = asyncio.create_task(place_call(cluster, media.long, "call-3"))
    opened = await opened_session(cluster, "call-3", call3)
    draining = cluster.agent(opened.agent)
    await asyncio.sleep(SIGTERM_AFTER_S)
    draining.signal(signal.SIGTERM)
    signalled = time.monotonic()
    unready_s = await until_unready(draining, signalled)
    alive = (await probe(f"{draining.base}/healthz")).status == 200
    await cluster.proxy.wait_state(draining.name, "DOWN", 10.0)
    out_s = time.monotonic() - signalled

    new_calls = [asyncio.create_task(place_call(cluster, media.short, call)) for call in ("call-4", "call-5")]
    new_owners = []
    for call, task in zip(("call-4", "call-5"), new_calls, strict=True):
        event = await opened_session(cluster, call, task)
        new_owners.append(event.agent)
        placed.add(call, event, await task)
    placed.add("call-3", opened, await call3)
    exit_code = await draining.wait_exit(drain_timeout_s + 30.0)
    exit_s = time.monotonic() - signalled

    await draining.start()  # the same port and spool directory, as a pod that comes back
    restart_s = await draining.wait_ready(READY_TIMEOUT_S)
    await cluster.proxy.wait_state(draining.name, "UP", 10.0)
    drain = DrainFacts(draining.name, unready_s, alive, out_s, exit_code, exit_s, drain_timeout_s, restart_s)
    return WaveTwo(drain, new_owners)


async def wave_three(cluster: Cluster, media: Media, placed: Placed, outage_s: float) -> OutageFacts:
    agents = cluster.agents
    with paused(cluster.broker):
        paused_at = time.monotonic()
        readiness = asyncio.create_task(sample_readiness(agents, until=paused_at + outage_s))
        call6 = asyncio.create_task(place_call(cluster, media.long, "call-6"))
        opened = await opened_session(cluster, "call-6", call6)
        placed.add("call-6", opened, await call6)
        crashed = cluster.agent(opened.agent)
        await crashed.wait_idle(60.0)
        spooled = await settled_spool(crashed)
        samples = await readiness
        crashed.signal(signal.SIGKILL)
        await crashed.wait_exit(10.0)
    paused_s = time.monotonic() - paused_at

    before_restart = len(windows_of(await read_back(cluster.kafka, cluster.kafka.topics.scores), "call-6"))
    await crashed.start()
    restart_s = await crashed.wait_ready(READY_TIMEOUT_S)
    deadline = time.monotonic() + 60.0
    while (await crashed.readyz()).spool_messages or crashed.spool_log(crashed.starts)[1] is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{crashed.name}: spool not drained 60 s after its restart")
        await asyncio.sleep(0.2)
    found, drained = crashed.spool_log(crashed.starts)
    return OutageFacts(paused_s, samples, crashed.name, spooled, before_restart, found, drained, restart_s)


async def rehearse(broker: EmbeddedBroker, bundle: Path, workdir: Path, *, outage_s: float = OUTAGE_S,
                   drain_timeout_s: float = DRAIN_TIMEOUT_S) -> Rehearsal:  # fmt: skip
    """The whole scenario on `broker` (running, in this machine's loopback), its parts' files under `workdir`."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    encoding = asyncio.ensure_future(asyncio.to_thread(load_media))  # while the agents load their models
    cluster = plan_cluster(broker, bundle, workdir, drain_timeout_s=drain_timeout_s)
    placed = Placed()
    try:
        await start_cluster(cluster)
        media = await encoding
        timings["start"], mark = time.monotonic() - started, time.monotonic()
        one = await wave_one(cluster, media, placed)
        timings["wave_1_feed_tokens_reconnect"], mark = time.monotonic() - mark, time.monotonic()
        two = await wave_two(cluster, media, placed, drain_timeout_s)
        timings["wave_2_drain"], mark = time.monotonic() - mark, time.monotonic()
        outage = await wave_three(cluster, media, placed, outage_s)
        timings["wave_3_outage_crash"], mark = time.monotonic() - mark, time.monotonic()

        for agent in cluster.agents:
            await agent.wait_idle(60.0)
            outage.spool_left[agent.name] = (await agent.readyz()).spool_messages
        windows = audit(await read_back(cluster.kafka, cluster.kafka.topics.scores))
        scored = {session for session, w in windows.items() if len(w.seqs) > w.shed}
        alerts = await raised_alerts(cluster.kafka, scored, timeout_s=60.0)
        monitor_ready = (await cluster.monitor.readyz()).status == 200
        timings["read_back"] = time.monotonic() - mark
    finally:
        await stop_cluster(cluster)
    timings["total"] = time.monotonic() - started
    sessions, calls = session_facts(cluster, placed)
    return Rehearsal(
        [agent.name for agent in cluster.agents], sessions, calls, one.feeds, one.call1_on_kafka, one.refusals,
        one.call1_open_after_refusals, one.monitor_sessions, one.alerts, two.drain, two.new_call_owners, outage,
        windows, alerts, monitor_ready, timings,
    )  # fmt: skip


def session_facts(cluster: Cluster, placed: Placed) -> tuple[dict[str, SessionFacts], dict[str, list[str]]]:
    events = cluster.session_events()
    sessions: dict[str, SessionFacts] = {}
    calls: dict[str, list[str]] = {}
    for call_id in sorted(placed.sessions):
        for opened, result, refused_offers in placed.sessions[call_id]:
            sid = opened.session_id
            closed = [
                e.detail for e in events if e.session_id == sid and e.event == "closed" and e.agent == opened.agent
            ]
            sessions[sid] = SessionFacts(
                call_id, sid, opened.agent, result.session_url, cluster.agent(opened.agent).base,
                closed[0] if closed else None, sorted({e.agent for e in events if e.session_id == sid}),
                round(result.audio_s, 2), refused_offers,
            )  # fmt: skip
            calls.setdefault(call_id, []).append(sid)
    return sessions, calls


# -- what was checked ----------------------------------------------------------------------------------------


def checks(r: Rehearsal) -> list[Check]:
    call_owners = {call: r.session_of(call).owner for call in r.calls}
    per_agent = {agent: sorted(c for c, o in call_owners.items() if o == agent) for agent in r.agents}
    deletes = {s.session_id[:8]: (s.owner, s.closed) for s in r.sessions.values()}
    delete_ok = all(
        s.closed == "delete" and s.location.startswith(s.owner_url + "/whip/") and s.logged_by == [s.owner]
        for s in r.sessions.values()
    )
    call1_owner = r.session_of("call-1").owner
    foreign_feeds = [f for f in r.feeds if f.agent != call1_owner]
    refusal_statuses = {
        what: [x.status for x in r.refusals if x.what == what] for what in ("feed", "publish", "delete")
    }
    drain, outage = r.drain, r.outage
    drained_call = r.windows.get(r.session_of("call-3").session_id)
    first, second = r.session_of("call-2", 0), r.session_of("call-2", 1)
    outage_call = r.windows.get(r.session_of("call-6").session_id)
    calm = [w for sid, w in r.windows.items() if sid not in r.calls["call-6"]]
    not_ready = {agent: sum(status != 200 for status in statuses) for agent, statuses in outage.readiness.items()}
    return [
        Check("6 calls through the proxy spread over all 3 agents",
              len(call_owners) == 6 and all(per_agent.values()), f"{per_agent}"),
        Check("every DELETE reached its owner (closed by DELETE there, no other agent knew it)", delete_ok,
              f"{deletes}"),
        Check("a feed opened through the proxy on an agent that does not own the call shows it",
              bool(foreign_feeds) and bool(r.call1_on_kafka)
              and all(set(r.call1_on_kafka) <= set(f.windows) for f in r.feeds),
              f"owner {call1_owner}; feeds {[(f.agent, len(f.windows)) for f in r.feeds]}; "
              f"on Kafka {len(r.call1_on_kafka)}"),
        Check("another call's token refused for feed, publish and DELETE (403); the session lived on",
              all(s == 403 for statuses in refusal_statuses.values() for s in statuses)
              and all(refusal_statuses.values()) and r.call1_open_after_refusals,
              f"{refusal_statuses}, answered by {sorted({x.agent for x in r.refusals})}"),
        Check("SIGTERM: unready at once, still alive, out of the proxy",
              drain.unready_after_s < 1.0 and drain.alive_while_draining and drain.proxy_out_after_s < 2.0,
              f"{drain.agent}: /readyz 503 after {drain.unready_after_s * 1000:.0f} ms, HAProxy DOWN after "
              f"{drain.proxy_out_after_s:.2f} s"),
        Check("SIGTERM: new calls go to the other agents", drain.agent not in r.new_call_owners,
              f"call-4, call-5 -> {r.new_call_owners}"),
        Check("SIGTERM: its call ran to its end, every window on Kafka exactly once, exit 0 within the drain "
              "timeout",
              drain.exit_code == 0 and drain.exit_after_s < drain.drain_timeout_s and drained_call is not None
              and drained_call.exactly_once and r.session_of("call-3").audio_s > 12.0
              and drained_call.last_end_s > r.session_of("call-3").audio_s - 2.5,
              f"exit {drain.exit_code} after {drain.exit_after_s:.1f} s (timeout {drain.drain_timeout_s:g} s); "
              f"windows {_windows(drained_call)}"),
        Check("reconnect to another agent: both sessions' windows on Kafka, the monitor counts both",
              first.owner != second.owner and all(_complete(r.windows.get(s.session_id)) for s in (first, second))
              and all(r.alerts_after_wave1.get(s.session_id) == 1 for s in (first, second))
              and r.monitor_sessions_after_wave1 >= 3,
              f"{first.owner} -> {second.owner} (refused there first: {second.refused_offers}); windows "
              f"{_windows(r.windows.get(first.session_id))} + {_windows(r.windows.get(second.session_id))}; "
              f"alerts {list(r.alerts_after_wave1.values())}, monitor sessions {r.monitor_sessions_after_wave1}"),
        Check(f"Kafka paused {outage.paused_s:.0f} s: every agent stayed ready",
              all(statuses for statuses in outage.readiness.values()) and not any(not_ready.values()),
              f"not ready / samples: {({a: f'{n}/{len(outage.readiness[a])}' for a, n in not_ready.items()})}"),
        Check("SIGKILL while Kafka was down, restart on the same spool: it drained, nothing lost",
              outage_call is not None and _complete(outage_call) and outage.spooled_before_kill > 0
              and len(outage_call.duplicated) <= outage.on_kafka_before_restart
              and outage.spool_found_at_restart == outage.spooled_before_kill == len(outage_call.seqs)
              and outage.spool_drained_at_restart == outage.spooled_before_kill and not any(outage.spool_left.values()),
              f"{outage.killed}: spooled {outage.spooled_before_kill}, on Kafka before restart "
              f"{outage.on_kafka_before_restart}, found/drained at restart {outage.spool_found_at_restart}/"
              f"{outage.spool_drained_at_restart}; windows {_windows(outage_call)}"),
        Check("every window of every session without an outage on Kafka exactly once",
              len(calm) == len(r.sessions) - 1 and all(w.exactly_once for w in calm),
              f"{len(calm)} sessions, {sum(len(w.seqs) for w in calm)} windows, "
              f"{sum(len(w.duplicated) for w in calm)} duplicated"),
        Check("the monitor raised one alert for every session", set(r.alerts) == set(r.windows)
              and all(n == 1 for n in r.alerts.values()) and r.monitor_ready_at_end,
              f"{len(r.alerts)} of {len(r.windows)} sessions; per session {sorted(r.alerts.values())}"),
    ]  # fmt: skip


def _complete(windows: SessionWindows | None) -> bool:
    return windows is not None and bool(windows.seqs) and windows.contiguous


def _windows(windows: SessionWindows | None) -> str:
    if windows is None:
        return "none"
    return (f"{len(windows.seqs)} (seq 0..{windows.seqs[-1]}, {windows.records} records, duplicated "
            f"{list(windows.duplicated)}, last end {windows.last_end_s:.1f} s)")  # fmt: skip


# -- command line --------------------------------------------------------------------------------------------


def report(rehearsal: Rehearsal, found: list[Check]) -> dict[str, Any]:
    return {"checks": [asdict(c) for c in found], "passed": all(c.passed for c in found), **asdict(rehearsal)}


def print_table(found: list[Check], timings: dict[str, float]) -> None:
    width = max(len(c.name) for c in found)
    for check in found:
        print(f"{'PASS' if check.passed else 'FAIL'}  {check.name:<{width}}  {check.detail}")
    print("timings: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=REPO / DEFAULT_BUNDLE_DIR,
                        help="model bundle the agents serve (default: the exported default bundle)")  # fmt: skip
    parser.add_argument("--outage-s", type=float, default=OUTAGE_S, help="how long Kafka stays paused")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON report")
    args = parser.parse_args(argv)
    if not (args.bundle / "card.json").is_file():
        parser.error(f"no model bundle at {args.bundle}: run `make bundle` (or pass --bundle)")
    workdir = Path(tempfile.mkdtemp(prefix="affectstream-rehearsal-"))
    with EmbeddedBroker("127.0.0.1", free_port()) as broker:
        rehearsal = asyncio.run(rehearse(broker, args.bundle, workdir, outage_s=args.outage_s))
    found = checks(rehearsal)
    print_table(found, rehearsal.timings_s)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report(rehearsal, found), indent=2, default=str) + "\n")
    print(f"wrote {args.out}; logs of every process under {workdir}")
    return 0 if all(check.passed for check in found) else 1


if __name__ == "__main__":
    sys.exit(main())
