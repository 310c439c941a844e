"""Operational errors of serving: Kafka and the spool (the shared ones are in `core.errors`)."""

from __future__ import annotations

from core.errors import AffectstreamError


class BrokerError(AffectstreamError):
    """Kafka could not be reached or refused a request."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class PublishError(BrokerError):
    """A message could not be published (or spooled)."""


class SpoolFullError(PublishError):
    """The on-disk spool reached its bound: an explicit, counted loss event."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)
