"""HTTPS for the agent's server (ingest.tls_cert_path / ingest.tls_key_path).

Browsers give the camera and microphone only to secure origins (localhost aside), so the browser page opened
from another machine needs https: served here with a certificate, or by a reverse proxy in front (README).
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path

from core.errors import ConfigError

_KEYS = "ingest.tls_cert_path and ingest.tls_key_path"
_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----")
_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")


def server_ssl_context(cert_path: Path | None, key_path: Path | None) -> ssl.SSLContext | None:
    """A server TLS context for the PEM certificate (chain) and its unencrypted PEM key; None for plain http.

    Anything that cannot be used (one of the two missing, a file absent or unreadable, not PEM, a key that
    does not match the certificate, an encrypted key) is a one-line ConfigError.
    """
    if cert_path is None and key_path is None:
        return None
    if cert_path is None or key_path is None:
        raise ConfigError(f"{_KEYS} go together: set both for https, or neither for http")
    for name, path, marker in (("tls_cert_path", cert_path, _CERT), ("tls_key_path", key_path, _KEY)):
        try:
            text = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"ingest.{name}: cannot read {path}: {exc.strerror or exc}") from None
        if not marker.search(text):
            raise ConfigError(f"ingest.{name}: {path} is not a PEM {'certificate' if marker is _CERT else 'key'}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert_path, key_path, password=_no_password)
    except ssl.SSLError as exc:
        raise ConfigError(f"{_KEYS} ({cert_path}, {key_path}) cannot be used: {_reason(exc)}") from None
    return context


def _no_password() -> str:
    # called only for an encrypted key: without this, OpenSSL would prompt on the terminal and block startup
    raise ConfigError("ingest.tls_key_path is an encrypted key: give an unencrypted one (readable by the agent only)")


def _reason(exc: ssl.SSLError) -> str:
    if exc.reason == "KEY_VALUES_MISMATCH":
        return "the key does not match the certificate"
    return str(exc.reason or exc.strerror or exc).lower().replace("_", " ")
