"""Stop and start of workloads by their replica count.

Stop scales the owning Deployment / StatefulSet / ReplicaSet to 0 through its scale subresource
and records the replica count it had in an annotation (:mod:`.stops`); start restores exactly that
count. Every step may be made again after an apiserver failure that passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any

from .. import kubeobjects as ko
from ..errors import AlreadyStopped, Forbidden, NotFound, RuntimeFailure
from .client import ApiSession, OutOfTime, until
from .paths import workload_path
from .queries import Queries
from .stops import StopLedger, mark_stopped, marked


class WorkloadScaler:
    """Scale-downs to 0 and scale-ups back, with the stops under way shared through the ledger."""

    def __init__(self, session: ApiSession, queries: Queries, ledger: StopLedger) -> None:
        self._session = session
        self._queries = queries
        self._ledger = ledger

    async def scale_up(self, kind: str, namespace: str, name: str) -> None:
        """Give a stopped workload back the replica count its stop recorded, and clear the mark.

        A stop of the same workload still under way ends first (its own operation reports how), so
        it cannot undo the start. Every step may be made again: a workload found scaled up already
        (by an earlier try whose answer was lost, or by hand) keeps its count, loses a mark it still
        carries, and the start completes when that many replicas are ready.
        """
        key = (namespace, kind, name)
        stopping = self._ledger.get(key)
        if stopping is not None:
            await asyncio.wait({stopping.result})
            self._ledger.discard(key, stopping)  # started again: its pods are no longer stopped with it
        session = self._session
        path = workload_path(kind, namespace, name)
        obj = await session.retry(lambda: session.json("GET", path), f"{kind}/{name} to be read")
        replicas = int((obj.get("spec") or {}).get("replicas") or 0)
        target = replicas
        if replicas == 0:
            recorded = ((obj.get("metadata") or {}).get("annotations") or {}).get(ko.STOPPED_REPLICAS, "")
            target = int(recorded) if recorded.isdigit() and int(recorded) > 0 else 1
            await session.retry(
                lambda: session.json(
                    "PATCH",
                    f"{path}/scale",
                    body={"spec": {"replicas": target}},
                    content_type="application/merge-patch+json",
                ),
                f"{kind}/{name} to be scaled to {target}",
            )
        if replicas == 0 or marked(obj):
            await session.retry(
                lambda: mark_stopped(session, path, None), f"{kind}/{name} to lose its stopped mark"
            )
        await session.wait(
            path, lambda o: ready_replicas(o) >= target, f"{kind}/{name} to have {target} ready replicas"
        )

    async def stop(self, kind: str, namespace: str, name: str, timeout: int) -> None:
        """Scale the workload to 0, or join its scale-down already under way: stops of several of
        its pods (a batch, or a second stop of one pod) are one scale-down whose outcome each reports."""
        key = (namespace, kind, name)
        current = self._ledger.get(key)
        if current is not None and not current.result.done():
            await asyncio.shield(current.result)  # a joiner cancelled leaves the others' stop alone
            return
        stop = self._ledger.begin(key)
        try:
            await self._scale_down(kind, namespace, name, timeout, stop.pods)
        except Exception as exc:
            stop.result.set_exception(exc)
        except asyncio.CancelledError:
            stop.result.cancel()
            raise
        else:
            stop.result.set_result(None)
        finally:
            stop.finished = time.monotonic()
        await stop.result

    async def _scale_down(self, kind: str, namespace: str, name: str, timeout: int, pods: set[str]) -> None:
        """Scale to 0 and wait until the pods are gone; ``pods`` gets the names of those it stops.

        Every step may be made again after an error that passes: a workload already at 0 that
        carries the mark was scaled by an earlier try (or an earlier stop), and only the wait is left.
        """
        session, queries = self._session, self._queries
        path = workload_path(kind, namespace, name)
        obj = await session.retry(lambda: session.json("GET", path), f"{kind}/{name} to be read")
        try:
            listed = await session.retry(
                lambda: queries.pods_of(obj), f"the pods of {kind}/{name} to be listed"
            )
        except Forbidden:
            listed = []  # the wait for no pods lists them too, and reports the refusal after the scale
        pods.update(str((p.get("metadata") or {}).get("name", "")) for p in listed)
        replicas = int((obj.get("spec") or {}).get("replicas") or 0)
        if replicas == 0 and not marked(obj):
            raise AlreadyStopped(f"{kind}/{name} is already scaled to 0")
        if replicas > 0:
            # The count goes on record before the scale-down, so a crash in between loses nothing.
            await session.retry(lambda: mark_stopped(session, path, replicas), f"{kind}/{name} to be marked")
            try:
                await session.retry(
                    lambda: session.json(
                        "PATCH",
                        f"{path}/scale",
                        body={"spec": {"replicas": 0}},
                        content_type="application/merge-patch+json",
                    ),
                    f"{kind}/{name} to be scaled to 0",
                )
            except OutOfTime:
                raise  # the scale may have been made: the mark must stay with it
            except RuntimeFailure:
                # Refused: not stopped after all, and a workload marked as stopped would be listed as one.
                with contextlib.suppress(RuntimeFailure):
                    await mark_stopped(session, path, None)
                raise

        async def no_pods() -> bool:
            return not await queries.pods_of(obj)

        # Until the pods are gone, not just terminating: they may hold on for their grace period.
        await until(no_pods, f"{kind}/{name} to have no pods", session.ready_timeout + timeout)

    async def stopped_with_workload(self, namespace: str, pod: str, missing: NotFound) -> None:
        """A stop of a pod that is gone: done if a stop of its workload removed it, else ``missing``.

        That stop may still be under way (a sibling's, in the same batch): this one reports its outcome.
        """
        found = self._ledger.holding(namespace, pod)
        if found is None:
            raise missing
        (_, kind, name), stop = found
        if not stop.result.done():
            await asyncio.shield(stop.result)
            return
        session = self._session
        path = workload_path(kind, namespace, name)
        obj = await session.retry(lambda: session.json("GET", path), f"{kind}/{name} to be read")
        if (obj.get("spec") or {}).get("replicas") or not marked(obj):
            raise missing


def ready_replicas(workload: Mapping[str, Any]) -> int:
    return int((workload.get("status") or {}).get("readyReplicas") or 0)
