"""CPU time of every thread of this process, from /proc/self/task (Linux), read by a background thread.

Threads that run no Python (ONNX Runtime, CTranslate2, MediaPipe and BLAS pools) are invisible to a Python
sampler but not here. A thread that ends between two reads loses at most one interval of its CPU time; the
caller compares the sum with the process total to see how much.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
_TASKS = Path("/proc/self/task")


@dataclass(frozen=True, slots=True)
class ThreadCpu:
    tid: int
    comm: str  # the OS thread name (15 characters)
    cpu_s: float  # user + system time spent while the sampler ran


def _read(tid_dir: Path) -> tuple[str, float] | None:
    try:
        stat = (tid_dir / "stat").read_text()
    except OSError:  # the thread ended
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    return comm, (int(fields[11]) + int(fields[12])) * _TICK_S  # utime, stime (fields 14 and 15)


class ThreadCpuSampler:
    """`start()`, run the work, `stop()` -> each thread's CPU time in between (threads born meanwhile count
    from zero)."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self._first: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _poll(self, *, first: bool) -> None:
        for tid_dir in _TASKS.iterdir():
            read = _read(tid_dir)
            if read is None:
                continue
            tid = int(tid_dir.name)
            if first:
                self._first[tid] = read[1]
            self._last[tid] = read

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._poll(first=False)

    def start(self) -> None:
        self._poll(first=True)
        self._thread = threading.Thread(target=self._run, name="profiler-threadcpu", daemon=True)
        self._thread.start()

    def stop(self) -> list[ThreadCpu]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._poll(first=False)
        out = [ThreadCpu(tid, comm, cpu - self._first.get(tid, 0.0)) for tid, (comm, cpu) in self._last.items()]
        return sorted(out, key=lambda t: -t.cpu_s)
