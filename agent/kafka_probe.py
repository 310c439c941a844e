"""Whether Kafka answers, probed in the background: a health detail and a gauge, never a readiness condition.

A Kafka outage is what the publish spool absorbs, so a pod stays ready through one; this only reports it.
The probe runs on its own schedule so that /readyz never waits on a silent broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from agent import metrics

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 2.0
PROBE_TIMEOUT_S = 1.0


class KafkaProbe:
    """`reachable`: whether a TCP connection to any bootstrap server opened at the last probe (None: not yet)."""

    def __init__(self, bootstrap_servers: str, *, interval_s: float = PROBE_INTERVAL_S) -> None:
        self.servers = [s.strip() for s in bootstrap_servers.split(",") if s.strip()]
        self.interval_s = interval_s
        self.reachable: bool | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="kafka-probe")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def probe(self) -> bool:
        """Probe once now; updates `reachable` and the gauge."""
        reachable = False
        for server in self.servers:
            if await _opens(server):
                reachable = True
                break
        if reachable != self.reachable:
            log.info("Kafka %s", "reachable" if reachable else "unreachable (publishing goes to the spool)")
        self.reachable = reachable
        metrics.KAFKA_REACHABLE.set(int(reachable))
        return reachable

    async def _run(self) -> None:
        while True:
            await self.probe()
            await asyncio.sleep(self.interval_s)


async def _opens(server: str) -> bool:
    host, _, port = server.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), PROBE_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
