"""Live container stats for WebSocket readers and the history: one runtime stream per container.

A :class:`Sampler` reads one container's stream (:meth:`runtimes.base.StatsStream.stream_stats`,
the Engine's ``stream=true``: one long request, a sample a second) and hands each sample to its
listeners synchronously. It runs while anyone listens and is cancelled when the last one leaves;
each sample is serialised once, however many connections receive it.

A connection's :class:`StatsWatch` forwards a container's sample once its interval has passed
since the last one it sent. Stats are droppable: a sample that finds the connection's outbox
backed up (``backlog`` messages waiting) is skipped and the next, newer one tries again, so a
client that reads slowly gets fewer samples, never stale ones, and neither slows the samplers nor
makes anyone hold more than that backlog.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from runtimes import ContainerRef, ContainerSummary, RuntimeFailure, RuntimeRegistry, StatsSample
from runtimes.base import StatsStream

from ..errors import ApiError, from_runtime
from ..params import is_valid_container_id, is_valid_namespace
from ..tasks import TaskGroup
from .aiohttp_compat import text_frame
from .events import Event
from .hub import Connection, dumps

log = logging.getLogger(__name__)

STATS_FEED: web.AppKey[StatsFeed] = web.AppKey("stats_feed")

# A runtime samples about once a second; a watch sends when its interval has passed less this much,
# so that an interval of 5 gets every 5th sample rather than every 6th when samples come early.
SAMPLE_TOLERANCE = 0.5
STATS_BACKLOG = 16  # messages waiting in a connection's outbox past which its stats are dropped
RESYNC_SECONDS = 60.0  # the linked running containers are listed again at least this often
MIN_INTERVAL, MAX_INTERVAL = 1, 60
MAX_CONTAINERS = 100  # containers one subscribe message may name
_FIELDS = frozenset({"containerIds", "linked", "interval", "runtime", "namespace"})

SampleKey = tuple[str, str, str]  # (runtime, namespace, full id)
Render = Callable[[StatsSample], Mapping[str, Any]]


class InvalidStatsRequest(ValueError):
    """A stats subscribe message whose fields cannot be used; the text goes back to the client."""


@dataclass(frozen=True, slots=True)
class StatsRequest:
    """What one ``container.stats.subscribe`` message asks for."""

    container_ids: tuple[str, ...]
    linked: bool
    interval: float
    runtime: str | None
    namespace: str

    @classmethod
    def from_message(cls, data: Mapping[str, Any]) -> StatsRequest:
        unknown = sorted(k for k in data if k not in _FIELDS)
        if unknown:
            raise InvalidStatsRequest(f"unknown field {unknown[0][:64]!r}")
        interval = data.get("interval", MIN_INTERVAL)
        # NaN and infinities fail the range test; bool is an int to Python but not to a client.
        if (
            isinstance(interval, bool)
            or not isinstance(interval, int | float)
            or not MIN_INTERVAL <= interval <= MAX_INTERVAL
        ):
            raise InvalidStatsRequest(
                f"interval must be a number of seconds from {MIN_INTERVAL} to {MAX_INTERVAL}"
            )
        runtime, namespace = data.get("runtime"), data.get("namespace", "")
        if (runtime is not None and not isinstance(runtime, str)) or not isinstance(namespace, str):
            raise InvalidStatsRequest("runtime and namespace must be strings")
        if namespace and not is_valid_namespace(namespace):
            raise InvalidStatsRequest("namespace must be a Kubernetes namespace name")
        linked, ids = data.get("linked"), data.get("containerIds")
        if (linked is None) == (ids is None):
            raise InvalidStatsRequest('name the containers: either containerIds or "linked": true')
        if linked is not None:
            if linked is not True:
                raise InvalidStatsRequest("linked must be true (or leave it out and name containerIds)")
            return cls((), True, float(interval), runtime, namespace)
        if (
            not isinstance(ids, list)
            or not 0 < len(ids) <= MAX_CONTAINERS
            or not all(is_valid_container_id(i) for i in ids)
        ):
            raise InvalidStatsRequest(
                f"containerIds must be a list of 1 to {MAX_CONTAINERS} container ids or names"
            )
        return cls(tuple(dict.fromkeys(ids)), False, float(interval), runtime, namespace)


@dataclass(frozen=True, slots=True)
class Target:
    """A container to sample: its runtime's name, its runtime's full id, the id clients know."""

    runtime: str
    full_id: str
    container_id: str
    namespace: str = ""

    @classmethod
    def of(cls, c: ContainerSummary) -> Target:
        return cls(c.runtime, c.full_id, c.id, c.namespace)

    @property
    def key(self) -> SampleKey:
        return (self.runtime, self.namespace, self.full_id)


class StatsListener(Protocol):
    """Told of each sample of a container, then once of the end of its stream."""

    def on_sample(self, sampler: Sampler, sample: StatsSample) -> None:
        """Called synchronously by the sampler: must not block or await."""
        ...

    def on_end(self, sampler: Sampler, error: ApiError | None) -> None:
        """The stream ended on its own: the container stopped (``error`` None) or it failed."""
        ...


class LinkedFollower(Protocol):
    """Follows every linked running container: told of each at every listing (known ones again)."""

    def follow(self, target: Target) -> None: ...


class Sampler:
    """One container's stream and its listeners; its newest sample rendered once, when first asked."""

    def __init__(self, target: Target, render: Render) -> None:
        self.target = target
        self.listeners: set[StatsListener] = set()
        self.task: asyncio.Task[None] | None = None
        self._render = render
        self._latest: StatsSample | None = None
        self._message: tuple[str, bytes] | None = None

    def publish(self, sample: StatsSample) -> None:
        self._latest, self._message = sample, None
        for listener in list(self.listeners):
            listener.on_sample(self, sample)

    def message(self) -> tuple[str, bytes]:
        """The newest sample as a ``container.stats`` message: its text and its WebSocket frame."""
        if self._message is None:
            assert self._latest is not None
            text = dumps("container.stats", dict(self._render(self._latest)))
            self._message = (text, text_frame(text.encode()))
        return self._message


