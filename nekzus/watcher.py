"""Live container state from the runtime's own event stream: ``container.state`` and ``health_change``.

Changes made outside the gateway (the docker CLI, a crash, a restart policy) are seen too. When the
stream breaks (the daemon restarts), the watcher reconnects with backoff, lists the containers to
reconcile what it missed, and publishes the differences; a state it already knew is not repeated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from runtimes import (
    ContainerRef,
    ContainerRuntime,
    ContainerState,
    ContainerSummary,
    RuntimeEvent,
    RuntimeFailure,
)

from .events import EventBus
from .linking import AppLinker

log = logging.getLogger(__name__)

RETRY_FIRST, RETRY_MAX = 0.5, 5.0


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
    def __init__(self, runtime: ContainerRuntime, bus: EventBus, linker: AppLinker) -> None:
        self.runtime = runtime
        self._bus = bus
        self._linker = linker
        # Keyed by (namespace, id): pods of different namespaces may share a name.
        self._known: dict[tuple[str, str], Known] = {}
        self._apps: dict[str, str] = {}
        # Set while the event stream is open (after the reconciliation that precedes it).
        self.watching = asyncio.Event()

    async def run(self) -> None:
        delay = RETRY_FIRST
        first = True
        while True:
            try:
                since = int(time.time())
                await self._reconcile(publish=not first)
                first = False
                self.watching.set()
                # Events from just before the listing are replayed; a state already known is
                # not published again, so the overlap costs nothing.
                async for event in self.runtime.events(since=since - 1):
                    delay = RETRY_FIRST
                    await self._apply(event)
                log.info("%s event stream ended; reconnecting", self.runtime.name)
            except RuntimeFailure as exc:
                if self.watching.is_set() or delay == RETRY_FIRST:
                    log.warning("%s event stream lost (%s); retrying", self.runtime.name, exc)
            self.watching.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _reconcile(self, *, publish: bool) -> None:
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
            self._update_app(c.id, current, publish=publish)
        for gone in set(self._known) - seen:
            del self._known[gone]

    async def _apply(self, event: RuntimeEvent) -> None:
        cid = event.container_id
        key = (event.namespace, cid)
        if event.state is None:  # removed
            self._known.pop(key, None)
            return
        known = self._known.get(key)
        labels = dict(event.labels) if event.labels else (known.labels if known else {})
        annotations = dict(event.annotations) if event.annotations else (known.annotations if known else {})
        health = known.health if known else None
        if event.health is not None:
            # A healthcheck verdict (Docker), or a pod's readiness carried on every pod event.
            health = event.health
        elif event.action in ("start", "restart"):
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
            self._publish_state(cid, current, known.state if known else None, event.timestamp)
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

    def _publish_state(self, cid: str, c: Known, previous: ContainerState | None, at: int = 0) -> None:
        data: dict[str, Any] = {
            "containerId": cid,
            "name": c.name,
            "runtime": self.runtime.name,
            "namespace": c.namespace,
            "state": c.state.value,
            "previousState": previous.value if previous else None,
            "timestamp": at or int(time.time()),
        }
        self._bus.publish("container.state", data)

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
