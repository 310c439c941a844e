"""Fixtures of the deploy tests (helpers live in deploy_support.py)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from agent.settings import Settings


@pytest.fixture()
def settings_from_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, str]], Settings]:
    """Build Settings from exactly these environment variables (nothing inherited, no config file)."""

    def build(env: dict[str, str]) -> Settings:
        for name in list(os.environ):
            if name.startswith("AFFECTSTREAM_"):
                monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return Settings()

    return build
