"""Manual check that the browser client works in Firefox (CI runs the Chromium test only; Firefox is not part
of the test setup). Needs `firefox-esr` (Debian) or `firefox` on PATH, else it is skipped:

    .venv/bin/pytest -q -s -p no:cacheprovider tests/browser/firefox_check.py

Its name does not match test_*.py, so the suite never collects it; pytest runs it when it is named (and then
provides the fixtures of tests/conftest.py and tests/browser/conftest.py). Starts an embedded broker and the
agent (a tiny live-compatible bundle, fixed 2 s windows: Firefox's fake microphone plays a tone, not speech),
opens the page in headless Firefox with its fake camera and microphone, drives it over WebDriver BiDi, and
prints the page's state until scores arrive; fails if they do not.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from agent.broker import EmbeddedBroker, free_port
from agent.runtime import open_runtime
from agent.server import AgentServer
from agent.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PREFS = {
    "media.navigator.streams.fake": True,  # fake camera + microphone
    "media.navigator.permission.disabled": True,  # no permission prompt
    "media.peerconnection.ice.obfuscate_host_addresses": False,  # real host candidates, not mDNS names
    # the agent offers 127.0.0.1 alone here (ice_loopback="only"); Firefox ignores loopback candidates unless
    # told otherwise (a deployed agent offers its real addresses and needs nothing of the kind)
    "media.peerconnection.ice.loopback": True,
    "remote.active-protocols": 1,  # WebDriver BiDi
}


class Bidi:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        message_id = next(self.ids)
        await self.ws.send_str(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads((await self.ws.receive()).data)
            if reply.get("id") == message_id:
                if reply.get("type") == "error":
                    raise RuntimeError(f"{method}: {reply.get('message')}")
                return dict(reply["result"])

    async def evaluate(self, context: str, expression: str) -> Any:
        result = await self.call("script.evaluate", {"expression": expression, "target": {"context": context},
                                                     "awaitPromise": True})
        if result.get("type") == "exception":
            raise RuntimeError(result["exceptionDetails"]["text"])
        return result["result"].get("value")


def _launch(firefox: str, workdir: Path, port: int) -> subprocess.Popen[bytes]:
    profile = workdir / "profile"
    profile.mkdir()
    prefs = "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in PREFS.items())
    (profile / "user.js").write_text(prefs)
    args = [firefox, "--headless", "--remote-debugging-port", str(port), "--profile", str(profile),
            "--no-remote", "about:blank"]
    with open(workdir / "firefox.log", "wb") as log:
        return subprocess.Popen(args, stdout=log, stderr=log)


STATE_JS = ("JSON.stringify({status: affectstream.status, connection: affectstream.connection,"
            " feed: affectstream.feed, scores: affectstream.scores.length, error: affectstream.error})")


async def _connect(http: aiohttp.ClientSession, port: int) -> aiohttp.ClientWebSocketResponse:
    for _ in range(150):
        try:
            return await http.ws_connect(f"ws://127.0.0.1:{port}/session")
        except aiohttp.ClientError:
            await asyncio.sleep(0.2)
    raise RuntimeError("Firefox's WebDriver BiDi endpoint did not open")


async def drive(firefox: str, page_url: str, workdir: Path) -> int:
    port = free_port()
    process = _launch(firefox, workdir, port)
    try:
        async with aiohttp.ClientSession() as http:
            bidi = Bidi(await _connect(http, port))
            session = await bidi.call("session.new", {"capabilities": {}})
            print("Firefox", session["capabilities"]["browserVersion"])
            context = (await bidi.call("browsingContext.getTree", {}))["contexts"][0]["context"]
            navigate = {"context": context, "url": page_url, "wait": "complete"}
            await bidi.call("browsingContext.navigate", navigate)
            await bidi.evaluate(context, "document.getElementById('start').click()")
            state: dict[str, Any] = {"scores": 0}
            started = time.monotonic()
            while time.monotonic() - started < 60 and state["scores"] < 2 and state.get("status") != "error":
                await asyncio.sleep(1)
                state = json.loads(await bidi.evaluate(context, STATE_JS))
                print(f"{time.monotonic() - started:5.1f} s  {state}", flush=True)
            await bidi.evaluate(context, "document.getElementById('stop').click()")
            await bidi.ws.close()
            return 0 if state["scores"] >= 2 else 1
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def firefox() -> str:
    found = shutil.which("firefox-esr") or shutil.which("firefox")
    if found is None:
        pytest.skip("firefox not found: apt-get install firefox-esr")
    return found


async def test_firefox_page_receives_scores(firefox: str, tiny_live_bundle: Path, tmp_path: Path) -> None:
    token = secrets.token_urlsafe(16)
    with EmbeddedBroker("127.0.0.1", free_port()) as broker:
        workdir = tmp_path
        base = Settings()
        settings = base.model_copy(update={
            "kafka": base.kafka.model_copy(update={"bootstrap_servers": broker.bootstrap_servers}),
            "ingest": base.ingest.model_copy(
                update={"port": 0, "tokens": [SecretStr(token)], "ice_loopback": "only"}),
            "publish": base.publish.model_copy(update={"spool_dir": workdir / "spool"}),
            "scoring": base.scoring.model_copy(update={"bundles": [tiny_live_bundle]}),
            "windows": base.windows.model_copy(update={"mode": "fixed", "length_s": 2.0, "hop_s": 2.0}),
        })
        async with open_runtime(settings) as runtime:
            server = AgentServer(settings, runtime)
            url = await server.start()
            try:
                query = f"call_id=firefox-check&participant_id=p1&role=patient#token={token}"  # the fragment
                assert await drive(firefox, f"{url}/?{query}", workdir) == 0, "no scores reached the page"
            finally:
                await server.close()
