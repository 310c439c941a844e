"""Operational errors shared by every package: each says what failed and whether a retry may help."""

from __future__ import annotations


class AffectstreamError(Exception):
    """Base of affectstream's operational errors."""

    retryable: bool = False


class ConfigError(AffectstreamError):
    """A setting, file or model that cannot be used; the message says what to fix."""


class MediaError(AffectstreamError):
    """A recording or live track that cannot be decoded."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class NoAudioError(MediaError):
    """A recording or call without an audio track."""


class ModelError(AffectstreamError):
    """A model bundle that is missing, corrupt or does not match the agent."""
