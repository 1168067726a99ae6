"""The in-process event bus: operation results and state changes for the state models and the hub.

Publishing never awaits: each listener is called synchronously and must not block. Bounding what a
slow client is owed is the hub's business (its per-connection outbox), not the bus's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    data: Mapping[str, Any]


def now() -> int:
    return int(time.time())


Listener = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with every event, synchronously; it must not block or await."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def publish(self, type_: str, data: Mapping[str, Any]) -> Event:
        event = Event(type_, data)
        for listener in self._listeners:
            listener(event)
        return event
