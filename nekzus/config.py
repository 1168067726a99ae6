"""Configuration: one YAML file plus ``NEKZUS_*`` environment overrides, validated by pydantic.

Nested keys are overridden with ``__`` between levels, e.g. ``NEKZUS_SERVER__PORT=9000`` or
``NEKZUS_RUNTIMES__DOCKER__HOST=unix:///run/docker.sock``. Unknown keys are errors, so a typo stops
the start instead of being silently ignored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

CONFIG_ENV = "NEKZUS_CONFIG"
RUNTIME_NAMES = ("docker", "kubernetes")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the offending key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _default_docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8443, ge=1, le=65535)


class DockerRuntimeConfig(_Section):
    enabled: bool = True
    host: str = Field(default_factory=_default_docker_host)
    # The gateway's own container, never touched by bulk actions. Empty: detected at start-up.
    self_id: str = ""
    # Seconds between reachability checks, which log when the daemon goes away or comes back.
    health_interval: float = Field(5.0, gt=0, le=300)

    @field_validator("host")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("unix://", "tcp://", "http://", "https://", "ssh://", "npipe://")):
            raise ValueError("must be a unix://, tcp://, http(s)://, ssh:// or npipe:// address")
        return value


class RuntimesConfig(_Section):
    primary: Literal["docker", "kubernetes"] = "docker"
    docker: DockerRuntimeConfig = Field(default_factory=DockerRuntimeConfig)


class AppConfig(_Section):
    id: str = Field(min_length=1)
    name: str = ""

    @model_validator(mode="after")
    def _name_defaults_to_id(self) -> AppConfig:
        if not self.name:
            object.__setattr__(self, "name", self.id)
        return self


class OperationsConfig(_Section):
    # Finished operation records stay pollable this long (the floor is 10 minutes) ...
    retention_seconds: int = Field(600, ge=600)
    # ... unless more than this many finished records pile up, when the oldest go first.
    max_records: int = Field(10_000, ge=100)


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Config(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="NEKZUS_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    server: ServerConfig = Field(default_factory=ServerConfig)
    runtimes: RuntimesConfig = Field(default_factory=RuntimesConfig)
    apps: list[AppConfig] = Field(default_factory=list)
    operations: OperationsConfig = Field(default_factory=OperationsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @field_validator("apps")
    @classmethod
    def _unique_app_ids(cls, apps: list[AppConfig]) -> list[AppConfig]:
        seen: set[str] = set()
        for app in apps:
            if app.id in seen:
                raise ValueError(f"app id {app.id!r} is listed twice")
            seen.add(app.id)
        return apps

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file, which is passed in as init values.
        return (env_settings, init_settings)


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"{key}: {item['msg']}")
    return "; ".join(lines)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read ``path`` (or ``$NEKZUS_CONFIG``; none at all means defaults) and the environment."""
    source = path or os.environ.get(CONFIG_ENV)
    data: Any = {}
    if source:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {source}: {exc.strerror}") from exc
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {source} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {source} must hold a mapping of keys at the top level")
    try:
        return Config(**data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {_describe(exc)}") from exc
