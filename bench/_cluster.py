"""The processes of the cluster rehearsal (bench/cluster_rehearsal.py): agents, HAProxy in front, the monitor.

Every part is a real process on 127.0.0.1: `affectstream serve` once per agent, each on its own port with its
own spool directory and an absolute `ingest.public_url`; HAProxy from the distribution, its configuration
rendered from deploy/haproxy-rehearsal.cfg (round robin over the agents whose /readyz is 200, no affinity);
`affectstream monitor`. They share one Kafka broker, the embedded tansu, which the caller starts. An agent
restarts on its own port and spool directory, as a StatefulSet pod comes back with its name and volume.
Agents log JSON lines; the rehearsal reads where each WHIP session opened and how it closed from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import aiohttp

from agent.broker import EmbeddedBroker
from agent.settings import KafkaSettings

REPO = Path(__file__).resolve().parents[1]
HAPROXY_TEMPLATE = REPO / "deploy" / "haproxy-rehearsal.cfg"
HAPROXY_PATHS = ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")  # root's PATH only, on Debian
CHECK_INTERVAL_MS = 250
# The embedded broker lets a group member join only after about half its session timeout (docs/kafka.md,
# "The monitor"): short group timings keep the monitor's joins and rejoins quick here, not production values.
MONITOR_GROUP_TIMINGS = {"SESSION_TIMEOUT_MS": "3000", "HEARTBEAT_INTERVAL_MS": "500"}
_OPENED = re.compile(r"^ingest session ([0-9a-f]{32}) opened for (\S+)$")
_CLOSED = re.compile(r"^ingest session ([0-9a-f]{32}) closed: (\w+)$")
_SPOOL_HELD = re.compile(r"^spool holds (\d+) record")


@dataclass(frozen=True)
class SessionEvent:
    """A WHIP session opening or closing, as the agent that holds it logged it."""

    agent: str
    session_id: str
    event: str  # "opened" or "closed"
    detail: str  # opened: the stream key; closed: the reason (e.g. "delete")


@dataclass(frozen=True)
class Probe:
    status: int  # 0: no answer
    body: dict[str, Any]

    @property
    def open_sessions(self) -> int:
        return int(self.body.get("sessions", {}).get("open", 0))

    @property
    def spool_messages(self) -> int:
        return int(self.body.get("kafka", {}).get("spool_messages", 0))


async def probe(url: str, timeout_s: float = 2.0) -> Probe:
    """GET `url` (a /readyz or /healthz); status 0 when nothing answers in time."""
    try:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as response:
            body = await response.json(content_type=None)
            return Probe(response.status, body if isinstance(body, dict) else {})
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return Probe(0, {})


def _json_lines(path: Path) -> Iterator[dict[str, Any]]:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                yield json.loads(line)


@dataclass
class AgentProcess:
    """`affectstream serve` on a fixed port; one log file per start, all kept."""

    name: str
    port: int
    workdir: Path
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    starts: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def spool_dir(self) -> Path:
        return self.workdir / "spool"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        self.starts += 1
        self.workdir.mkdir(parents=True, exist_ok=True)
        with (self.workdir / f"serve-{self.starts}.log").open("wb") as log_file:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cli", "serve", "--port", str(self.port), cwd=REPO, env=self.env,
                stdout=log_file, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip

    async def readyz(self) -> Probe:
        return await probe(f"{self.base}/readyz")

    async def wait_ready(self, timeout_s: float) -> float:
        """Seconds until /readyz answered 200."""
        started = time.monotonic()
        while (await self.readyz()).status != 200:
            if not self.running:
                raise RuntimeError(f"{self.name} exited while starting:\n{self.log_tail()}")
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"{self.name} not ready within {timeout_s:.0f} s:\n{self.log_tail()}")
            await asyncio.sleep(0.1)
        return time.monotonic() - started

    async def wait_idle(self, timeout_s: float) -> None:
        """Until no session is open or still flushing (every last window handed to the publisher)."""
        deadline = time.monotonic() + timeout_s
        while (await self.readyz()).open_sessions:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: sessions still open after {timeout_s:.0f} s")
            await asyncio.sleep(0.2)

    def signal(self, signum: signal.Signals) -> None:
        assert self.process is not None and self.process.returncode is None, f"{self.name} is not running"
        self.process.send_signal(signum)

    async def wait_exit(self, timeout_s: float) -> int:
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), timeout_s)

    async def stop(self) -> None:
        """SIGTERM (drain), a second one (end the calls now), SIGKILL as a last resort."""
        if not self.running:
            return
        for signum in (signal.SIGTERM, signal.SIGTERM):
            self.signal(signum)
            with contextlib.suppress(TimeoutError):
                await self.wait_exit(10.0)
                return
        self.signal(signal.SIGKILL)
        await self.wait_exit(10.0)

    def log_records(self) -> Iterator[dict[str, Any]]:
        for number in range(1, self.starts + 1):
            path = self.workdir / f"serve-{number}.log"
            if path.is_file():
                yield from _json_lines(path)

    def session_events(self) -> list[SessionEvent]:
        events = []
        for record in self.log_records():
            message = str(record.get("message", ""))
            if opened := _OPENED.match(message):
                events.append(SessionEvent(self.name, opened[1], "opened", opened[2]))
            elif closed := _CLOSED.match(message):
                events.append(SessionEvent(self.name, closed[1], "closed", closed[2]))
        return events

    def spool_log(self, start: int) -> tuple[int | None, int | None]:
        """What the `start`-th run logged of a previous run's spool: records found, records drained."""
        held = drained = None
        path = self.workdir / f"serve-{start}.log"
        for record in _json_lines(path) if path.is_file() else ():
            message = str(record.get("message", ""))
            if found := _SPOOL_HELD.match(message):
                held = int(found[1])
            elif message == "spool drained":
                drained = int(record.get("drained_total", 0))
        return held, drained

    def log_tail(self, chars: int = 3000) -> str:
        path = self.workdir / f"serve-{self.starts}.log"
        return path.read_text(errors="replace")[-chars:] if path.is_file() else ""


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or next((p for p in HAPROXY_PATHS if os.access(p, os.X_OK)), None)
    if found is None:
        raise RuntimeError("HAProxy is not installed: scripts/setup-system.sh installs Debian's haproxy")
    return found


