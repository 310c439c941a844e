"""KafkaSettings → kafka-python keyword arguments (the one place secrets are unwrapped)."""

from __future__ import annotations

from typing import Any

from agent.settings import KafkaSettings, MonitorSettings, PublishSettings

_SECRET_KEYS = frozenset({"sasl_plain_password", "ssl_password"})


def common_kwargs(kafka: KafkaSettings) -> dict[str, Any]:
    """Connection and security options shared by producers, consumers and admin clients."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in kafka.bootstrap_servers.split(",") if s.strip()],
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
        "request_timeout_ms": kafka.request_timeout_ms,
        # Fail fast when no broker answers: the publisher spools instead of blocking for 30 s.
        "bootstrap_timeout_ms": kafka.request_timeout_ms,
    }
    if kafka.security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = kafka.sasl_mechanism
        kwargs["sasl_plain_username"] = kafka.sasl_username
        kwargs["sasl_plain_password"] = (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        )
    if kafka.security_protocol.endswith("SSL"):
        kwargs["ssl_check_hostname"] = kafka.ssl_check_hostname
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(kafka, name)
            if path is not None:
                kwargs[name] = str(path)
        if kafka.ssl_password is not None:
            kwargs["ssl_password"] = kafka.ssl_password.get_secret_value()
    return kwargs


def delivery_timeout_ms(kafka: KafkaSettings, publish: PublishSettings) -> int:
    """How long a sent message may wait for its ack: `publish.delivery_timeout_s`, but at most one request
    timeout (+100 ms for the expiry to be noticed). Retrying a request that a hung broker left unanswered
    gains nothing and busy-polls a CPU in kafka-python 3.0; the publisher's spool is the retry
    (agent/publish.py)."""
    return min(int(publish.delivery_timeout_s * 1000), kafka.request_timeout_ms) + 100


def producer_kwargs(kafka: KafkaSettings, publish: PublishSettings) -> dict[str, Any]:
    """An idempotent, acks=all producer with bounded retries; no auto-created topics."""
    request_timeout_ms = kafka.request_timeout_ms
    return {
        **common_kwargs(kafka),
        "acks": "all",
        "enable_idempotence": True,
        "max_in_flight_requests_per_connection": 5,  # the most idempotence keeps in order
        "retries": publish.retries,
        "retry_backoff_ms": publish.retry_backoff_ms,
        "delivery_timeout_ms": delivery_timeout_ms(kafka, publish),
        "max_block_ms": request_timeout_ms,
        "linger_ms": 5,
        "allow_auto_create_topics": False,  # topics are created by agent.topics with their partitions
    }


def consumer_kwargs(kafka: KafkaSettings, monitor: MonitorSettings) -> dict[str, Any]:
    """A group consumer that commits by hand, tuned to join in ~3 s (README.md, Stack notes)."""
    return {
        **common_kwargs(kafka),
        "group_id": monitor.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": monitor.auto_offset_reset,
        "session_timeout_ms": monitor.session_timeout_ms,
        "heartbeat_interval_ms": monitor.heartbeat_interval_ms,
        "request_timeout_ms": max(kafka.request_timeout_ms, monitor.session_timeout_ms + 1000),
    }


def admin_kwargs(kafka: KafkaSettings) -> dict[str, Any]:
    return common_kwargs(kafka)


def redacted(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A copy safe to log: secrets replaced by '**********'."""
    return {k: ("**********" if k in _SECRET_KEYS and v is not None else v) for k, v in kwargs.items()}
