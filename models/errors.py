"""Operational errors of the model package: each names the file or value that is wrong."""

from __future__ import annotations

from core.errors import ConfigError, ModelError


class ModelConfigError(ConfigError):
    """A Self-MM configuration that cannot be built (bad preset, dimension, encoder directory)."""


class CheckpointError(ModelError):
    """A checkpoint (MMSA `.pth` or ours) that is missing, corrupt or does not match the config."""


class DatasetError(ConfigError):
    """A dataset pickle that is missing keys, has inconsistent shapes or invalid values."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
