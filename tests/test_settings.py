"""Settings fail loudly: unknown keys and invalid values, in the YAML file or an AFFECTSTREAM_ variable, are one
line each naming the key (and the closest valid one); secrets are never echoed; list settings take a JSON list or
comma-separated values."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import get_origin

import pytest
from pydantic import BaseModel, SecretStr, ValidationError
from typer.testing import CliRunner

from agent.settings import Settings, load_settings
from agent.settings_problems import env_name, section_of, setting_paths
from cli.main import app
from cli.options import build_settings, state
from core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SECRET = "s3cr3t-do-not-print"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No inherited AFFECTSTREAM_ variable."""
    for name in list(os.environ):
        if name.upper().startswith("AFFECTSTREAM_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("AFFECTSTREAM_CONFIG", raising=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(config_file: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file)
    return str(caught.value).splitlines()


# --- unknown keys -----------------------------------------------------------------------------------------------


def test_misspelled_key_in_the_file_names_the_closest_valid_key(tmp_path):
    config = write(tmp_path, "kafka:\n  bootstrap: kafka:9092\n")
    assert problems(config) == [f"{config}: kafka.bootstrap: unknown setting; did you mean kafka.bootstrap_servers?"]


@pytest.mark.parametrize(
    ("yaml_text", "key", "closest"),
    [
        ("kafka:\n  bootstrap_server: x\n", "kafka.bootstrap_server", "kafka.bootstrap_servers"),
        ("bootstrap_servers: x\n", "bootstrap_servers", "kafka.bootstrap_servers"),  # the section left out
        ("kafak:\n  client_id: x\n", "kafak", "kafka"),
        ("kafka:\n  topics:\n    score: x\n", "kafka.topics.score", "kafka.topics.scores"),
    ],
)
def test_unknown_file_keys_at_any_depth(tmp_path, yaml_text, key, closest):
    config = write(tmp_path, yaml_text)
    assert problems(config) == [f"{config}: {key}: unknown setting; did you mean {closest}?"]


@pytest.mark.parametrize(
    ("name", "closest"),
    [
        ("AFFECTSTREAM_KAFKA__BOOTSTRAP", "AFFECTSTREAM_KAFKA__BOOTSTRAP_SERVERS"),
        ("AFFECTSTREAM_KAFKA_BOOTSTRAP_SERVERS", "AFFECTSTREAM_KAFKA__BOOTSTRAP_SERVERS"),  # one underscore
        ("AFFECTSTREAM_INGEST__TOKEN", "AFFECTSTREAM_INGEST__TOKENS"),
        ("AFFECTSTREAM_KAFKA__TOPICS__SCORE", "AFFECTSTREAM_KAFKA__TOPICS__SCORES"),
    ],
)
def test_misspelled_variable_names_the_closest_valid_variable(monkeypatch, name, closest):
    monkeypatch.setenv(name, "kafka:9092")
    assert problems() == [f"{name}: unknown setting; did you mean {closest}?"]


def test_unknown_variable_with_nothing_close(monkeypatch):
    monkeypatch.setenv("AFFECTSTREAM_WHATEVER", "1")
    assert problems() == ["AFFECTSTREAM_WHATEVER: unknown setting"]


def test_settings_alone_rejects_unknown_variables_too(monkeypatch):
    monkeypatch.setenv("AFFECTSTREAM_KAFKA__BOOTSTRAP", "kafka:9092")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.delenv("AFFECTSTREAM_KAFKA__BOOTSTRAP")
    monkeypatch.setenv("AFFECTSTREAM_WHATEVER", "1")
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize("name", ["AFFECTSTREAM_TOKEN", "AFFECTSTREAM_TEST_SCREENSHOT"])
def test_project_variables_that_are_not_settings_are_allowed(monkeypatch, name):
    monkeypatch.setenv(name, "anything")
    assert load_settings().kafka.bootstrap_servers == "127.0.0.1:9092"


def test_every_section_forbids_unknown_keys():
    def sections(model: type[BaseModel]) -> Iterator[type[BaseModel]]:
        for name in model.model_fields:
            section = section_of(model, name)
            if section is not None:
                yield section
                yield from sections(section)

    loose = [section.__name__ for section in sections(Settings) if section.model_config.get("extra") != "forbid"]
    assert not loose


# --- invalid values ---------------------------------------------------------------------------------------------


def test_invalid_value_in_the_file_is_one_line_naming_the_key(tmp_path):
    config = write(tmp_path, "kafka:\n  request_timeout_ms: 5\n")
    assert problems(config) == [
        f"{config}: kafka.request_timeout_ms: Input should be greater than or equal to 1000, got 5"
    ]


def test_invalid_value_in_the_environment_is_one_line_naming_the_variable(monkeypatch):
    monkeypatch.setenv("AFFECTSTREAM_INGEST__PORT", "eighty")
    assert problems() == [
        "AFFECTSTREAM_INGEST__PORT: Input should be a valid integer, unable to parse string as an integer, got 'eighty'"
    ]


def test_every_problem_of_every_source_is_reported_at_once(tmp_path, monkeypatch):
    config = write(tmp_path, "kafka:\n  bootstrap: x\n  request_timeout_ms: 5\nlogging:\n  level: verbose\n")
    monkeypatch.setenv("AFFECTSTREAM_INGEST__TOKEN", "t")
    monkeypatch.setenv("AFFECTSTREAM_SCORING__MAX_BATCH", "0")
    lines = problems(config)
    assert len(lines) == 5, lines
    assert sorted(line.split(":", 1)[0] for line in lines) == sorted(
        ["AFFECTSTREAM_INGEST__TOKEN", "AFFECTSTREAM_SCORING__MAX_BATCH"] + [str(config)] * 3
    )


def test_the_environment_is_named_where_it_overrides_the_file(tmp_path, monkeypatch):
    config = write(tmp_path, "ingest:\n  port: 8080\n")
    monkeypatch.setenv("AFFECTSTREAM_INGEST__PORT", "-1")
    assert problems(config) == ["AFFECTSTREAM_INGEST__PORT: Input should be greater than or equal to 0, got '-1'"]


def test_a_section_problem_names_the_section_alone(tmp_path, monkeypatch):
    config = write(tmp_path, "kafka:\n  sasl_username: svc\n")
    monkeypatch.setenv("AFFECTSTREAM_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    assert problems(config) == [
        "kafka: security_protocol=SASL_PLAINTEXT needs sasl_mechanism, sasl_username and sasl_password"
    ]


def test_invalid_yaml_is_one_line(tmp_path):
    config = write(tmp_path, "kafka:\n  bootstrap_servers: [x\n")
    (line,) = problems(config)
    assert line.startswith(f"{config}: not valid YAML at line 3")


def test_a_file_that_is_not_a_mapping(tmp_path):
    config = write(tmp_path, "- kafka\n")
    assert problems(config) == [f"{config}: expected a mapping of settings sections, got a list"]


def test_missing_config_file(tmp_path, monkeypatch):
    assert problems(tmp_path / "nope.yaml") == [f"config file not found: {tmp_path / 'nope.yaml'}"]
    monkeypatch.setenv("AFFECTSTREAM_CONFIG", str(tmp_path / "gone.yaml"))  # was silently skipped
    assert problems() == [f"config file not found: {tmp_path / 'gone.yaml'}"]


def test_a_file_named_by_the_environment_is_checked_too(tmp_path, monkeypatch):
    config = write(tmp_path, "ingest:\n  prot: 80\n")
    monkeypatch.setenv("AFFECTSTREAM_CONFIG", str(config))
    assert problems() == [f"{config}: ingest.prot: unknown setting; did you mean ingest.port?"]


@pytest.mark.parametrize(
    ("env", "yaml_text"),
    [
        ({"AFFECTSTREAM_KAFKA__SASL_PASWORD": SECRET}, ""),  # a misspelled secret
        ({}, f"kafka:\n  sasl_pasword: {SECRET}\n"),
        ({}, f"kafka:\n  sasl_password: [{SECRET}]\n"),  # a secret of the wrong type
        ({}, f"ingest:\n  tokens: ['{SECRET}', {{a: {SECRET}}}]\n"),  # one bad item among tokens
        ({"AFFECTSTREAM_INGEST__TOKENS": f'["{SECRET}",'}, ""),  # broken JSON
        ({"AFFECTSTREAM_INGEST__ICE_CREDENTIAL": SECRET, "AFFECTSTREAM_INGEST__ICE_CREDENTIALS": SECRET}, ""),
        (  # a section-level problem: its input holds the password
            {"AFFECTSTREAM_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT", "AFFECTSTREAM_KAFKA__SASL_PASSWORD": SECRET},
            "",
        ),
        ({"AFFECTSTREAM_KAFKA": f'{{"sasl_password": "{SECRET}", "x": 1}}'}, ""),  # a whole section as JSON
    ],
)
def test_secrets_are_never_echoed(tmp_path, monkeypatch, env, yaml_text):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    lines = problems(write(tmp_path, yaml_text) if yaml_text else None)
    assert lines
    assert not [line for line in lines if "s3cr3t" in line], lines


# --- lists ------------------------------------------------------------------------------------------------------


def list_settings() -> list[tuple[str, ...]]:
    """Every list setting, found from the model so that a new one is covered too."""

    def annotation(path: tuple[str, ...]) -> object:
        model: type[BaseModel] = Settings
        for name in path[:-1]:
            section = section_of(model, name)
            assert section is not None
            model = section
        return model.model_fields[path[-1]].annotation

    paths = [path for path, is_section in setting_paths(Settings) if not is_section]
    return [path for path in paths if get_origin(annotation(path)) is list]


def value_at(settings: Settings, path: tuple[str, ...]) -> list[str]:
    value: object = settings
    for name in path:
        value = getattr(value, name)
    assert isinstance(value, list)
    return [item.get_secret_value() if isinstance(item, SecretStr) else str(item) for item in value]


def test_the_list_settings_are_found():
    assert {("ingest", "tokens"), ("ingest", "ice_servers"), ("scoring", "bundles"), ("scoring", "providers")} <= set(
        list_settings()
    )


@pytest.mark.parametrize("path", list_settings(), ids=".".join)
@pytest.mark.parametrize("raw", ['["/x/a", "/x/b"]', "/x/a,/x/b", " /x/a , /x/b ,"])
def test_list_settings_take_json_or_commas_from_the_environment(monkeypatch, path, raw):
    monkeypatch.setenv(env_name(path), raw)
    assert value_at(load_settings(), path) == ["/x/a", "/x/b"]


@pytest.mark.parametrize("path", list_settings(), ids=".".join)
@pytest.mark.parametrize("raw", ["['/x/a', '/x/b']", '\'["/x/a", "/x/b"]\'', "/x/a, /x/b"])
def test_list_settings_take_a_list_json_or_commas_from_the_file(tmp_path, path, raw):
    section, field = path
    config = write(tmp_path, f"{section}:\n  {field}: {raw}\n")
    assert value_at(load_settings(config), path) == ["/x/a", "/x/b"]


def test_empty_list_setting(monkeypatch):
    monkeypatch.setenv("AFFECTSTREAM_INGEST__TOKENS", "")
    assert load_settings().ingest.tokens == []


def test_a_token_list_in_json_and_in_commas(monkeypatch):
    for raw in ('["tok"]', "tok"):
        monkeypatch.setenv("AFFECTSTREAM_INGEST__TOKENS", raw)
        assert [t.get_secret_value() for t in load_settings().ingest.tokens] == ["tok"]
    monkeypatch.setenv("AFFECTSTREAM_INGEST__TOKENS", '["tok-a", "tok,b"]')  # JSON: a comma inside a token
    assert [t.get_secret_value() for t in load_settings().ingest.tokens] == ["tok-a", "tok,b"]


# --- logging options --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "level"), [("debug", "DEBUG"), ("Warning", "WARNING"), ("CRITICAL", "CRITICAL")])
def test_log_level_setting_in_any_case(monkeypatch, raw, level):
    monkeypatch.setenv("AFFECTSTREAM_LOGGING__LEVEL", raw)
    assert load_settings().logging.level == level


@pytest.fixture()
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.setattr(state, "config_file", None)
    monkeypatch.setattr(state, "log_level", None)
    monkeypatch.setattr(state, "log_format", None)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_cli_logging_options_override_only_their_own_settings(monkeypatch, restore_logging):
    monkeypatch.setenv("AFFECTSTREAM_LOGGING__FORMAT", "json")
    monkeypatch.setenv("AFFECTSTREAM_LOGGING__LEVEL", "ERROR")
    monkeypatch.setattr(state, "log_level", "DEBUG")
    settings = build_settings()
    assert (settings.logging.level, settings.logging.format) == ("DEBUG", "json")


# --- the CLI ----------------------------------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("AFFECTSTREAM_")}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=REPO,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_bad_settings_exit_2_with_one_line_per_problem(tmp_path):
    config = write(tmp_path, "kafka:\n  bootstrap_server: x\n  request_timeout_ms: 5\n")
    result = run_cli("--config", str(config), "broker", env={"AFFECTSTREAM_KAFKA__SASL_PASWORD": SECRET})
    assert result.returncode == 2, result.stderr
    assert sorted(result.stderr.splitlines()) == sorted(
        [
            f"{config}: kafka.bootstrap_server: unknown setting; did you mean kafka.bootstrap_servers?",
            f"{config}: kafka.request_timeout_ms: Input should be greater than or equal to 1000, got 5",
            "AFFECTSTREAM_KAFKA__SASL_PASWORD: unknown setting; did you mean AFFECTSTREAM_KAFKA__SASL_PASSWORD?",
        ]
    )
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("option", "value"), [("--log-level", "verbose"), ("--log-level", "WARN"), ("--log-format", "xml")]
)
def test_cli_log_options_accept_only_real_values(option, value):
    result = CliRunner().invoke(app, [option, value, "broker", "--help"])
    assert result.exit_code == 2
    assert option in result.output


def test_loading_a_config_file_leaves_the_environment_as_it_was(tmp_path: Path) -> None:
    bad = write(tmp_path, "kafka:\n  bootstrap: x\n")
    with pytest.raises(ConfigError):
        load_settings(bad)
    good = write(tmp_path, "kafka:\n  bootstrap_servers: broker:9092\n")
    assert load_settings(good).kafka.bootstrap_servers == "broker:9092"
    assert "AFFECTSTREAM_CONFIG" not in os.environ
    assert load_settings(None).kafka.bootstrap_servers != "broker:9092"  # the last file does not linger