class StatsWatch:
    """The containers one connection follows, at its interval; with ``linked``, every linked
    running container, joined as each starts."""

    def __init__(self, feed: StatsFeed, conn: Connection, interval: float, *, linked: bool) -> None:
        self.feed = feed
        self.conn = conn
        self.interval = interval
        self.linked = linked
        self.samplers: dict[SampleKey, Sampler] = {}
        self.dropped = 0  # samples skipped because the client was behind
        self.closed = False
        self._sent: dict[SampleKey, float] = {}

    def follow(self, target: Target) -> None:
        if self.closed or target.key in self.samplers:
            return
        self.samplers[target.key] = self.feed.join(target, self)

    def on_sample(self, sampler: Sampler, sample: StatsSample) -> None:
        conn, key = self.conn, sampler.target.key
        # Security: a session whose token expired receives nothing until it re-authenticates.
        if conn.outbox.held or conn.outbox.closed:
            return
        now = time.monotonic()
        last = self._sent.get(key)
        if last is not None and now - last < self.interval - SAMPLE_TOLERANCE:
            return
        if len(conn.outbox) >= self.feed.backlog:
            self.dropped += 1  # the next sample, newer, tries again
            return
        text, frame = sampler.message()
        if not conn.write_now(frame):
            conn.outbox.offer(text)
        self._sent[key] = now

    def on_end(self, sampler: Sampler, error: ApiError | None) -> None:
        key = sampler.target.key
        self.samplers.pop(key, None)
        self._sent.pop(key, None)
        data: dict[str, Any] = {
            "containerId": sampler.target.container_id,
            "runtime": sampler.target.runtime,
            "reason": "stopped" if error is None else "failed",
        }
        if error is not None:
            data |= {"error": error.code, "message": error.message}
        self.conn.notify("container.stats.ended", data)

    def remove(self, wanted: set[str]) -> list[str]:
        """Stop following the containers named in ``wanted`` (by id, full id or name given); the
        ids clients know of those that were followed."""
        removed = []
        for key, sampler in list(self.samplers.items()):
            target = sampler.target
            if wanted & {target.container_id, target.full_id}:
                del self.samplers[key]
                self._sent.pop(key, None)
                self.feed.leave(sampler, self)
                removed.append(target.container_id)
        return removed

    @property
    def container_ids(self) -> list[str]:
        return sorted(s.target.container_id for s in self.samplers.values())

    def close(self) -> None:
        self.closed = True
        self.feed.followers.discard(self)
        for sampler in self.samplers.values():
            self.feed.leave(sampler, self)
        self.samplers.clear()


