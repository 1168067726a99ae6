"""Removed containers are announced: a ``container.state`` with the state ``removed``, once,
whether the removal was seen live or found by a relist after the event stream was down."""

from __future__ import annotations

import dataclasses
from typing import Any

from nekzus.config import AppConfig
from nekzus.linking import AppLinker
from nekzus.realtime.events import Event, EventBus
from nekzus.realtime.watcher import StateWatcher
from runtimes import ContainerSummary
from tests.support.fakes import FakeRuntime, summary
from tests.support.gateway import Heard


def drained(sub: Heard) -> list[Event]:
    """What was published so far (publishing is synchronous)."""
    events = []
    while not sub.queue.empty():
        events.append(sub.queue.get_nowait())
    return events


def box(n: int, **changes: Any) -> ContainerSummary:
    """A fake container with an id of its own (``summary`` ids share their first 12 digits)."""
    return dataclasses.replace(summary(n), id=f"c{n:011d}", name=f"box-{n}", **changes)


async def test_a_relist_announces_every_container_that_vanished_once() -> None:
    linked = box(1, labels={"nekzus.http.app.id": "grafana"})
    unlinked = box(2, labels={})
    runtime = FakeRuntime([linked, unlinked, box(3)])
    bus = EventBus()
    sub = Heard(bus)
    watcher = StateWatcher(runtime, bus, AppLinker([AppConfig(id="grafana", name="Grafana")]))
    await watcher._reconcile(publish=False)
    # Removed while the stream was down: the next relist finds them missing.
    for gone in (linked, unlinked):
        del runtime.containers[gone.full_id]
    await watcher._reconcile(publish=True)
    await watcher._reconcile(publish=True)
    events = drained(sub)
    states = [e.data for e in events if e.type == "container.state"]
    assert sorted((s["containerId"], s["state"], s["previousState"]) for s in states) == [
        (linked.id, "removed", "running"),
        (unlinked.id, "removed", "running"),
    ]
    health = [e.data for e in events if e.type == "health_change"]
    assert [(h["appId"], h["status"], h["message"]) for h in health] == [
        ("grafana", "unhealthy", f"Container {linked.name} was removed")
    ]


async def test_the_first_listing_announces_nothing() -> None:
    runtime = FakeRuntime([box(1)])
    bus = EventBus()
    sub = Heard(bus)
    watcher = StateWatcher(runtime, bus, AppLinker([]))
    await watcher._reconcile(publish=False)
    runtime.containers.clear()
    await watcher._reconcile(publish=False)
    assert drained(sub) == []
