"""The containers of a runtime as its own event stream keeps them, so a list needs no runtime call.

The :class:`~nekzus.realtime.watcher.StateWatcher` fills a model: a full listing when its stream (re)connects
and every ``resync_interval`` seconds, and a fresh row of one container for each of that
container's events, taken *before* the event is published, so a client that hears of a change and
lists afterwards already sees it. The list asks the runtime itself while the model is not warm:
before the first listing, after the stream broke or a refresh failed, and while a gateway action
on one of its containers has finished but the model has not yet re-read that container.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from runtimes import ContainerRow, ContainerRuntime, ContainerSummary

from .events import Event

# A finished action waits this long at most for the model to re-read its container.
PENDING_SECONDS = 5.0
_RENDERED_KEEP = 32  # rendered list answers kept within one second


_MAKES_CONTAINERS = frozenset({"container.create.completed", "container.update.completed"})


class ContainerModel:
    """One runtime's containers by short id, and whether they may be served."""

    def __init__(self, runtime: str) -> None:
        self.runtime = runtime
        self._rows: dict[str, ContainerRow] = {}
        self._ready = False
        # Containers whose action finished before the model re-read them: when (monotonic) each
        # was marked. A read that began before the mark does not clear it.
        self._pending: dict[str, float] = {}
        # Changes on every write: a rendered list is reused only for the version it was made of.
        self.version = 0
        # Set when containers are pending: the watcher re-reads them.
        self.wanted = asyncio.Event()

    @property
    def warm(self) -> bool:
        if not self._ready:
            return False
        if self._pending:
            now = time.monotonic()
            self._pending = {cid: at for cid, at in self._pending.items() if at + PENDING_SECONDS > now}
        return not self._pending

    @property
    def rows(self) -> Mapping[str, ContainerRow]:
        return self._rows

    def fill(self, rows: Iterable[ContainerRow], read_at: float) -> None:
        """Every container, from a full listing begun at ``read_at`` (monotonic): the model is warm
        from now on, but for containers marked pending after the listing began."""
        self._rows = {row.summary.id: row for row in rows}
        self._pending = {cid: at for cid, at in self._pending.items() if at > read_at}
        self._ready = True
        self.version += 1

    def refresh(self, ids: Iterable[str], rows: Iterable[ContainerRow], read_at: float) -> None:
        """Fresh rows of the containers ``ids`` named (one that is gone has none), read from
        ``read_at`` (monotonic) on; a pending mark set after that stays until the next read."""
        for cid in ids:
            self._rows.pop(cid, None)
            if self._pending.get(cid, read_at) <= read_at:
                self._pending.pop(cid, None)
        for row in rows:
            self._rows[row.summary.id] = row
        self.version += 1

    def remove(self, cid: str) -> None:
        self._rows.pop(cid, None)
        self._pending.pop(cid, None)
        self.version += 1

    def cool(self) -> None:
        """Not to be served until the next full listing (the stream broke, a refresh failed)."""
        self._ready = False
        self.version += 1

    def expect(self, cid: str, *, new: bool = False) -> bool:
        """A gateway action on ``cid`` finished: serve from the runtime until the row is re-read.
        Answers whether the model holds that container at all; a ``new`` container (one the
        gateway just created) is waited for all the same."""
        if cid not in self._rows and not new:
            return False
        self._pending[cid] = time.monotonic()
        self.wanted.set()
        return True

    def pending(self) -> list[str]:
        """The containers to re-read; clears ``wanted``."""
        self.wanted.clear()
        return list(self._pending)

    def summaries(self, now: float) -> list[ContainerSummary]:
        return [row.at(now) for row in self._rows.values()]

    def find(self, ref: str, now: float) -> ContainerSummary | None:
        """The container a client names, as the Engine would resolve it (the full id, else a name,
        else an id prefix of at least 12 characters), while the model may serve it: after a full
        listing, and not while a gateway action on that container waits to be re-read. Else None,
        and the caller asks the runtime (which also decides what the model cannot tell apart)."""
        if not self._ready:
            return None
        row = self._rows.get(ref[:12])
        if row is not None and len(ref) == 64 and row.summary.full_id == ref:
            return self._served(row, now)
        named = [r for r in self._rows.values() if r.summary.name == ref]
        if len(named) == 1:
            return self._served(named[0], now)
        if row is not None and not named and row.summary.full_id.startswith(ref):
            return self._served(row, now)
        return None

    def _served(self, row: ContainerRow, now: float) -> ContainerSummary | None:
        marked = self._pending.get(row.summary.id)
        if marked is not None and marked + PENDING_SECONDS > time.monotonic():
            return None
        return row.at(now)


@dataclass(frozen=True, slots=True)
class RenderedList:
    """A list answer as sent: the serialised body and its headers (the total, the page links)."""

    body: bytes
    headers: Mapping[str, str]


class RenderedLists:
    """List answers already serialised, valid for one set of model versions within one second
    (status lines such as "Up 5 seconds" change with the second)."""

    def __init__(self) -> None:
        self._second = 0
        self._bodies: dict[tuple[object, ...], RenderedList] = {}

    def get(self, key: tuple[object, ...], second: int) -> RenderedList | None:
        if second != self._second:
            self._second = second
            self._bodies.clear()
            return None
        return self._bodies.get(key)

    def put(self, key: tuple[object, ...], second: int, body: RenderedList) -> None:
        if second != self._second:
            return
        if len(self._bodies) >= _RENDERED_KEEP:
            self._bodies.pop(next(iter(self._bodies)))
        self._bodies[key] = body


class StateModels:
    """The models of the runtimes that have one (by runtime name), and the rendered lists."""

    def __init__(self) -> None:
        self.models: dict[str, ContainerModel] = {}
        self.rendered = RenderedLists()

    def expect(self, runtime: str, ids: Iterable[str]) -> None:
        """Work the gateway did on ``ids`` (a stack action: compose made, changed or removed them)
        has ended: the runtime's model serves lists from the runtime until it has re-read them,
        so a client that hears the work ended never reads what was there before."""
        model = self.models.get(runtime)
        if model is not None:
            for cid in ids:
                model.expect(cid, new=True)

    def warm_versions(self, runtimes: Sequence[ContainerRuntime]) -> tuple[int, ...] | None:
        """The versions of the models that serve every one of ``runtimes``, None unless all do."""
        versions = []
        for runtime in runtimes:
            model = self.models.get(runtime.name)
            if model is None or not model.warm:
                return None
            versions.append(model.version)
        return tuple(versions)

    def on_event(self, event: Event) -> None:
        """Bus listener: an action's completion or failure marks its container pending, before
        the client that waits for it hears of it."""
        if not (event.type.endswith((".completed", ".failed")) and event.type.startswith("container.")):
            return
        cid = str(event.data.get("containerId", ""))
        if not cid or event.data.get("namespace"):
            return  # pods are not modelled
        # A create or an update made a container no model has heard of yet; an update also
        # removed the one it replaced.
        new = event.type in _MAKES_CONTAINERS
        previous = str(event.data.get("previousContainerId", ""))
        for model in self.models.values():
            model.expect(cid, new=new)
            if previous:
                model.expect(previous)
