"""Live container state from the runtime's own event stream: ``container.state`` (with the exit
code of an exit, when the runtime tells it), ``container.health`` (any container's healthcheck
verdict), ``container.oom`` and ``health_change`` (a linked app's).

Changes made outside the gateway (the docker CLI, a crash, a restart policy) are seen too. When the
stream breaks (the daemon restarts), the watcher reconnects with backoff, lists the containers to
reconcile what it missed, and publishes the differences; a state it already knew is not repeated.
A container that is gone, whether its removal was seen live or the listing no longer has it, is
announced once with the state ``removed``.

For a runtime that offers rows (:class:`~runtimes.RowSource`), the watcher also keeps the
:class:`~nekzus.realtime.state.ContainerModel` the list is served from: it re-reads a container's row before
publishing that container's event, and lists everything again every ``resync_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from runtimes import (
    ContainerRef,
    ContainerRuntime,
    ContainerState,
    ContainerSummary,
    RowSource,
    RuntimeEvent,
    RuntimeFailure,
)

from ..linking import AppLinker
from ..tasks import TaskGroup
from .events import EventBus
from .state import ContainerModel

log = logging.getLogger(__name__)

RETRY_FIRST, RETRY_MAX = 0.5, 5.0
# The ``state`` of a ``container.state`` event for a container that no longer exists.
REMOVED = "removed"
# Healthcheck results that are a verdict ("starting" is none yet).
VERDICTS = frozenset({"healthy", "unhealthy"})
# Runtime events that carry no state and remove nothing (see RuntimeEvent.state).
_STATELESS = frozenset({"rename", "oom"})


@dataclass(frozen=True, slots=True)
class Known:
    name: str
    namespace: str
    state: ContainerState
    labels: dict[str, str]
    annotations: dict[str, str]
    health: str | None

    def summary(self, cid: str, runtime: str) -> ContainerSummary:
        return ContainerSummary(
            id=cid, full_id=cid, name=self.name, image="", state=self.state, status="", created=0,
            ports=(), labels=self.labels, runtime=runtime, namespace=self.namespace,
            annotations=self.annotations, health=self.health,
        )  # fmt: skip


def app_status(state: ContainerState, health: str | None) -> str | None:
    """healthy / unhealthy for an app's container, None while its healthcheck has not decided."""
    if state is not ContainerState.RUNNING:
        return "unhealthy"
    if health == "starting":
        return None
    return "unhealthy" if health == "unhealthy" else "healthy"


