"""Asynchronous lifecycle operations: accepted with 202, finished by an owned task, then announced.

Each operation gets a record that a client can poll (``GET /api/v1/operations/{id}``) and, when it
ends, a ``container.<action>.completed`` or ``.failed`` event on the bus. Operations on the same
container run one after another in the order they were accepted, so a stop that was accepted
before a start cannot overtake it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from runtimes import AlreadyInState, ContainerRef, ContainerRuntime, ContainerSummary, RuntimeFailure
from runtimes.kubeobjects import SCALABLE  # workload kinds a stop can scale to 0

from .events import EventBus, now
from .tasks import TaskGroup

log = logging.getLogger(__name__)

Action = Literal["start", "stop", "restart"]
ACTIONS: tuple[Action, ...] = ("start", "stop", "restart")

_PAST = {"start": "started", "stop": "stopped", "restart": "restarted"}


def accepted_message(action: Action) -> str:
    return f"Container {action} initiated"


def failure_code(action: Action) -> str:
    return f"CONTAINER_{action.upper()}_FAILED"


def refusal(container: ContainerSummary, action: Action, *, force: bool = False) -> str | None:
    """Why the gateway refuses an action on this container before accepting it, else None.

    A standalone pod has no controller to bring it back: stopping deletes it for good, and a
    restart recreates it from its spec; either only when the client says ``force``.
    """
    if container.controller is None or action == "start":
        return None
    kind = container.controller.partition("/")[0]
    if not container.controller and not force:
        return (
            f"Pod {container.name} has no controller: a {action} would delete it for good. "
            "Add ?force=true to do it anyway"
        )
    if container.controller and action == "stop" and kind not in SCALABLE:
        return (
            f"Pods of a {kind} cannot be stopped: only Deployments, StatefulSets and ReplicaSets scale to 0"
        )
    return None


@dataclass(eq=False)
class Operation:
    id: str
    container_id: str
    runtime: str
    namespace: str
    action: Action
    started_at: int
    state: Literal["pending", "completed", "failed"] = "pending"
    error: str | None = None
    message: str = ""
    finished_at: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _finished_mono: float | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "operationId": self.id,
            "containerId": self.container_id,
            "action": self.action,
            "state": self.state,
            "message": self.message,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
        }
        if self.error:
            body["error"] = self.error
        return body


class OperationTracker:
    def __init__(
        self, bus: EventBus, *, retention_seconds: float, max_records: int, concurrency: int = 5
    ) -> None:
        self._bus = bus
        # A start holds the daemon busy for 150-200 ms; hundreds at once only slow every other
        # call to it (the pre-checks that answer 202 among them), so only a few run at a time.
        self._running = asyncio.Semaphore(concurrency)
        self._retention = retention_seconds
        self._max_records = max_records
        self._records: dict[str, Operation] = {}
        self._tasks = TaskGroup()
        # The last task accepted per container, which the next operation on it waits for.
        self._tails: dict[tuple[str, str, str], asyncio.Task[None]] = {}

    def get(self, operation_id: str) -> Operation | None:
        return self._records.get(operation_id)

    def __len__(self) -> int:
        return len(self._records)

    def submit(
        self,
        runtime: ContainerRuntime,
        ref: ContainerRef,
        action: Action,
        *,
        container_id: str,
        timeout: int,
    ) -> Operation:
        """Record the operation and start its task; the caller answers 202 right away."""
        self._prune()
        op = Operation(
            id=uuid.uuid4().hex,
            container_id=container_id,
            runtime=runtime.name,
            namespace=ref.namespace,
            action=action,
            started_at=now(),
            message=accepted_message(action),
        )
        self._records[op.id] = op
        key = (runtime.name, ref.namespace, ref.id)
        previous = self._tails.get(key)
        task = self._tasks.spawn(
            self._run(op, runtime, ref, timeout, previous),
            name=f"operation-{action}-{container_id}-{op.id[:8]}",
        )
        self._tails[key] = task
        task.add_done_callback(lambda t: self._tails.pop(key, None) if self._tails.get(key) is t else None)
        return op

    async def _run(
        self,
        op: Operation,
        runtime: ContainerRuntime,
        ref: ContainerRef,
        timeout: int,
        previous: asyncio.Task[None] | None,
    ) -> None:
        if previous is not None:
            await asyncio.wait({previous})
        try:
            async with self._running:
                await self._perform(op.action, runtime, ref, timeout)
        except AlreadyInState:
            # Another client (or an earlier operation) got there first: the goal is reached.
            self._finish(op, None)
        except RuntimeFailure as exc:
            log.warning("%s of %s failed: %s", op.action, op.container_id, exc)
            self._finish(
                op,
                failure_code(op.action),
                message=f"Failed to {op.action} container: {exc.detail}" if exc.detail else None,
            )
        except Exception:
            log.exception("%s of %s failed unexpectedly", op.action, op.container_id)
            self._finish(op, failure_code(op.action))
        else:
            self._finish(op, None)

    @staticmethod
    async def _perform(action: Action, runtime: ContainerRuntime, ref: ContainerRef, timeout: int) -> None:
        if action == "start":
            await runtime.start(ref)
        elif action == "stop":
            await runtime.stop(ref, timeout=timeout)
        else:
            await runtime.restart(ref, timeout=timeout)

    def _finish(
        self, op: Operation, error: str | None, *, message: str | None = None, publish: bool = True
    ) -> None:
        op.finished_at = now()
        op._finished_mono = time.monotonic()
        if error is None:
            op.state = "completed"
            op.message = f"Container {_PAST[op.action]} successfully"
            data: dict[str, Any] = {
                "containerId": op.container_id,
                "status": _PAST[op.action],
                "message": op.message,
                "timestamp": op.finished_at,
                "operationId": op.id,
            }
            event_type = f"container.{op.action}.completed"
        else:
            op.state = "failed"
            op.error = error
            op.message = message or f"Failed to {op.action} container"
            data = {
                "containerId": op.container_id,
                "error": op.error,
                "message": op.message,
                "timestamp": op.finished_at,
                "operationId": op.id,
            }
            event_type = f"container.{op.action}.failed"
        if op.namespace:
            data["namespace"] = op.namespace  # a pod's name is unique only within its namespace
        op.done.set()
        if publish:
            self._bus.publish(event_type, data)

    def _prune(self) -> None:
        """Drop finished records past their retention, and the oldest finished ones over the cap."""
        cutoff = time.monotonic() - self._retention
        excess = len(self._records) + 1 - self._max_records
        for op_id, op in list(self._records.items()):
            if op._finished_mono is None:
                continue
            if excess > 0 or op._finished_mono < cutoff:
                del self._records[op_id]
                excess -= 1
            elif excess <= 0:
                break

    async def close(self) -> None:
        await self._tasks.close()
        # A task cancelled before (or while) it ran leaves its record pending: say why it ended.
        for op in self._records.values():
            if op.state == "pending":
                self._finish(
                    op,
                    failure_code(op.action),
                    message="The gateway shut down before the operation finished",
                    publish=False,
                )
