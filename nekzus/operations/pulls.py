"""A pull's progress as ``image.pull.progress`` events, at a pace a phone can draw.

An Engine reports each layer's download many times a second; every WebSocket reader would get all
of it. :func:`pull_events` passes on at most :data:`MAX_PER_SECOND` states per operation, always
the newest, and never loses the last: a state held back is published when its turn comes, and a
final state (complete, failed) at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from runtimes.engine.images import PullProgress

from ..realtime.events import now
from .tracker import JobProgress

PROGRESS_EVENT = "image.pull.progress"
MAX_PER_SECOND = 4
_INTERVAL = 1.0 / MAX_PER_SECOND


def progress_data(state: PullProgress, reference: str) -> dict[str, Any]:
    """The event's data (JobProgress adds the ``operationId``); every server message has a
    ``timestamp``."""
    return {
        "image": reference,
        "status": state.status,
        "layers": {"total": state.layers_total, "done": state.layers_done},
        "bytes": {"done": state.bytes_done, "total": state.bytes_total},
        "timestamp": now(),
    }


class _Throttle:
    """Publishes a state at once when the last one went out at least an interval ago; else keeps
    it, replacing any older kept one, and publishes it when the interval is over."""

    def __init__(self, progress: JobProgress, reference: str) -> None:
        self._progress = progress
        self._reference = reference
        self._loop = asyncio.get_running_loop()
        self._last = float("-inf")
        self._held: PullProgress | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def __call__(self, state: PullProgress) -> None:
        if self._closed:
            return
        if state.final:
            self._closed = True
            self._publish(state)
            return
        wait = self._last + _INTERVAL - self._loop.time()
        if wait <= 0:
            self._publish(state)
            return
        self._held = state
        if self._timer is None:
            self._timer = self._loop.call_later(wait, self._release)

    def _release(self) -> None:
        self._timer = None
        held, self._held = self._held, None
        if held is not None and not self._closed:
            self._publish(held)

    def _publish(self, state: PullProgress) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._held = None
        self._last = self._loop.time()
        self._progress.publish(PROGRESS_EVENT, progress_data(state, self._reference))


def pull_events(progress: JobProgress, reference: str) -> Callable[[PullProgress], None]:
    """The ``on_progress`` of a pull run as (part of) the job ``progress``: its states become
    ``image.pull.progress`` events about ``reference``, at most four a second."""
    return _Throttle(progress, reference)