class StateWatcher:
    def __init__(
        self,
        runtime: ContainerRuntime,
        bus: EventBus,
        linker: AppLinker,
        *,
        model: ContainerModel | None = None,
        resync_interval: float = 60.0,
    ) -> None:
        self.runtime = runtime
        self._bus = bus
        self._linker = linker
        # Keyed by (namespace, id): pods of different namespaces may share a name.
        self._known: dict[tuple[str, str], Known] = {}
        self._apps: dict[str, str] = {}
        # Set while the event stream is open (after the reconciliation that precedes it).
        self.watching = asyncio.Event()
        self._rows = runtime if isinstance(runtime, RowSource) else None
        self.model = model if self._rows is not None else None
        self._resync_interval = resync_interval
        self._delay = RETRY_FIRST
        # Events, resyncs and re-reads write the model one at a time: a listing taken before an
        # event must not overwrite the row that event re-read.
        self._lock = asyncio.Lock()

    def known(self, namespace: str, cid: str) -> Known | None:
        """What the watcher knows of a container (its name, state, labels), None if nothing."""
        return self._known.get((namespace, cid))

    def containers(self) -> list[tuple[str, Known]]:
        """Every container the watcher knows of, with its id."""
        return [(cid, known) for (_, cid), known in self._known.items()]

    def full_id(self, cid: str) -> str:
        """The runtime's full id of a container (its row's, when the model has one), else ``cid``."""
        row = self.model.rows.get(cid) if self.model is not None else None
        return row.summary.full_id if row is not None else cid

    async def run(self) -> None:
        self._delay = RETRY_FIRST
        first = True
        while True:
            try:
                since = int(time.time())
                async with self._lock:
                    await self._reconcile(publish=not first)
                first = False
                self.watching.set()
                await self._follow(since)
                log.info("%s event stream ended; reconnecting", self.runtime.name)
            except RuntimeFailure as exc:
                if self.watching.is_set() or self._delay == RETRY_FIRST:
                    log.warning("%s event stream lost (%s); retrying", self.runtime.name, exc)
            self.watching.clear()
            if self.model is not None:
                self.model.cool()  # it misses events until the next reconciliation
            await asyncio.sleep(self._delay)
            self._delay = min(self._delay * 2, RETRY_MAX)

    async def _follow(self, since: int) -> None:
        upkeep = TaskGroup()
        if self.model is not None:
            upkeep.spawn(self._upkeep(self.model), name=f"state-upkeep-{self.runtime.name}")
        try:
            # Events from just before the listing are replayed; a state already known is not
            # published again, so the overlap costs nothing.
            async for event in self.runtime.events(since=since - 1):
                self._delay = RETRY_FIRST
                async with self._lock:
                    await self._apply(event)
        finally:
            await upkeep.close()

    async def _upkeep(self, model: ContainerModel) -> None:
        """While the stream is open: re-read containers whose actions finished, and list every
        container again each ``resync_interval`` seconds, in case the stream lost something."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._resync_interval
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    await model.wanted.wait()
            except TimeoutError:
                deadline = loop.time() + self._resync_interval
                async with self._lock:
                    try:
                        await self._reconcile(publish=True)
                    except RuntimeFailure as exc:
                        log.warning(
                            "%s resync failed (%s); listing live until it works", self.runtime.name, exc
                        )
                        model.cool()
                continue
            async with self._lock:
                await self._reread(model.pending())

    async def _reread(self, ids: Sequence[str]) -> dict[str, ContainerSummary] | None:
        """Fresh rows of ``ids`` into the model, answered by id; None (and the model cools) when
        the runtime cannot be asked."""
        assert self._rows is not None and self.model is not None
        if not ids:
            return {}
        read_at = time.monotonic()
        try:
            rows = await self._rows.rows(ids)
        except RuntimeFailure as exc:
            log.warning(
                "re-reading %s on %s failed (%s); listing live", ",".join(ids), self.runtime.name, exc
            )
            self.model.cool()
            return None
        self.model.refresh(ids, rows, read_at)
        return {row.summary.id: row.summary for row in rows}

    async def _reconcile(self, *, publish: bool) -> None:
        if self._rows is not None and self.model is not None:
            read_at = time.monotonic()
            rows = await self._rows.rows(known=self.model.rows)
            self.model.fill(rows, read_at)
            containers = [row.summary for row in rows]
        else:
            containers = await self.runtime.list_containers()
        seen = set()
        for c in containers:
            key = (c.namespace, c.id)
            seen.add(key)
            known = self._known.get(key)
            current = Known(c.name, c.namespace, c.state, dict(c.labels), dict(c.annotations), c.health)
            self._known[key] = current
            if publish and (known is None or known.state is not c.state):
                self._publish_state(c.id, current, known.state if known else None)
            if publish:
                self._check_health(c.id, current, known)
            self._update_app(c.id, current, publish=publish)
        for gone in set(self._known) - seen:
            self._forget(gone, publish=publish)

    async def _apply(self, event: RuntimeEvent) -> None:
        cid = event.container_id
        key = (event.namespace, cid)
        known = self._known.get(key)
        if event.action == "oom":
            self._publish_oom(cid, event, known)
            return
        if event.state is None and event.action not in _STATELESS:  # removed
            if self.model is not None:
                self.model.remove(cid)
            if key in self._known:
                self._forget(key, publish=True, at=event.timestamp)
            return
        # Ordering: the model holds the container's new row before any client hears of the change.
        fresh = await self._reread([cid]) if self.model is not None else None
        row = fresh.get(cid) if fresh else None
        if event.state is None:  # renamed: nothing to publish
            if known is not None and row is not None:
                self._known[key] = replace(known, name=row.name)
            return
        labels = dict(event.labels) if event.labels else (known.labels if known else {})
        annotations = dict(event.annotations) if event.annotations else (known.annotations if known else {})
        health = known.health if known else None
        if event.health is not None:
            # A healthcheck verdict (Docker), or a pod's readiness carried on every pod event.
            health = event.health
        elif event.action in ("start", "restart"):
            if row is not None:
                health = row.health
            else:
                health = await self._health_after_start(cid, event, labels, health)
        current = Known(
            event.name or (known.name if known else cid),
            event.namespace,
            event.state,
            labels,
            annotations,
            health,
        )
        self._known[key] = current
        if known is None or known.state is not current.state:
            self._publish_state(
                cid, current, known.state if known else None, event.timestamp, exit_code=event.exit_code
            )
        self._check_health(cid, current, known, event.timestamp)
        self._update_app(cid, current, publish=True)

    async def _health_after_start(
        self, cid: str, event: RuntimeEvent, labels: dict[str, str], health: str | None
    ) -> str | None:
        """A (re)started container with a healthcheck is "starting" until the check decides.

        Events do not say whether a container has a healthcheck, so a linked one is inspected.
        """
        probe = Known(event.name, event.namespace, ContainerState.RUNNING, labels, {}, None)
        if self._linker.app_of(probe.summary(cid, self.runtime.name)) is None:
            return health
        try:
            current = await self.runtime.get(ContainerRef(cid, event.namespace))
        except RuntimeFailure:
            return health
        return current.health

    def _forget(self, key: tuple[str, str], *, publish: bool, at: int = 0) -> None:
        """A container that is gone, seen live or found missing by a relist: clients hear of it once
        (``state`` "removed"), and its app turns unhealthy."""
        known = self._known.pop(key)
        if not publish:
            return
        cid = key[1]
        self._publish_state(cid, known, known.state, at, removed=True)
        app = self._linker.app_of(known.summary(cid, self.runtime.name))
        if app is not None and self._apps.get(app[0]) == "healthy":
            self._apps[app[0]] = "unhealthy"
            self._publish_health(app, "unhealthy", f"Container {known.name} was removed")

    def _publish_state(
        self,
        cid: str,
        c: Known,
        previous: ContainerState | None,
        at: int = 0,
        *,
        removed: bool = False,
        exit_code: int | None = None,
    ) -> None:
        data: dict[str, Any] = {
            "containerId": cid,
            "name": c.name,
            "runtime": self.runtime.name,
            "namespace": c.namespace,
            "state": REMOVED if removed else c.state.value,
            "previousState": previous.value if previous else None,
            "timestamp": at or int(time.time()),
        }
        if exit_code is not None:
            data["exitCode"] = exit_code
        self._bus.publish("container.state", data)

    def _check_health(self, cid: str, c: Known, known: Known | None, at: int = 0) -> None:
        """``container.health`` when a container's healthcheck verdict changed, for any container
        (``health_change`` tells only of linked apps). A container seen for the first time only
        sets its baseline."""
        if known is None or c.health not in VERDICTS or known.health == c.health:
            return
        self._bus.publish(
            "container.health",
            {
                "containerId": cid,
                "name": c.name,
                "runtime": self.runtime.name,
                "namespace": c.namespace,
                "health": c.health,
                "previousHealth": known.health,
                "timestamp": at or int(time.time()),
            },
        )

    def _publish_oom(self, cid: str, event: RuntimeEvent, known: Known | None) -> None:
        self._bus.publish(
            "container.oom",
            {
                "containerId": cid,
                "name": event.name or (known.name if known else cid),
                "runtime": self.runtime.name,
                "namespace": event.namespace,
                "timestamp": event.timestamp or int(time.time()),
            },
        )

    def _update_app(self, cid: str, c: Known, *, publish: bool) -> None:
        app = self._linker.app_of(c.summary(cid, self.runtime.name))
        if app is None:
            return
        status = app_status(c.state, c.health)
        previous = self._apps.get(app[0])
        if status is None or previous == status:
            return
        self._apps[app[0]] = status
        # The first verdict on an app only sets its baseline: a change is what clients hear of.
        if not publish or previous is None:
            return
        if status == "healthy":
            message = f"Container {c.name} is running" + (" and healthy" if c.health == "healthy" else "")
        elif c.state is ContainerState.RUNNING:
            message = f"Container {c.name} failed its healthcheck"
        else:
            message = f"Container {c.name} is {c.state.value}"
        self._publish_health(app, status, message)

    def _publish_health(self, app: tuple[str, str], status: str, message: str) -> None:
        self._bus.publish(
            "health_change",
            {
                "appId": app[0],
                "appName": app[1],
                "status": status,
                "message": message,
                "timestamp": int(time.time()),
            },
        )
