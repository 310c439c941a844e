"""Fixtures of the replay tests: one tiny bundle with the agent's real feature spec, built once."""

from __future__ import annotations

from pathlib import Path

import pytest
from replay_testing import export_replay_bundle

from agent.settings import Settings


@pytest.fixture(scope="session")
def replay_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_replay_bundle(tmp_path_factory.mktemp("replay-bundle"))


@pytest.fixture()
def replay_settings(replay_bundle: Path, tmp_path: Path) -> Settings:
    return Settings(
        scoring={"bundles": [replay_bundle], "providers": ["CPUExecutionProvider"]},
        publish={"spool_dir": tmp_path / "spool"},
    )
