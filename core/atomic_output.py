"""Output files of the offline commands appear complete or not at all.

`AtomicOutput(target)` checks up front that `target` can be written (before any work), hands out a staging
path beside it, and on a clean exit moves the staging file over `target` (fsync'd, one rename). On an error,
or when the caller marks the run incomplete, `target` is left exactly as it was: a staging file that holds
anything is kept as `<target>.incomplete`, so partial results are never mistaken for complete ones, and an
empty one is deleted. With `directory=True` the staging path is a directory whose files, on success,
replace their namesakes in the `target` directory (a report: report.json, report.md, plots); on failure
it is deleted. Staging files are created 0600, staging directories 0700 (outputs may hold health data).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from core.errors import ConfigError

log = logging.getLogger(__name__)

INCOMPLETE_SUFFIX = ".incomplete"


class AtomicOutput:
    def __init__(self, target: Path, *, directory: bool = False) -> None:
        self.target = Path(target)
        self.directory = directory
        self.staging = self.target  # set on enter
        self.written: Path | None = None  # after exit: the target, the `.incomplete` file, or None
        self._incomplete = False

    def mark_incomplete(self) -> None:
        """The run that wrote the output did not finish its job: keep the output off `target`."""
        self._incomplete = True

    def __enter__(self) -> AtomicOutput:
        target, parent = self.target, self.target.parent
        if self.directory and target.exists() and not target.is_dir():
            raise ConfigError(f"{target} exists and is not a directory: give a directory for the output")
        if not self.directory and target.is_dir():
            raise ConfigError(f"{target} is a directory: give a file name for the output")
        try:
            parent.mkdir(parents=True, exist_ok=True)
            prefix = f".{target.name}."
            if self.directory:
                self.staging = Path(tempfile.mkdtemp(prefix=prefix, suffix=".partial", dir=parent))
            else:
                fd, name = tempfile.mkstemp(prefix=prefix, suffix=".partial", dir=parent)
                os.close(fd)
                self.staging = Path(name)
        except OSError as exc:
            raise ConfigError(f"cannot write {target}: {exc.strerror or exc}") from None
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None and not self._incomplete:
            self._commit()
        elif self.directory:
            shutil.rmtree(self.staging, ignore_errors=True)
        else:
            self._keep_incomplete()

    def _commit(self) -> None:
        if self.directory:
            self.target.mkdir(exist_ok=True)
            for entry in sorted(self.staging.iterdir()):
                os.replace(entry, self.target / entry.name)
            self.staging.rmdir()
        else:
            with open(self.staging, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(self.staging, self.target)
        fsync_dir(self.target.parent)
        self.written = self.target

    def _keep_incomplete(self) -> None:
        if not self.staging.exists() or self.staging.stat().st_size == 0:
            self.staging.unlink(missing_ok=True)
            return
        kept = self.target.with_name(self.target.name + INCOMPLETE_SUFFIX)
        os.replace(self.staging, kept)
        self.written = kept
        log.warning("the output is incomplete: kept as %s (%s left as it was)", kept, self.target)


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in `directory` durable (POSIX needs the directory itself synced)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
