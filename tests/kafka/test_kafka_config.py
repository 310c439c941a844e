"""TLS/SASL settings reach the client; bad combinations fail at start-up; secrets never print."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.kafka_config import consumer_kwargs, producer_kwargs, redacted
from agent.settings import KafkaSettings, MonitorSettings, PublishSettings, Settings


def _tls_files(tmp_path: Path) -> dict[str, Path]:
    files = {name: tmp_path / f"{name}.pem" for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile")}
    for path in files.values():
        path.write_text("-----BEGIN CERTIFICATE-----\n")
    return files


def test_plaintext_producer_is_idempotent_acks_all_and_bounded() -> None:
    kwargs = producer_kwargs(
        KafkaSettings(bootstrap_servers="a:9092, b:9093", request_timeout_ms=2000),
        PublishSettings(retries=4, retry_backoff_ms=150, delivery_timeout_s=7),
    )
    assert kwargs["bootstrap_servers"] == ["a:9092", "b:9093"]
    assert kwargs["enable_idempotence"] is True and kwargs["acks"] == "all"
    # a message waits for its ack at most one request timeout: then it is the spool's (agent/publish.py)
    assert (kwargs["retries"], kwargs["retry_backoff_ms"], kwargs["delivery_timeout_ms"]) == (4, 150, 2100)
    longer_requests = KafkaSettings(request_timeout_ms=10_000)
    assert producer_kwargs(longer_requests, PublishSettings(delivery_timeout_s=7))["delivery_timeout_ms"] == 7100
    assert kwargs["allow_auto_create_topics"] is False
    assert kwargs["security_protocol"] == "PLAINTEXT"
    assert not any(k.startswith(("sasl_", "ssl_")) for k in kwargs)


def test_sasl_ssl_passes_everything_through(tmp_path: Path) -> None:
    files = _tls_files(tmp_path)
    kafka = KafkaSettings(
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="agent",
        sasl_password="s3cret-pw", ssl_password="key-pw", ssl_check_hostname=False, **files,
    )  # fmt: skip
    kwargs = consumer_kwargs(kafka, MonitorSettings())
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("agent", "s3cret-pw")
    assert kwargs["ssl_cafile"] == str(files["ssl_cafile"]) and kwargs["ssl_keyfile"] == str(files["ssl_keyfile"])
    assert kwargs["ssl_password"] == "key-pw" and kwargs["ssl_check_hostname"] is False
    assert (kwargs["session_timeout_ms"], kwargs["heartbeat_interval_ms"]) == (45_000, 3000)  # Kafka's defaults
    assert kwargs["auto_offset_reset"] == "latest"  # a new group does not alert on history
    assert kwargs["enable_auto_commit"] is False
    safe = redacted(kwargs)
    assert "s3cret-pw" not in repr(safe) and "key-pw" not in repr(safe)
    assert safe["sasl_plain_username"] == "agent"


def test_secrets_never_print() -> None:
    settings = Settings(kafka=KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                                            sasl_username="u", sasl_password="hunter2"))  # fmt: skip
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.kafka)
    assert "hunter2" not in settings.model_dump_json()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u"}, "sasl_password"),
        ({"security_protocol": "SASL_PLAINTEXT"}, "sasl_mechanism"),
        ({"security_protocol": "SSL", "ssl_cafile": "/nonexistent/ca.pem"}, "ssl_cafile"),
        ({"security_protocol": "TLS"}, "security_protocol"),
        ({"sasl_mechanism": "GSSAPI"}, "sasl_mechanism"),
    ],
)
def test_bad_security_settings_fail_with_a_clear_message(options: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        KafkaSettings(**options)  # type: ignore[arg-type]
