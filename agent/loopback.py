"""Loopback ICE host candidates, for hosts (and tests, demos) where both peers share one machine.

aioice never offers 127.0.0.1 as a host candidate. On a host whose only interface is loopback it therefore
gathers no candidate at all and the connection silently stays `new`. `configure_loopback` lets the agent and
the streaming client offer 127.0.0.1 where that is the only way to connect:

- "never": aioice's own choice (all interfaces but loopback).
- "auto" (default): aioice's choice, plus 127.0.0.1 when the host has no other address.
- "only": 127.0.0.1 alone; both peers on one machine (tests, a single-machine demo). Remote peers cannot
  connect to a server in this mode.

The setting is process-wide because aioice gathers addresses through a module-level function.
"""

from __future__ import annotations

import logging
from typing import Literal

import aioice.ice

log = logging.getLogger(__name__)

LoopbackMode = Literal["never", "auto", "only"]
LOOPBACK_IPV4 = "127.0.0.1"

_aioice_host_addresses = aioice.ice.get_host_addresses
_mode: LoopbackMode = "never"
_announced = False  # the fallback is logged once per process


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if _mode == "only":
        return [LOOPBACK_IPV4] if use_ipv4 else []
    addresses = _aioice_host_addresses(use_ipv4, use_ipv6)
    if _mode == "auto" and not addresses and use_ipv4:
        global _announced
        if not _announced:
            log.info("no network interface but loopback: offering %s as ICE host candidate", LOOPBACK_IPV4)
            _announced = True
        return [LOOPBACK_IPV4]
    return addresses


def host_addresses(use_ipv4: bool = True, use_ipv6: bool = True) -> list[str]:
    """The addresses ICE gathers host candidates on, under the current mode."""
    return _host_addresses(use_ipv4, use_ipv6)


def configure_loopback(mode: LoopbackMode) -> None:
    """Set the process-wide loopback candidate mode (idempotent)."""
    global _mode
    if mode not in ("never", "auto", "only"):
        raise ValueError(f"loopback mode must be 'never', 'auto' or 'only'; got {mode!r}")
    if mode != _mode:
        log.debug("ICE loopback candidates: %s", mode)
    _mode = mode
    aioice.ice.get_host_addresses = _host_addresses


def current_mode() -> LoopbackMode:
    return _mode
