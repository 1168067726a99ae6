"""The application factory: routes, middlewares, and everything long-lived in ``cleanup_ctx``."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from runtimes import RuntimeRegistry
from runtimes.docker import DockerRuntime

from .config import Config
from .events import EventBus
from .keys import CONFIG, EVENT_BUS, MONITOR, OPERATIONS, REGISTRY, SELF_CONTAINER_ID, STARTED_AT, TASKS
from .linking import detect_self_container_id
from .middlewares import error_middleware, request_id_middleware
from .monitor import RuntimeMonitor
from .operations import OperationTracker
from .routes import bulk, containers, health, operations
from .tasks import TaskGroup

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20


def build_registry(config: Config) -> RuntimeRegistry:
    """The runtimes the configuration enables; clients are created here, inside the event loop."""
    registry = RuntimeRegistry(config.runtimes.primary)
    if config.runtimes.docker.enabled:
        registry.add(DockerRuntime(config.runtimes.docker.host))
    return registry


def _runtimes_ctx(registry: RuntimeRegistry | None):  # type: ignore[no-untyped-def]
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        owned = registry is None
        app[REGISTRY] = build_registry(config) if registry is None else registry
        if not len(app[REGISTRY]):
            log.error("no container runtime is enabled; container requests answer 500 NO_RUNTIME")
        monitor = RuntimeMonitor(app[REGISTRY], interval=config.runtimes.docker.health_interval)
        app[MONITOR] = monitor
        tasks = app[TASKS]
        tasks.spawn(monitor.run(), name="runtime-monitor")
        yield
        await tasks.close()
        if owned:
            await app[REGISTRY].close()

    return ctx


async def _operations_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    app[EVENT_BUS] = EventBus()
    app[OPERATIONS] = OperationTracker(
        app[EVENT_BUS],
        retention_seconds=config.operations.retention_seconds,
        max_records=config.operations.max_records,
    )
    yield
    await app[OPERATIONS].close()
    app[EVENT_BUS].close()


def create_app(config: Config, *, runtimes: RuntimeRegistry | None = None) -> web.Application:
    """The gateway. ``runtimes`` replaces the configured backends (the caller then owns them)."""
    app = web.Application(middlewares=[request_id_middleware, error_middleware], client_max_size=MAX_BODY)
    app[CONFIG] = config
    app[TASKS] = TaskGroup()
    app[STARTED_AT] = time.monotonic()
    app[SELF_CONTAINER_ID] = config.runtimes.docker.self_id or detect_self_container_id()
    app.cleanup_ctx.append(_runtimes_ctx(runtimes))
    app.cleanup_ctx.append(_operations_ctx)

    r = app.router
    r.add_get("/healthz", health.healthz)
    r.add_get("/readyz", health.readyz)
    r.add_get("/api/v1/health", health.health)
    # Fixed paths first: /containers/stats and the bulk actions must not be taken for an {id}.
    r.add_get("/api/v1/containers", containers.list_containers)
    r.add_get("/api/v1/containers/stats", containers.batch_stats)
    r.add_post("/api/v1/containers/start-all", bulk.start_all)
    r.add_post("/api/v1/containers/stop-all", bulk.stop_all)
    r.add_post("/api/v1/containers/restart-all", bulk.restart_all)
    r.add_post("/api/v1/containers/batch", bulk.batch)
    r.add_get("/api/v1/containers/{id}", containers.inspect_container)
    r.add_get("/api/v1/containers/{id}/stats", containers.container_stats)
    r.add_post("/api/v1/containers/{id}/{action:start|stop|restart}", containers.container_action)
    r.add_get("/api/v1/operations/{operation_id}", operations.get_operation)
    return app
