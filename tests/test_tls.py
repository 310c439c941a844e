"""`serve` over https (ingest.tls_cert_path / ingest.tls_key_path, --tls-cert / --tls-key): a certificate that
cannot be used stops startup with one line; a good one serves https (the browser side: tests/browser)."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr
from tls_cert import self_signed

from agent.server import AgentServer
from agent.settings import Settings
from agent.tls import server_ssl_context
from cli.main import main
from core.errors import ConfigError


def test_no_certificate_is_plain_http() -> None:
    assert server_ssl_context(None, None) is None


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("cert only", r"ingest.tls_cert_path and ingest.tls_key_path go together"),
        ("missing", r"ingest.tls_cert_path: cannot read .*nope.pem: No such file or directory"),
        ("directory", r"ingest.tls_key_path: cannot read .*: Is a directory"),
        ("not pem", r"ingest.tls_cert_path: .*junk.pem is not a PEM certificate"),
        ("swapped", r"ingest.tls_cert_path: .*agent.key is not a PEM certificate"),
        ("mismatched", r"cannot be used: the key does not match the certificate"),
        ("encrypted", r"ingest.tls_key_path is an encrypted key"),
    ],
)
def test_an_unusable_certificate_is_one_clear_line(case: str, problem: str, tmp_path: Path) -> None:
    one, other = self_signed(tmp_path / "one", "agent.test"), self_signed(tmp_path / "other", "agent.test")
    locked = self_signed(tmp_path / "locked", "agent.test", key_password=b"secret")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    cert, key = {
        "cert only": (one.cert, None), "missing": (tmp_path / "nope.pem", one.key), "directory": (one.cert, tmp_path),
        "not pem": (tmp_path / "junk.pem", one.key), "swapped": (one.key, one.cert),
        "mismatched": (one.cert, other.key), "encrypted": (locked.cert, locked.key),
    }[case]  # fmt: skip
    with pytest.raises(ConfigError, match=problem) as raised:
        server_ssl_context(cert, key)
    assert "\n" not in str(raised.value)


async def test_the_server_speaks_https_with_the_certificate(tmp_path: Path) -> None:
    cert = self_signed(tmp_path, "agent.test")
    settings = Settings()
    settings.ingest.port, settings.ingest.tokens = 0, [SecretStr("t")]
    settings.ingest.tls_cert_path, settings.ingest.tls_key_path = cert.cert, cert.key
    server = AgentServer(settings)
    base = await server.start()
    try:
        assert re.fullmatch(r"https://127\.0\.0\.1:\d+", base)
        trusted = ssl.create_default_context(cafile=cert.cert)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz", ssl=trusted) as response:
                assert response.status == 200
            with pytest.raises(aiohttp.ClientConnectorCertificateError):  # not trusted: a real TLS handshake
                await http.get(f"{base}/healthz")
    finally:
        await server.close()


@pytest.mark.timeout(60)
def test_serve_refuses_a_mismatched_key_at_startup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AFFECTSTREAM_INGEST__TOKENS", "t")
    one, other = self_signed(tmp_path / "one", "agent.test"), self_signed(tmp_path / "other", "agent.test")
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--port", "0", "--tls-cert", str(one.cert), "--tls-key", str(other.key)])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert exited.value.code == 2 and "Traceback" not in err and len(errors) == 1, err
    assert "the key does not match the certificate" in errors[0]
