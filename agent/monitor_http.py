"""The monitor's HTTP endpoints on `monitor.host:monitor.port`: GET /healthz, /readyz and /metrics.

/healthz is 200 until the consumer loop has ended (then 503: restart the process). /readyz is 200 once the
monitor has its partitions and consumes them (through later rebalances too), 503 before and after. /metrics
serves the agent's registry (agent/metrics.py), where the monitor's counters live. The consumer loop is
blocking (kafka-python), so it runs in a worker thread beside the server's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Protocol

from aiohttp import web

from agent import metrics
from agent.monitor import Monitor, MonitorStatus
from agent.settings import MonitorSettings
from core.errors import ConfigError

log = logging.getLogger(__name__)


class MonitorProbe(Protocol):
    def status(self) -> MonitorStatus: ...


def monitor_app(probe: MonitorProbe) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        status = probe.status()
        return web.json_response({"status": "ok" if status.live else "stopped", "phase": status.phase},
                                 status=200 if status.live else 503)  # fmt: skip

    async def readyz(request: web.Request) -> web.Response:
        status = probe.status()
        body = {"ready": status.ready, "phase": status.phase, "partitions": list(status.partitions),
                "sessions": status.sessions}  # fmt: skip
        return web.json_response(body, status=200 if status.ready else 503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics.metrics_handler)
    return app


class MonitorHttp:
    """The endpoints' server: `start` listens (port 0: any free port) and returns the base URL."""

    def __init__(self, probe: MonitorProbe, host: str, port: int) -> None:
        self._app = monitor_app(probe)
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self._host, self._port).start()
        except OSError as exc:
            await self.close()
            raise ConfigError(f"monitor cannot listen on {self._host}:{self._port} (monitor.host/port): "
                              f"{exc.strerror or exc}") from None  # fmt: skip
        port = self._runner.addresses[0][1]
        url = f"http://{self._host}:{port}"
        log.info("monitor probes serving on %s", url, extra={"url": url})
        return url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def run_monitor_service(monitor: Monitor, settings: MonitorSettings, stop: threading.Event) -> None:
    """Serve the endpoints while `monitor` consumes, until `stop` is set; the monitor's error is raised."""
    http = MonitorHttp(monitor, settings.host, settings.port)
    await http.start()
    try:
        await asyncio.to_thread(monitor.run, stop)
    finally:
        await http.close()
