"""Headless Chromium driven over the Chrome DevTools Protocol (a websocket; aiohttp is all it needs).

    async with Chromium.launch(chromium_path, profile_dir, extra_args) as browser:
        page = await browser.open(url)
        value = await page.evaluate("document.title")
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

HEADLESS_ARGS = (
    "--headless=new",
    "--no-sandbox",  # root in a container has no user namespaces for the sandbox
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--mute-audio",
    "--window-size=1280,900",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",  # Chromium picks a port and writes it to <profile>/DevToolsActivePort
)
PORT_FILE = "DevToolsActivePort"
STDERR_FILE = "chromium.stderr"


class CdpError(RuntimeError):
    pass


class Page:
    """One page target's websocket session: send commands, evaluate JavaScript."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.console: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            future = self._pending.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(data)
            elif data.get("method") == "Runtime.consoleAPICalled":
                args = data["params"].get("args", [])
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in args)
                self.console.append(f"{data['params']['type']}: {text}")
            elif data.get("method") == "Runtime.exceptionThrown":
                self.console.append(f"exception: {data['params']['exceptionDetails'].get('text', '')}")
        for future in self._pending.values():
            future.set_exception(CdpError("DevTools connection closed"))

    async def send(self, method: str, params: dict[str, Any] | None = None, timeout_s: float = 30) -> Any:
        message_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        await self._ws.send_str(json.dumps({"id": message_id, "method": method, "params": params or {}}))
        reply = await asyncio.wait_for(future, timeout_s)
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of `expression` (awaited if it is a promise); page exceptions raise CdpError."""
        result = await self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CdpError(f"page exception: {details.get('exception', {}).get('description', details)}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float, poll_s: float = 0.2) -> Any:
        """Poll `expression` until it is truthy and return its value; TimeoutError names the last value."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression!r} still {value!r} after {timeout_s} s")
            await asyncio.sleep(poll_s)

    async def screenshot(self, path: Path) -> None:
        """A PNG of the page as it is now (for looking at a run: AFFECTSTREAM_TEST_SCREENSHOT)."""
        shot = await self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class Chromium:
    """A headless Chromium process with its DevTools endpoint."""

    def __init__(self, process: subprocess.Popen[bytes], endpoint: str, http: aiohttp.ClientSession) -> None:
        self.process = process
        self.endpoint = endpoint
        self._http = http
        self._pages: list[Page] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(
        cls, executable: str, profile_dir: Path, extra_args: Sequence[str] = (), *, timeout_s: float = 20
    ) -> AsyncIterator[Chromium]:
        process = _spawn(executable, profile_dir, extra_args)
        try:
            port = await _devtools_port(process, profile_dir, timeout_s)
            async with aiohttp.ClientSession() as http:
                browser = cls(process, f"127.0.0.1:{port}", http)
                try:
                    yield browser
                finally:
                    for page in browser._pages:
                        await page.close()
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    async def open(self, url: str) -> Page:
        """A new tab at `url`, with console messages collected."""
        async with self._http.put(f"http://{self.endpoint}/json/new?about:blank") as response:
            if response.status != 200:
                raise CdpError(f"could not open a tab: HTTP {response.status} {await response.text()}")
            target = await response.json()
        ws = await self._http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        page = Page(ws)
        self._pages.append(page)
        await page.send("Runtime.enable")
        navigated = await page.send("Page.navigate", {"url": url})
        if navigated.get("errorText"):
            raise CdpError(f"could not load {url}: {navigated['errorText']}")
        return page


def _spawn(executable: str, profile_dir: Path, extra_args: Sequence[str]) -> subprocess.Popen[bytes]:
    profile_dir.mkdir(parents=True, exist_ok=True)
    (profile_dir / PORT_FILE).unlink(missing_ok=True)
    args = [executable, *HEADLESS_ARGS, f"--user-data-dir={profile_dir}", *extra_args, "about:blank"]
    with open(profile_dir / STDERR_FILE, "wb") as stderr:
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=stderr)


async def _devtools_port(process: subprocess.Popen[bytes], profile_dir: Path, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CdpError(f"chromium exited with {process.returncode}: {_tail(profile_dir / STDERR_FILE)}")
        port = _read_port(profile_dir / PORT_FILE)
        if port is not None:
            return port
        await asyncio.sleep(0.05)
    raise CdpError(f"chromium did not open DevTools within {timeout_s} s: {_tail(profile_dir / STDERR_FILE)}")


def _read_port(path: Path) -> int | None:
    first_line = path.read_text().splitlines()[:1] if path.is_file() else []
    return int(first_line[0]) if first_line and first_line[0].isdigit() else None


def _tail(path: Path, chars: int = 2000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.is_file() else ""
