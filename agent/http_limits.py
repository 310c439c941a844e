"""What an HTTP client of the agent may send and how long it may take; both servers (agent/server.py and
agent/whip.py's standalone listener) run through `http_runner`.

- A header value that is not UTF-8 text is refused with 400 before routing. aiohttp hands such bytes over as
  lone surrogates, and its own code fails on them (its Expect handler echoes the value into an answer it then
  cannot encode: a 500), as would any handler that encodes a header.
- A connection must deliver a complete request head within `idle_timeout_s` of opening or of its previous
  response, or it is closed: aiohttp's keep-alive timer runs from the connection's start and partial data does
  not extend it, so idle and half-sent connections alike are let go.
- A body is read whole (Content-Length or chunked) within a size limit (413) and `body_timeout_s` (408).
- HTTP that aiohttp cannot parse (a control character in a header, an overlong line) is refused with 400 by
  aiohttp itself; `ClientErrorLog` counts it and logs one line, without the request's bytes (they may hold a
  token) and without a traceback (the client's mistake, not the server's).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from agent import metrics
from agent.settings import IngestSettings

_Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


async def http_runner(app: web.Application, settings: IngestSettings, **options: Any) -> web.AppRunner:
    """A set-up AppRunner for `app` with these limits (add its sites next); `options` go to aiohttp."""
    runner = web.AppRunner(
        app, access_log=None, keepalive_timeout=settings.idle_timeout_s, logger=ClientErrorLog(), **options
    )
    await runner.setup()
    assert runner.server is not None
    runner.server.request_handler = _text_headers_only(runner.server.request_handler)
    return runner


def _text_headers_only(handler: _Handler) -> _Handler:
    async def checked(request: web.BaseRequest) -> web.StreamResponse:
        for name, value in request.headers.items():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                metrics.count_rejection("bad_request")
                return web.Response(status=400, text=f"header {name} is not UTF-8 text")
        return await handler(request)

    return checked


async def read_body(request: web.Request, *, limit_bytes: int, timeout_s: float, what: str) -> bytes:
    """The whole body, however it is sent or split: 413 beyond `limit_bytes`, 408 when it takes longer than
    `timeout_s`, 400 when its framing is broken or the connection closes first."""
    declared = request.content_length
    if declared is not None and declared > limit_bytes:
        raise _too_large(what, limit_bytes, declared)
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.content.iter_any():
                body += chunk
                if len(body) > limit_bytes:
                    raise _too_large(what, limit_bytes, len(body))
    except TimeoutError:
        raise web.HTTPRequestTimeout(text=f"{what} did not arrive within {timeout_s:g} s") from None
    except web.RequestPayloadError as exc:
        raise web.HTTPBadRequest(text=f"{what} could not be read: {_first_line(str(exc))}") from None
    except ConnectionError:  # the client went away mid-body: nobody reads the answer, nothing to log
        raise web.HTTPBadRequest(text=f"{what} cut off: the connection closed") from None
    return bytes(body)


def _too_large(what: str, limit_bytes: int, size: int) -> web.HTTPException:
    return web.HTTPRequestEntityTooLarge(
        max_size=limit_bytes, actual_size=size, text=f"{what} larger than {limit_bytes} bytes"
    )


class ClientErrorLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's `aiohttp.server` logger as its request handlers use it, except for requests it could not parse:
    those become one counted line. Failures of the server's own handlers keep their traceback."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self._refused(logging.WARNING, exc_info)
        else:
            super().exception(msg, *args, exc_info=exc_info, **kwargs)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        # aiohttp logs a non-HTTP first request (TLS or a port scan) at debug level, with a traceback
        exc_info = kwargs.get("exc_info")
        if isinstance(exc_info, HttpProcessingError):
            self._refused(logging.DEBUG, exc_info)
        else:
            super().debug(msg, *args, **kwargs)

    def _refused(self, level: int, exc: HttpProcessingError) -> None:
        metrics.count_rejection("bad_request")
        self.log(level, "malformed HTTP request refused (%s): %s", exc.code, _first_line(exc.message))


def _first_line(message: str) -> str:
    """The reason alone: aiohttp quotes the offending bytes after it (a header line, the request line)."""
    return re.split(r"[\n'\"]", message, maxsplit=1)[0].rstrip(" :") or "unreadable"
