"""The spool: ordered, bounded, durable across reopen, torn tails cut, single owner."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.errors import SpoolFullError
from agent.spool import Spool
from core.errors import ConfigError


def _drain(spool: Spool, batch: int = 3) -> list[bytes]:
    out: list[bytes] = []
    while records := spool.read_records(batch):
        out.extend(payload for payload, _ in records)
        spool.commit(records[-1][1], len(records))
    return out


def test_order_survives_reopen_and_segments_are_deleted(tmp_path: Path) -> None:
    records = [f"record-{i}".encode() * (i % 5 + 1) for i in range(50)]
    with Spool(tmp_path, 1 << 20, segment_bytes=128) as spool:
        spool.append(records[:20])
        for record in records[20:]:
            spool.append([record])
        assert spool.pending_records == 50
        first = spool.read_records(7)
        spool.commit(first[-1][1], 7)
        assert len(list(tmp_path.glob("seg-*.log"))) > 2
    with Spool(tmp_path, 1 << 20, segment_bytes=128) as spool:
        assert spool.pending_records == 43
        assert _drain(spool) == records[7:]
        assert spool.empty and spool.pending_bytes == 0
        assert list(tmp_path.glob("seg-*.log")) == []
        spool.append([b"after"])
    with Spool(tmp_path, 1 << 20) as spool:
        assert _drain(spool) == [b"after"]


def test_a_full_spool_refuses_explicitly_and_keeps_what_it_has(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=100) as spool:
        spool.append([b"x" * 40])
        with pytest.raises(SpoolFullError, match="full"):
            spool.append([b"y" * 40, b"z" * 10])
        assert spool.pending_records == 1
        spool.append([b"w" * 20])
        assert _drain(spool) == [b"x" * 40, b"w" * 20]
        spool.append([b"v" * 80])  # space is freed by draining


def test_a_torn_tail_is_cut_and_earlier_records_kept(tmp_path: Path) -> None:
    with Spool(tmp_path, 1 << 20) as spool:
        spool.append([b"one", b"two"])
    segment = next(tmp_path.glob("seg-*.log"))
    with open(segment, "ab") as handle:
        handle.write(b"\x00\x00\x00\x20\x12\x34")  # a header whose payload never made it to disk
    with Spool(tmp_path, 1 << 20) as spool:
        assert spool.pending_records == 2
        spool.append([b"three"])
        assert _drain(spool) == [b"one", b"two", b"three"]


def test_one_process_owns_a_spool(tmp_path: Path) -> None:
    with Spool(tmp_path, 1 << 20):
        code = f"from agent.spool import Spool; Spool({str(tmp_path)!r}, 1 << 20).open()"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
        assert result.returncode != 0 and "in use by another process" in result.stderr
        with pytest.raises(ConfigError, match="in use"):
            Spool(tmp_path, 1 << 20).open()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_spool_is_private_whatever_it_was_before(tmp_path: Path) -> None:
    """It may hold transcripts: the directory is 0700 and every file 0600 (docs/kafka.md), also when the
    directory existed with a wider mode, the umask is permissive, or a previous version left 0644 files."""
    directory = tmp_path / "spool"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    previous_umask = os.umask(0o000)
    try:
        with Spool(directory, 1 << 20, segment_bytes=64) as spool:
            spool.append([b"x" * 40, b"y" * 40])
            spool.append([b"z" * 40])
            records = spool.read_records(1)
            spool.commit(records[-1][1], 1)  # writes the cursor file
        for name in ("seg-000000000001.log", "cursor"):  # as an older version left them
            os.chmod(directory / name, 0o644)
        os.chmod(directory, 0o755)
        with Spool(directory, 1 << 20, segment_bytes=64) as spool:
            assert spool.pending_records == 2
            assert _mode(directory) == 0o700
            files = sorted(p.name for p in directory.iterdir())
            assert "cursor" in files and "LOCK" in files and any(n.startswith("seg-") for n in files)
            assert {name: _mode(directory / name) for name in files} == dict.fromkeys(files, 0o600)
    finally:
        os.umask(previous_umask)
