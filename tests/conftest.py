"""Shared fixtures: real components (broker process, media), created once where that is safe."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.broker import EmbeddedBroker, free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real test media beside the checkout (never copied into the repo)."""
    if not (SHARED_DATA / "manifest.csv").is_file():
        pytest.fail(f"test media not found at {SHARED_DATA} (expected ../shared/data beside the checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def manifest(shared_data: Path) -> list[dict[str, str]]:
    with open(shared_data / "manifest.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[EmbeddedBroker]:
    """One real tansu broker for the whole session. Do not stop it: use `fresh_kafka_broker` for faults."""
    broker = EmbeddedBroker("127.0.0.1", free_port())
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture()
def fresh_kafka_broker() -> Iterator[EmbeddedBroker]:
    """A broker of this test's own, free to stop() and start() again on the same port (fault tests)."""
    broker = EmbeddedBroker("127.0.0.1", free_port())
    broker.start()
    yield broker
    broker.stop()
