"""A test client of the agent's score feed (Server-Sent Events over a real HTTP connection)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class Feed:
    """An open SSE feed: the `score` events it delivered so far, its comments, and how many events had come
    when it said `: live` (the backlog)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    backlog: int | None = None  # None until `: live`
    task: asyncio.Task[None] | None = None

    async def until(self, count: int, timeout_s: float = 20.0) -> list[dict[str, Any]]:
        """The events once `count` have come (and, half a second later, no more)."""
        await self._wait(lambda: len(self.events) >= count, f"{count} events", timeout_s)
        await asyncio.sleep(0.5)
        return self.events

    async def until_live(self, timeout_s: float = 20.0) -> int:
        """How many backlog events came before `: live`."""
        await self._wait(lambda: self.backlog is not None, "`: live`", timeout_s)
        assert self.backlog is not None
        return self.backlog

    async def close(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def _wait(self, done: Any, what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            assert self.task is not None
            if self.task.done():
                self.task.result()  # the feed ended: raise why
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout_s} s: {len(self.events)} events, {self.comments}")
            await asyncio.sleep(0.05)


async def open_feed(url: str, token: str) -> Feed:
    """Open the feed at `url` with a bearer token (AssertionError unless it answers 200) and read it on."""
    feed = Feed()
    opened = asyncio.Event()

    async def read() -> None:
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
            assert response.status == 200, await response.text()
            opened.set()
            async for line in response.content:
                if line.startswith(b"data: "):
                    feed.events.append(json.loads(line[6:]))
                elif line.startswith(b": "):
                    feed.comments.append(line[2:].decode().strip())
                    if feed.comments[-1] == "live":
                        feed.backlog = len(feed.events)

    feed.task = asyncio.create_task(read())
    waiting = asyncio.create_task(opened.wait())
    async with asyncio.timeout(10):
        await asyncio.wait([feed.task, waiting], return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if feed.task.done():
        feed.task.result()
    return feed
