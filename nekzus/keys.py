"""Typed keys for what the gateway stores on the application and on requests.

A module that reads these keys itself declares the keys of its own values beside them
(``auth.AUTHORITY`` and ``auth.PRINCIPAL``, ``ratelimit.LIMITER`` and ``ratelimit.RATE_DECISION``,
``hub.HUB``): importing it here, even for type checking, would close an import circle.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from runtimes import RuntimeRegistry

    from .client_address import IPAddress
    from .config import Config
    from .hosts import Origin
    from .linking import AppLinker
    from .operations.tracker import OperationTracker
    from .realtime.events import EventBus
    from .realtime.monitor import RuntimeMonitor
    from .realtime.state import StateModels
    from .realtime.watcher import StateWatcher
    from .tasks import TaskGroup

CONFIG: web.AppKey[Config] = web.AppKey("config")
REGISTRY: web.AppKey[RuntimeRegistry] = web.AppKey("registry")
EVENT_BUS: web.AppKey[EventBus] = web.AppKey("event_bus")
OPERATIONS: web.AppKey[OperationTracker] = web.AppKey("operations")
MONITOR: web.AppKey[RuntimeMonitor] = web.AppKey("monitor")
WATCHERS: web.AppKey[list[StateWatcher]] = web.AppKey("watchers")
STATE: web.AppKey[StateModels] = web.AppKey("state")
TASKS: web.AppKey[TaskGroup] = web.AppKey("tasks")
STARTED_AT: web.AppKey[float] = web.AppKey("started_at", float)
SELF_CONTAINER_ID: web.AppKey[str] = web.AppKey("self_container_id", str)
LINKER: web.AppKey[AppLinker] = web.AppKey("linker")
# Log searches run by helper processes at once; more wait their turn.
LOG_SEARCHES: web.AppKey[asyncio.Semaphore] = web.AppKey("log_searches")

LISTED_ORIGINS: web.AppKey[frozenset[Origin]] = web.AppKey("listed_origins")

REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
CLIENT_IP: web.RequestKey[IPAddress | None] = web.RequestKey("client_ip")
