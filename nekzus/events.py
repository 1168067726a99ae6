"""The in-process event bus: operation results and state changes for the WebSocket hub.

Publishing never awaits. Each subscriber has a bounded queue; a subscriber that falls so far
behind that its queue is full is cut off (``overflowed``) instead of stalling the publisher or
growing without bound. Its owner decides what to do (the hub closes that client with 1013).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    data: Mapping[str, Any]


def now() -> int:
    return int(time.time())


@dataclass(eq=False)
class Subscription:
    bus: EventBus
    queue: asyncio.Queue[Event | None] = field(repr=False)
    overflowed: bool = False

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            event = await self.queue.get()
            if event is None:
                return
            yield event

    async def get(self) -> Event | None:
        """The next event, or None once the subscription has ended."""
        return await self.queue.get()

    def close(self) -> None:
        self.bus.unsubscribe(self)


Listener = Callable[[Event], None]


class EventBus:
    def __init__(self, *, queue_size: int = 1024) -> None:
        self._queue_size = queue_size
        self._subscribers: set[Subscription] = set()
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with every event, synchronously; it must not block or await."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def subscribe(self) -> Subscription:
        # One slot more than the limit is reserved for the end marker.
        sub = Subscription(self, asyncio.Queue(maxsize=self._queue_size + 1))
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subscribers:
            self._subscribers.discard(sub)
            sub.queue.put_nowait(None)

    def publish(self, type_: str, data: Mapping[str, Any]) -> Event:
        event = Event(type_, data)
        for listener in self._listeners:
            listener(event)
        for sub in list(self._subscribers):
            if sub.queue.qsize() >= self._queue_size:
                sub.overflowed = True
                log.warning("event subscriber fell %d events behind; cutting it off", self._queue_size)
                self._subscribers.discard(sub)
                sub.queue.put_nowait(None)
                continue
            sub.queue.put_nowait(event)
        return event

    def close(self) -> None:
        for sub in list(self._subscribers):
            self.unsubscribe(sub)
