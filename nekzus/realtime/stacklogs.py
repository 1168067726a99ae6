"""A whole stack's live logs over the WebSocket: one stream of ``stack.logs`` messages for every
container of its (chosen) services, including containers that start while it is open.

Each container is followed by a :class:`~nekzus.realtime.logstream.LogSession` whose messages carry
the stack, service and container, so a stack's stream has the container streams' guarantees: lines
wait for room in the connection's outbox (a slow reader slows its own stream and loses nothing),
a ``since`` with nanoseconds skips what the client already has, and a follower ends when its
container stops. The session looks at the stack again whenever the state watcher says a container
started, and follows the new ones (a deploy's recreated containers, a scale-up) from that moment.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from runtimes import ContainerRuntime, ContainerState, ContainerSummary

from ..errors import ApiError
from .events import Event, EventBus, now
from .hub import Connection, OutboxClosed, dumps
from .logrequest import InvalidSubscription, LogSubscription, since_of, tail_of
from .logstream import LogSession

log = logging.getLogger(__name__)

# Containers one stack subscription follows at once; those beyond are left out, and said so once.
MAX_CONTAINERS = 32
MAX_SERVICES = 64
_NAME_LENGTH = 128

# The stack's containers to follow now, as (service, container); an ApiError when it cannot be told.
Lister = Callable[[], Awaitable[list[tuple[str, ContainerSummary]]]]


@dataclass(frozen=True, slots=True)
class StackLogSubscription:
    """What one ``stack.logs.subscribe`` asks for: the stack, which services, from when, how."""

    stack: str
    services: tuple[str, ...] | None
    tail: int
    timestamps: bool
    since: tuple[int, int] | None
    since_exclusive: bool

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> StackLogSubscription:
        unknown = sorted(set(data) - {"stack", "services", "tail", "since", "timestamps"})
        if unknown:
            raise InvalidSubscription(f"unknown field {unknown[0][:64]!r}")
        stack = data.get("stack")
        if not isinstance(stack, str) or not stack:
            raise InvalidSubscription("stack must be the name of a stack")
        services = data.get("services")
        if services is not None and (
            not isinstance(services, list)
            or not 0 < len(services) <= MAX_SERVICES
            or not all(isinstance(s, str) and 0 < len(s) <= _NAME_LENGTH for s in services)
        ):
            raise InvalidSubscription(f"services must be a list of 1 to {MAX_SERVICES} service names")
        timestamps = data.get("timestamps", False)
        if not isinstance(timestamps, bool):
            raise InvalidSubscription("timestamps must be true or false")
        since, exclusive = since_of(data)
        return cls(
            stack,
            None if services is None else tuple(dict.fromkeys(services)),
            tail_of(data),
            timestamps,
            since,
            exclusive,
        )


class _Follower(LogSession):
    """A container's log session whose messages are the stack's: ``stack.logs`` lines, and
    ``stack.logs.container.*`` notices (started, ended, error, resumed) for this container."""

    def __init__(
        self, conn: Connection, runtime: ContainerRuntime, sub: LogSubscription, stack: str, service: str,
        name: str,
    ) -> None:  # fmt: skip
        super().__init__(conn, runtime, sub)
        self.tags = {"stack": stack, "service": service, "container": name, "containerId": sub.container_id}
        head = json.dumps(self.tags, separators=(",", ":"), ensure_ascii=False)[:-1]
        # The message's fields in the container.logs order, "text" for its "message".
        self._prefix = {
            stream: f'{{"type":"stack.logs","data":{head},"stream":"{stream}","text":'
            for stream in ("stdout", "stderr")
        }

    def _data(self, **fields: Any) -> dict[str, Any]:
        data: dict[str, Any] = {**self.tags, **fields}
        data.setdefault("timestamp", now())
        return data

    async def _notice(self, message_type: str, **fields: Any) -> None:
        kind = message_type.removeprefix("container.logs")
        await self.conn.outbox.put_log(dumps(f"stack.logs.container{kind}", self._data(**fields)))


class StackLogSession:
    """Follows one stack for one connection until it is unsubscribed or the client goes."""

    def __init__(
        self,
        conn: Connection,
        runtime: ContainerRuntime,
        sub: StackLogSubscription,
        services: Sequence[str],
        containers: Lister,
        bus: EventBus,
        spawn: Callable[..., asyncio.Task[None]],
    ) -> None:
        self.conn = conn
        self.runtime = runtime
        self.sub = sub
        self.services = list(services)
        self._containers = containers
        self._bus = bus
        self._spawn = spawn
        self._changed = asyncio.Event()
        self._followers: dict[str, _Follower] = {}
        # The last line time sent of each container followed so far: a restart resumes after it.
        self._last: dict[str, str] = {}
        self.task: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        """End the stream and its followers, and wait until they have (a reply sent next follows
        the last line)."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    def ended(self) -> dict[str, Any]:
        """The ``stack.logs.ended`` data of a stream the client unsubscribed."""
        return {"stack": self.sub.stack, "reason": "stopped", "timestamp": now()}

    def _heard(self, event: Event) -> None:
        # Bus listener (never blocks): any container of this runtime that starts may be the stack's;
        # the look that follows decides, from the state model the watcher updated first.
        data = event.data
        if (
            event.type == "container.state"
            and data.get("state") == ContainerState.RUNNING.value
            and data.get("runtime") == self.runtime.name
        ):
            self._changed.set()

    async def run(self) -> None:
        """Follow the stack; the connection going away ends it quietly."""
        self._bus.add_listener(self._heard)
        try:
            await self._run()
        except OutboxClosed:
            return
        finally:
            self._bus.remove_listener(self._heard)
            followers = list(self._followers.values())
            for follower in followers:
                if follower.task is not None:
                    follower.task.cancel()
            await asyncio.gather(*(f.task for f in followers if f.task is not None), return_exceptions=True)

    async def _run(self) -> None:
        await self._put("stack.logs.started", {"stack": self.sub.stack, "services": self.services})
        # Containers started from here on are new to the client: all of their lines are sent.
        opened = time.time_ns()
        first = True
        warned = False
        self._changed.set()
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                found = await self._containers()
            except ApiError as exc:
                await self._error(exc.code, exc.message)
                continue
            for service, container in found:
                if container.id in self._followers or not container.state.is_running:
                    continue
                if len(self._followers) >= MAX_CONTAINERS:
                    if not warned:
                        warned = True
                        await self._error(
                            "TOO_MANY_CONTAINERS",
                            f"A stack's log stream follows at most {MAX_CONTAINERS} containers",
                        )
                    break
                self._follow(service, container, self._since(container.id, first, opened))
            first = False

    def _since(self, cid: str, first: bool, opened: int) -> tuple[tuple[int, int] | None, bool]:
        """From when a container is followed: after the last line sent for one followed before;
        else from the client's ``since`` when it gave one (its resume point holds for every
        container); else its ``tail`` for the containers there at the start, and everything from
        the stream's start for those that start later."""
        last = self._last.get(cid)
        if last is not None:
            return since_of({"since": last})
        if first or self.sub.since is not None:
            return self.sub.since, self.sub.since_exclusive
        return (opened // 1_000_000_000, opened % 1_000_000_000), True

    def _follow(
        self, service: str, container: ContainerSummary, since: tuple[tuple[int, int] | None, bool]
    ) -> None:
        sub = LogSubscription(
            container_id=container.id,
            namespace="",
            runtime=self.runtime.name,
            tail=self.sub.tail,
            follow=True,
            timestamps=self.sub.timestamps,
            since=since[0],
            since_exclusive=since[1],
        )
        follower = _Follower(self.conn, self.runtime, sub, self.sub.stack, service, container.name)
        follower.task = self._spawn(follower.run(), name=f"stack-logs-{container.id}-{id(self.conn):x}")
        self._followers[container.id] = follower

        def ended(_: object) -> None:
            # A removed or stopped container ends its follower, not the subscription.
            if follower.last_stamp is not None:
                self._last[container.id] = follower.last_stamp
            if self._followers.get(container.id) is follower:
                del self._followers[container.id]

        follower.task.add_done_callback(ended)

    async def _error(self, code: str, message: str) -> None:
        await self._put("stack.logs.error", {"stack": self.sub.stack, "error": code, "message": message})

    async def _put(self, message_type: str, data: dict[str, Any]) -> None:
        data.setdefault("timestamp", now())
        # In line with the stream's lines: waits for room, and while the session is suspended.
        await self.conn.outbox.put_log(dumps(message_type, data))
