"""Typed keys for everything the gateway stores on the application and on requests."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from runtimes import RuntimeRegistry

    from .auth import Principal, TokenAuthority
    from .client_address import IPAddress
    from .config import Config
    from .events import EventBus
    from .hosts import Origin
    from .hub import Hub
    from .linking import AppLinker
    from .monitor import RuntimeMonitor
    from .operations import OperationTracker
    from .ratelimit import RateDecision, RateLimiter
    from .state import StateModels
    from .tasks import TaskGroup
    from .watcher import StateWatcher

CONFIG: web.AppKey[Config] = web.AppKey("config")
REGISTRY: web.AppKey[RuntimeRegistry] = web.AppKey("registry")
EVENT_BUS: web.AppKey[EventBus] = web.AppKey("event_bus")
OPERATIONS: web.AppKey[OperationTracker] = web.AppKey("operations")
MONITOR: web.AppKey[RuntimeMonitor] = web.AppKey("monitor")
HUB: web.AppKey[Hub] = web.AppKey("hub")
WATCHERS: web.AppKey[list[StateWatcher]] = web.AppKey("watchers")
STATE: web.AppKey[StateModels] = web.AppKey("state")
TASKS: web.AppKey[TaskGroup] = web.AppKey("tasks")
STARTED_AT: web.AppKey[float] = web.AppKey("started_at", float)
SELF_CONTAINER_ID: web.AppKey[str] = web.AppKey("self_container_id", str)
LINKER: web.AppKey[AppLinker] = web.AppKey("linker")

AUTHORITY: web.AppKey[TokenAuthority] = web.AppKey("authority")
LISTED_ORIGINS: web.AppKey[frozenset[Origin]] = web.AppKey("listed_origins")
LIMITER: web.AppKey[RateLimiter | None] = web.AppKey("limiter")

REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
CLIENT_IP: web.RequestKey[IPAddress | None] = web.RequestKey("client_ip")
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal")
RATE_DECISION: web.RequestKey[RateDecision] = web.RequestKey("rate_decision")