class StatsFeed:
    """Every sampler, every connection's watch, and the follower of linked running containers.

    ``lister`` answers the linked running containers of every runtime; it is asked when a
    container starts (a ``container.state`` event) and every ``RESYNC_SECONDS``, only while some
    follower (a linked watch, the history) wants them.
    """

    def __init__(
        self,
        registry: RuntimeRegistry,
        render: Render,
        lister: Callable[[], Awaitable[list[ContainerSummary]]],
        *,
        backlog: int = STATS_BACKLOG,
    ) -> None:
        self.registry = registry
        self.backlog = backlog
        self.followers: set[LinkedFollower] = set()
        self._render = render
        self._lister = lister
        self._samplers: dict[SampleKey, Sampler] = {}
        self._watches: dict[Connection, StatsWatch] = {}
        self._tasks = TaskGroup()
        self._wanted = asyncio.Event()

    @property
    def samplers(self) -> Mapping[SampleKey, Sampler]:
        return self._samplers

    @property
    def tasks(self) -> int:
        """Tasks running: the samplers' and the follower's (for tests and the benchmark)."""
        return len(self._tasks)

    def streams(self, runtime: str) -> StatsStream | None:
        """``runtime`` if it streams stats, else None (it answers one-shot calls only)."""
        rt = self.registry.get(runtime)
        return rt if isinstance(rt, StatsStream) else None

    def start(self, ready: Callable[[], Awaitable[object]]) -> None:
        """Follow the linked running containers once ``ready`` returns (the state watchers know
        the containers: listing before would ask the runtimes what they are about to tell)."""
        self._wanted.set()
        self._tasks.spawn(self._follow_linked(ready), name="stats-linked-follower")

    def join(self, target: Target, listener: StatsListener) -> Sampler:
        """The target's sampler, started if nobody sampled it, with ``listener`` among its own."""
        sampler = self._samplers.get(target.key)
        if sampler is None:
            runtime = self.streams(target.runtime)
            assert runtime is not None, "only a runtime that streams stats is sampled"
            sampler = Sampler(target, self._render)
            self._samplers[target.key] = sampler
            sampler.task = self._tasks.spawn(
                self._run(sampler, runtime), name=f"stats-{target.runtime}-{target.container_id}"
            )
        sampler.listeners.add(listener)
        return sampler

    def leave(self, sampler: Sampler, listener: StatsListener) -> None:
        """``listener`` stops listening; the last one to leave ends the stream."""
        sampler.listeners.discard(listener)
        if sampler.listeners:
            return
        if self._samplers.get(sampler.target.key) is sampler:
            del self._samplers[sampler.target.key]
        if sampler.task is not None:
            sampler.task.cancel()

    async def _run(self, sampler: Sampler, runtime: StatsStream) -> None:
        target = sampler.target
        error: ApiError | None = None
        try:
            async for sample in runtime.stream_stats(ContainerRef(target.full_id, target.namespace)):
                sampler.publish(sample)
        except RuntimeFailure as exc:
            error = from_runtime(
                exc,
                fallback="CONTAINER_STATS_FAILED",
                fallback_message="The stats stream failed",
                container_id=target.container_id,
                reading=True,
                broken=True,
            )
        finally:
            # Also when cancelled: a sampler whose listeners all left is forgotten at once.
            if self._samplers.get(target.key) is sampler:
                del self._samplers[target.key]
        for listener in list(sampler.listeners):
            listener.on_end(sampler, error)
        sampler.listeners.clear()

    # -- connections ---------------------------------------------------------------------------

    def watch(self, conn: Connection, interval: float, *, linked: bool) -> StatsWatch:
        """A new watch for ``conn``, replacing the one it had (a subscribe replaces the last)."""
        self.unwatch(conn)
        watch = StatsWatch(self, conn, interval, linked=linked)
        self._watches[conn] = watch
        return watch

    def watch_of(self, conn: Connection) -> StatsWatch | None:
        return self._watches.get(conn)

    def unwatch(self, conn: Connection) -> StatsWatch | None:
        """End the connection's watch (it unsubscribed, or it is gone); the watch ended, if any."""
        watch = self._watches.pop(conn, None)
        if watch is not None:
            watch.close()
        return watch

    # -- the linked running containers ---------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """Event bus listener: a container that starts may be one to follow."""
        if event.type == "container.state" and event.data.get("state") == "running" and self.followers:
            self._wanted.set()

    async def linked(self) -> list[Target]:
        """The linked running containers of the runtimes that stream stats."""
        return [Target.of(c) for c in await self._lister() if self.streams(c.runtime) is not None]

    async def follow_now(self, follower: LinkedFollower) -> None:
        """Start ``follower`` on every linked running container now, and on those that start."""
        self.followers.add(follower)
        for target in await self.linked():
            follower.follow(target)

    async def _follow_linked(self, ready: Callable[[], Awaitable[object]]) -> None:
        await ready()
        while True:
            try:
                async with asyncio.timeout(RESYNC_SECONDS):
                    await self._wanted.wait()
            except TimeoutError:
                pass
            self._wanted.clear()
            if not self.followers:
                continue
            try:
                targets = await self.linked()
            except (ApiError, RuntimeFailure) as exc:
                log.warning("listing the linked containers for their stats failed: %s", exc)
                continue
            for follower in list(self.followers):
                for target in targets:
                    follower.follow(target)

    async def close(self) -> None:
        for conn in list(self._watches):
            self.unwatch(conn)
        self.followers.clear()
        await self._tasks.close()
