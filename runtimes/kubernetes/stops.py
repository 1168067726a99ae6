"""What the gateway's stops of workloads leave behind: the ledger of stops and the stopped mark.

A stop records on the workload (a label and an annotation) the replica count it took away, so a
start restores exactly that count and a workload scaled to 0 stays listed as one a client can
start again. The ledger lets the stops of several pods of one workload share its scale-down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import kubeobjects as ko
from ..errors import Conflict, NotFound, RuntimeFailure
from .client import ApiSession
from .paths import workload_path

log = logging.getLogger(__name__)

# How long a finished stop remembers the pods it removed, for stops of them still queued behind it.
_STOP_MEMORY_SECONDS = 600.0

StopKey = tuple[str, str, str]  # (namespace, kind, name) of the workload


@dataclass(eq=False)
class WorkloadStop:
    """One scale-down of a workload to 0, which the stops of any of its pods share."""

    result: asyncio.Future[None]
    pods: set[str] = field(default_factory=set)  # the pods it had when the stop began
    finished: float | None = None  # time.monotonic() at the end


class StopLedger:
    """Stops of workloads, under way or finished a short while ago, by (namespace, kind, name)."""

    def __init__(self) -> None:
        self._stops: dict[StopKey, WorkloadStop] = {}

    def get(self, key: StopKey) -> WorkloadStop | None:
        return self._stops.get(key)

    def under_way(self, key: StopKey) -> bool:
        stop = self._stops.get(key)
        return stop is not None and not stop.result.done()

    def begin(self, key: StopKey) -> WorkloadStop:
        """A new stop of the workload, replacing what the ledger had for it; stops finished long
        ago are forgotten first, so the ledger does not grow with every workload ever stopped."""
        self._forget_finished()
        stop = WorkloadStop(asyncio.get_running_loop().create_future())
        self._stops[key] = stop
        return stop

    def discard(self, key: StopKey, stop: WorkloadStop) -> None:
        """Forget ``stop`` (the workload started again: its pods are no longer stopped with it)."""
        if self._stops.get(key) is stop:
            del self._stops[key]

    def holding(self, namespace: str, pod: str) -> tuple[StopKey, WorkloadStop] | None:
        """The stop that removed (or is removing) ``pod``, if any."""
        return next(
            ((key, stop) for key, stop in self._stops.items() if key[0] == namespace and pod in stop.pods),
            None,
        )

    def _forget_finished(self) -> None:
        """Drop what finished stops remember after a while: by then no stop of their pods is queued."""
        cutoff = time.monotonic() - _STOP_MEMORY_SECONDS
        for key, stop in list(self._stops.items()):
            if stop.finished is not None and stop.finished < cutoff:
                del self._stops[key]


def marked(workload: Mapping[str, Any]) -> bool:
    """Whether the workload carries the mark of a stop through the gateway."""
    return ((workload.get("metadata") or {}).get("labels") or {}).get(ko.STOPPED_LABEL) == "true"


async def mark_stopped(session: ApiSession, path: str, replicas: int | None, *, version: str = "") -> None:
    """Record (or, with None, clear) the replica count a stop took away; with ``version``, only
    on that resourceVersion of the workload (else ``Conflict``)."""
    labels = {ko.STOPPED_LABEL: None if replicas is None else "true"}
    annotations = {ko.STOPPED_REPLICAS: None if replicas is None else str(replicas)}
    meta: dict[str, Any] = {"labels": labels, "annotations": annotations}
    if version:
        meta["resourceVersion"] = version
    await session.json("PATCH", path, body={"metadata": meta}, content_type="application/merge-patch+json")


async def clear_stale_mark(
    session: ApiSession, ledger: StopLedger, kind: str, workload: Mapping[str, Any]
) -> None:
    """Clear the stopped mark of a workload seen running again (someone scaled it by hand).

    Only on the version that was seen, and never during a stop of it, whose mark goes on before
    its scale-down: that mark is not stale. A failure leaves the mark for the next list.
    """
    meta = workload.get("metadata") or {}
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    if ledger.under_way((namespace, kind, name)):
        return
    try:
        await mark_stopped(
            session, workload_path(kind, namespace, name), None, version=str(meta.get("resourceVersion", ""))
        )
    except (Conflict, NotFound):
        pass  # changed or gone since it was listed: the next list sees it as it is
    except RuntimeFailure as exc:
        log.warning("could not clear the stopped mark of %s/%s in %s: %s", kind, name, namespace, exc)