@dataclass
class ProxyProcess:
    """HAProxy in front of the agents: the one address for new offers and score feeds."""

    port: int
    stats_port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def render(self, agents: list[AgentProcess]) -> Path:
        servers = "\n".join(f"    server {a.name} 127.0.0.1:{a.port}" for a in agents)
        config = Template(HAPROXY_TEMPLATE.read_text()).substitute(
            bind=f"127.0.0.1:{self.port}", stats_bind=f"127.0.0.1:{self.stats_port}",
            check_interval_ms=f"{CHECK_INTERVAL_MS}ms", servers=servers,
        )  # fmt: skip
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / "haproxy.cfg"
        path.write_text(config)
        return path

    def start(self, agents: list[AgentProcess]) -> None:
        binary, config = haproxy_binary(), self.render(agents)
        checked = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True, check=False)
        if checked.returncode != 0:
            raise RuntimeError(f"HAProxy refused {config}:\n{checked.stdout}{checked.stderr}")
        with (self.workdir / "haproxy.log").open("wb") as log_file:
            self.process = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=log_file,
                                            stderr=subprocess.STDOUT)  # fmt: skip

    async def server_states(self) -> dict[str, str]:
        """Each agent's state as HAProxy sees it: UP, DOWN, or on its way ("UP 1/2", "DOWN 1/2")."""
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{self.stats_port}/stats;csv") as r:
            text = await r.text()
        rows = csv.DictReader(io.StringIO(text.removeprefix("# ")))
        return {row["svname"]: row["status"] for row in rows if row["pxname"] == "agents"
                and row["svname"] not in ("FRONTEND", "BACKEND")}  # fmt: skip

    async def wait_state(self, agent: str, state: str, timeout_s: float) -> float:
        """Seconds until HAProxy reports `agent` in `state`."""
        started = time.monotonic()
        while (await self.server_states()).get(agent) != state:
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"HAProxy: {agent} not {state} within {timeout_s:.0f} s")
            await asyncio.sleep(0.02)
        return time.monotonic() - started

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@dataclass
class MonitorProcess:
    """`affectstream monitor` with the rehearsal's rules, from the beginning of the scores topic."""

    port: int
    workdir: Path
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None

    async def start(self, rules: str) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "rules.yaml").write_text(rules)
        with (self.workdir / "monitor.log").open("wb") as log_file:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cli", "monitor", "--rules", str(self.workdir / "rules.yaml"), cwd=REPO,
                env=self.env, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip

    async def readyz(self) -> Probe:
        return await probe(f"http://127.0.0.1:{self.port}/readyz")

    async def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while (await self.readyz()).status != 200:
            if self.process is None or self.process.returncode is not None or time.monotonic() > deadline:
                log = (self.workdir / "monitor.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"monitor not ready within {timeout_s:.0f} s:\n{log}")
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await asyncio.wait_for(self.process.wait(), 30)


@dataclass
class Cluster:
    broker: EmbeddedBroker
    kafka: KafkaSettings  # the rehearsal's own topics on the shared broker
    secret: str  # ingest.token_secret of every agent
    agents: list[AgentProcess]
    proxy: ProxyProcess
    monitor: MonitorProcess
    started_at: float = field(default_factory=time.monotonic)

    def agent(self, name: str) -> AgentProcess:
        return next(a for a in self.agents if a.name == name)

    def session_events(self) -> list[SessionEvent]:
        return [event for agent in self.agents for event in agent.session_events()]


def base_env() -> dict[str, str]:
    """This environment without AFFECTSTREAM_ variables (an unknown one would stop the command)."""
    return {name: value for name, value in os.environ.items() if not name.startswith("AFFECTSTREAM_")}


def kafka_env(kafka: KafkaSettings) -> dict[str, str]:
    topics = kafka.topics
    return {
        "AFFECTSTREAM_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "AFFECTSTREAM_KAFKA__REQUEST_TIMEOUT_MS": str(kafka.request_timeout_ms),
        "AFFECTSTREAM_KAFKA__TOPICS__SCORES": topics.scores,
        "AFFECTSTREAM_KAFKA__TOPICS__TRANSCRIPTS": topics.transcripts,
        "AFFECTSTREAM_KAFKA__TOPICS__ALERTS": topics.alerts,
        "AFFECTSTREAM_LOGGING__FORMAT": "json",
    }


def agent_env(kafka: KafkaSettings, bundle: Path, spool_dir: Path, port: int, secret: str,
              drain_timeout_s: float) -> dict[str, str]:  # fmt: skip
    """Scoped tokens only (no static token), the owner's own URL in Location, a short ack wait so that an
    outage is noticed within seconds, loopback ICE (every peer is on this machine)."""
    return (
        base_env()
        | kafka_env(kafka)
        | {
            "AFFECTSTREAM_SCORING__BUNDLES": json.dumps([str(bundle)]),
            "AFFECTSTREAM_SCORING__PROVIDERS": '["CPUExecutionProvider"]',
            "AFFECTSTREAM_PUBLISH__SPOOL_DIR": str(spool_dir),
            "AFFECTSTREAM_PUBLISH__DELIVERY_TIMEOUT_S": "5",
            "AFFECTSTREAM_PUBLISH__RETRY_BACKOFF_MS": "100",
            "AFFECTSTREAM_INGEST__TOKEN_SECRET": secret,
            "AFFECTSTREAM_INGEST__PUBLIC_URL": f"http://127.0.0.1:{port}",
            "AFFECTSTREAM_INGEST__DRAIN_TIMEOUT_S": f"{drain_timeout_s:g}",
            "AFFECTSTREAM_INGEST__ICE_LOOPBACK": "only",
            "AFFECTSTREAM_INGEST__ICE_TIMEOUT_S": "10",
            "AFFECTSTREAM_INGEST__QUEUE_WINDOWS": "64",  # no window shed on a busy machine
        }
    )


def monitor_env(kafka: KafkaSettings, port: int, group_id: str) -> dict[str, str]:
    return (
        base_env()
        | kafka_env(kafka)
        | {
            "AFFECTSTREAM_MONITOR__GROUP_ID": group_id,
            "AFFECTSTREAM_MONITOR__AUTO_OFFSET_RESET": "earliest",
            "AFFECTSTREAM_MONITOR__POLL_TIMEOUT_MS": "200",
            "AFFECTSTREAM_MONITOR__HOST": "127.0.0.1",
            "AFFECTSTREAM_MONITOR__PORT": str(port),
        }
        | {f"AFFECTSTREAM_MONITOR__{name}": value for name, value in MONITOR_GROUP_TIMINGS.items()}
    )


@contextlib.contextmanager
def paused(broker: EmbeddedBroker) -> Iterator[None]:
    """The broker process stopped (SIGSTOP) and continued on exit: tansu keeps topics in memory only, so a real
    stop and start would lose them. Paused, it keeps its data and answers nothing, as a hung or unreachable
    Kafka does for its clients."""
    pid = broker.pid
    assert pid is not None, "the broker is not running"
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
