"""A monitor process for the restart test: `monitor_child.py BOOTSTRAP PREFIX GROUP RULES CRASH`.

CRASH = before_send | after_ack | none: with the first two, the process SIGKILLs itself at that point of
its first alert's delivery (before it is produced, or acknowledged but before offsets are committed).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from kafka_helpers import kafka_settings, monitor_settings

from agent.monitor import Monitor
from agent.rules import AlertEvent, load_rules


def _die(events: list[AlertEvent]) -> None:
    print("crashing with", len(events), "alert(s)", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def main(bootstrap: str, prefix: str, group: str, rules_path: str, crash: str) -> None:
    monitor = Monitor(
        kafka_settings(bootstrap, prefix),
        monitor_settings(group, auto_offset_reset="earliest"),  # the test publishes before it joins
        load_rules(Path(rules_path)),
    )
    if crash == "before_send":
        monitor.before_alerts_sent = _die
    elif crash == "after_ack":
        monitor.after_alerts_acked = _die
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("monitor running", flush=True)
    monitor.run(stop)
    print("monitor stopped", monitor.stats, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:6])
