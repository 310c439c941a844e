"""What the agent takes in a WHIP offer, checked before aiortc answers it.

One session is one participant: exactly one sending audio track (one microphone) and at most one sending video
track. Two would be merged into one timeline (agent/sessions.py), a patchwork of two people, so such an offer is
refused with a message saying so rather than half-served. SDP that aiortc cannot parse is refused naming the line
it stumbled on (its parser raises bare asserts and unpacking errors that say nothing by themselves).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiortc.sdp import MediaDescription, SessionDescription

MAX_LINE_SHOWN = 80


class OfferError(ValueError):
    """An offer the agent will not answer; the message is the client's one-line explanation."""


@dataclass(frozen=True, slots=True)
class OfferSummary:
    has_video: bool  # a sending video track: the session's media waits for frames


def check_offer(offer: str) -> OfferSummary:
    if not offer.lstrip().startswith("v=0"):
        raise OfferError("malformed SDP offer: it must start with v=0")
    parsed = _parse(offer)
    if isinstance(parsed, Exception):
        raise OfferError(f"malformed SDP offer: {_locate(offer, parsed)}")
    media = parsed.media
    audio = [m for m in media if m.kind == "audio"]
    if not audio:
        raise OfferError("offer has no audio")
    sending_audio = [m for m in audio if _sends(m)]
    if not sending_audio:
        raise OfferError("offer sends no audio (audio m-line is inactive or recvonly)")
    sending_video = [m for m in media if m.kind == "video" and _sends(m)]
    for kind, sending in (("audio", sending_audio), ("video", sending_video)):
        if len(sending) > 1:
            raise OfferError(
                f"offer sends {len(sending)} {kind} tracks; a session takes one audio and at most one video "
                "track (one participant): send each participant as its own session"
            )
    return OfferSummary(has_video=bool(sending_video))


def describe(exc: Exception) -> str:
    """An exception as a client can read it, also when it carries no message (a bare assert)."""
    return str(exc) or f"{type(exc).__name__} in aiortc"


def _sends(media: MediaDescription) -> bool:
    # no direction attribute means sendrecv (RFC 8866 §6.7); port 0 is a refused m-line (RFC 3264 §6)
    return media.direction in (None, "sendonly", "sendrecv") and media.port != 0


def _parse(sdp: str) -> SessionDescription | Exception:
    try:
        return SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc raises assorted errors on SDP it cannot read
        return exc


def _locate(offer: str, failure: Exception) -> str:
    """Name the first line the parser fails on: the shortest failing prefix, by bisection (a few parses)."""
    lines = offer.splitlines()
    low, high = 1, len(lines)  # lines[:high] fails to parse
    while low < high:
        middle = (low + high) // 2
        prefix = _parse("\r\n".join(lines[:middle]))
        if isinstance(prefix, Exception):
            high, failure = middle, prefix
        else:
            low = middle + 1
    line = lines[high - 1]
    shown = repr(line) if len(line) <= MAX_LINE_SHOWN else repr(line[:MAX_LINE_SHOWN]) + "..."
    detail = str(failure)
    return f"line {high} {shown} cannot be read" + (f" ({detail})" if detail else "")
