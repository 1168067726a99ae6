"""Configuration loading, environment overrides, and the command's exit codes."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from nekzus.cli import duration
from nekzus.config import Config, ConfigError, load_config
from tests.support import ROOT


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("NEKZUS_") or key == "DOCKER_HOST":
            monkeypatch.delenv(key)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "nekzus.yaml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    config = load_config()
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8443)
    assert config.runtimes.primary == "docker"
    assert config.runtimes.docker.enabled is True
    assert config.runtimes.docker.host == "unix:///var/run/docker.sock"
    assert config.apps == []


def test_docker_host_env_is_the_default_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    assert load_config().runtimes.docker.host == "tcp://127.0.0.1:2375"


def test_file_then_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        "server: {host: 0.0.0.0, port: 9000}\n"
        "runtimes: {docker: {host: 'unix:///run/d.sock'}}\n"
        "apps:\n  - {id: grafana, name: Grafana}\n  - {id: redis}\n",
    )
    monkeypatch.setenv("NEKZUS_SERVER__PORT", "9100")
    monkeypatch.setenv("NEKZUS_RUNTIMES__DOCKER__ENABLED", "false")
    config = load_config(path)
    assert config.server.host == "0.0.0.0"
    assert config.server.port == 9100
    assert config.runtimes.docker.host == "unix:///run/d.sock"
    assert config.runtimes.docker.enabled is False
    assert [(a.id, a.name) for a in config.apps] == [("grafana", "Grafana"), ("redis", "redis")]


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEKZUS_CONFIG", str(write(tmp_path, "server: {port: 7000}\n")))
    assert load_config().server.port == 7000


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("server: {port: 70000}\n", "server.port"),
        ("server: {port: web}\n", "server.port"),
        ("server: {hots: x}\n", "server.hots"),
        ("runtimes: {primary: podman}\n", "runtimes.primary"),
        ("runtimes: {docker: {enabled: perhaps}}\n", "runtimes.docker.enabled"),
        ("runtimes: {docker: {host: /var/run/docker.sock}}\n", "runtimes.docker.host"),
        ("apps: [{name: nameless}]\n", "apps.0.id"),
        ("apps: [{id: a}, {id: a}]\n", "apps"),
        ("operations: {retention_seconds: 5}\n", "operations.retention_seconds"),
        ('runtimes: {kubernetes: {namespaces: ["web\\n"]}}\n', "runtimes.kubernetes.namespaces"),
        ('server: {cors_origins: ["https://app.example\\n"]}\n', "server.cors_origins"),
        ("stacks: {compose_binary: /nonexistent/docker-compose}\n", "stacks.compose_binary"),
        ("stacks: {compose_binary: /}\n", "stacks.compose_binary"),
        ("stacks: {timeout: 0}\n", "stacks.timeout"),
        ("stacks: {max_concurrent: 0}\n", "stacks.max_concurrent"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert f"{key}:" in str(info.value)


def test_durations_are_ascii_digits_and_a_unit() -> None:
    assert [duration(t) for t in ("90", "30m", "12h", "7d", " 2h ")] == [90, 1800, 43200, 604800, 7200]
    for bad in ("٣h", "５", "1２m", "3h\n3h", "0", "-1h", "1w", "h"):
        with pytest.raises(argparse.ArgumentTypeError):
            duration(bad)


def test_invalid_environment_value_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEKZUS_SERVER__PORT", "0")
    with pytest.raises(ConfigError, match=r"server\.port:"):
        load_config()


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "server: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- just\n- a list\n"))


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nekzus", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and name != "apps":
            keys.extend(_keys(annotation, prefix + name + "."))
    return keys


def test_example_config_is_valid_and_documents_every_key() -> None:
    path = ROOT / "config.example.yaml"
    config = load_config(path)
    assert [a.id for a in config.apps] == ["grafana"]
    text = path.read_text()
    for key in [*_keys(Config), "apps.id", "apps.name"]:
        leaf = key.rsplit(".", 1)[-1]
        lines = [line for line in text.splitlines() if re.match(rf"^\s*(#\s*)?(- )?{leaf}:", line)]
        assert lines, f"config.example.yaml does not document {key}"
        assert all("#" in line.split(":", 1)[1] or line.rstrip().endswith(":") for line in lines), key
