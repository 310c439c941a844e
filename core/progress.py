"""Progress bars of the long jobs (dataset and default-model builds, training), on stderr, with an ETA.

In a terminal: a tqdm bar redrawn in place. Anywhere else (CI logs, a file): the same tqdm line written once
per `LOG_INTERVAL_S` and when the phase ends, each on a line of its own, because a bar redrawn with carriage
returns piles up in a log. Either way the line carries the total and tqdm's `[elapsed<remaining]` field.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

LOG_INTERVAL_S = 60.0
TERMINAL_INTERVAL_S = 0.5
LOG_COLUMNS = 100


class _LogLines(tqdm):
    """A tqdm bar that prints each refresh as a new line."""

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        # close() (leave=False) passes msg="" to clear the bar: a log keeps the final state instead
        self.fp.write(self.__str__() + "\n")
        self.fp.flush()
        return False  # nothing was drawn in place, so close() has nothing to clear


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    desc: str,
    total: float | None = None,
    unit: str = "it",
    enabled: bool = True,
    leave: bool = True,
    log_interval_s: float = LOG_INTERVAL_S,
) -> tqdm:
    """A tqdm bar over `iterable` (or one advanced with `.update`): in place on a terminal, lines elsewhere.

    `enabled=False` gives tqdm's disabled bar (iterates, counts, prints nothing). `leave` applies to the
    terminal only: a log always keeps the last line.
    """
    stream = sys.stderr
    if not enabled:
        return tqdm(iterable, desc=desc, total=total, unit=unit, disable=True)
    if stream.isatty():
        return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, file=stream,
                    mininterval=TERMINAL_INTERVAL_S, dynamic_ncols=True)
    return _LogLines(iterable, desc=desc, total=total, unit=unit, leave=False, file=stream, ascii=True,
                     ncols=LOG_COLUMNS, mininterval=log_interval_s, maxinterval=max(log_interval_s, 10.0))
