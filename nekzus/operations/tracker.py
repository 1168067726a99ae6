"""Asynchronous lifecycle operations: accepted with 202, finished by an owned task, then announced.

Each operation gets a record that a client can poll (``GET /api/v1/operations/{id}``) and, when it
ends, a ``container.<action>.completed`` or ``.failed`` event on the bus. Operations on the same
container run one after another in the order they were accepted, so a stop that was accepted
before a start cannot overtake it. Operations on different containers never wait for each other,
except that only a few starts run against the runtime at once.

With a store, records outlive the process: an operation's record is stored before its action
reaches the runtime, and its outcome before its event is published, so a gateway that crashed
finds every operation it may have acted on, and marks the unfinished ones as interrupted.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from runtimes import ACTIONS, Action, AlreadyInState, ContainerRef, ContainerRuntime, RuntimeFailure

from ..realtime.events import EventBus, now
from ..tasks import TaskGroup
from .store import OperationStore, StoredOperation

log = logging.getLogger(__name__)

_PAST = {"start": "started", "stop": "stopped", "restart": "restarted"}
INTERRUPTED = "OPERATION_INTERRUPTED"
INTERRUPTED_MESSAGE = (
    "The gateway restarted before the operation finished; the container's current state tells "
    "whether it took effect"
)


def accepted_message(action: Action) -> str:
    return f"Container {action} initiated"


def failure_code(action: Action) -> str:
    return f"CONTAINER_{action.upper()}_FAILED"


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

    def event(self) -> tuple[str, dict[str, Any]]:
        """The completion or failure event of a finished operation: its type and data."""
        data: dict[str, Any] = {"containerId": self.container_id}
        if self.state == "completed":
            data["status"] = _PAST[self.action]
        else:
            data["error"] = self.error
        data.update(message=self.message, timestamp=self.finished_at, operationId=self.id)
        if self.namespace:
            data["namespace"] = self.namespace  # a pod's name is unique only within its namespace
        return f"container.{self.action}.{self.state}", data

    def stored(self) -> StoredOperation:
        return StoredOperation(
            self.id,
            self.container_id,
            self.runtime,
            self.namespace,
            self.action,
            self.state,
            self.error,
            self.message,
            self.started_at,
            self.finished_at,
        )

    @classmethod
    def from_stored(cls, record: StoredOperation) -> Operation:
        op = cls(
            id=record.id,
            container_id=record.container_id,
            runtime=record.runtime,
            namespace=record.namespace,
            action=cast(Action, record.action),
            started_at=record.started_at,
            state="completed" if record.state == "completed" else "failed",
            error=record.error,
            message=record.message,
            finished_at=record.finished_at,
        )
        if record.finished_at is not None:
            # Retention counts on the monotonic clock: place the stored wall time on it.
            op._finished_mono = time.monotonic() - max(0.0, time.time() - record.finished_at)
            op.done.set()
        return op


class OperationTracker:
    def __init__(
        self,
        bus: EventBus,
        *,
        retention_seconds: float,
        max_records: int,
        concurrency: int = 5,
        store: OperationStore | None = None,
    ) -> None:
        self._bus = bus
        # Only starts are bounded, per runtime: a start keeps the daemon busy for 150-200 ms, and
        # hundreds at once only slow every other call to it (the pre-checks that answer 202 among
        # them). Waiting out a stop's grace period costs nothing, so stops never queue at all.
        self._concurrency = concurrency
        self._starts: dict[str, asyncio.Semaphore] = {}
        self._retention = retention_seconds
        self._max_records = max_records
        self._store = store
        self._records: dict[str, Operation] = {}
        self._interrupted: list[Operation] = []
        self._tasks = TaskGroup()
        # The last task accepted per container, which the next operation on it waits for.
        self._tails: dict[tuple[str, str, str], asyncio.Task[None]] = {}

    def get(self, operation_id: str) -> Operation | None:
        return self._records.get(operation_id)

    def __len__(self) -> int:
        return len(self._records)

    async def restore(self) -> None:
        """Load the stored records; those a dead gateway left unfinished become failed
        (``OPERATION_INTERRUPTED``), stored at once, and are announced by :meth:`announce_interrupted`."""
        if self._store is None:
            return
        loaded = await self._store.load(retention_seconds=self._retention, max_records=self._max_records)
        for record in loaded.finished:
            if record.action in ACTIONS:
                self._records[record.id] = Operation.from_stored(record)
        for record in loaded.orphaned:
            if record.action not in ACTIONS:
                continue
            op = Operation.from_stored(record)
            self._mark(op, INTERRUPTED, INTERRUPTED_MESSAGE)
            op.done.set()
            self._records[op.id] = op
            self._interrupted.append(op)
        if self._interrupted:
            await self._store.save_now(op.stored() for op in self._interrupted)
            log.warning("%d operations were cut short by the gateway's last exit", len(self._interrupted))

    def announce_interrupted(self) -> None:
        """Publish the failure of each operation a dead gateway left unfinished (once)."""
        interrupted, self._interrupted = self._interrupted, []
        for op in interrupted:
            self._bus.publish(*op.event())

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
        stored = self._store.save(op.stored()) if self._store is not None else None
        key = (runtime.name, ref.namespace, ref.id)
        previous = self._tails.get(key)
        task = self._tasks.spawn(
            self._run(op, runtime, ref, timeout, previous, stored),
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
        stored: asyncio.Future[None] | None,
    ) -> None:
        # Ordering: the record is on disk before the action reaches the runtime, so a crash can
        # never leave an acted-on container without a record to poll after the restart.
        if stored is not None:
            await stored
        if previous is not None:
            await asyncio.wait({previous})
        try:
            await self._perform(op.action, runtime, ref, timeout)
        except AlreadyInState:
            # Another client (or an earlier operation) got there first: the goal is reached.
            await self._finish(op, None)
        except RuntimeFailure as exc:
            log.warning("%s of %s failed: %s", op.action, op.container_id, exc)
            await self._finish(
                op,
                failure_code(op.action),
                message=f"Failed to {op.action} container: {exc.detail}" if exc.detail else None,
            )
        except Exception:
            log.exception("%s of %s failed unexpectedly", op.action, op.container_id)
            await self._finish(op, failure_code(op.action))
        else:
            await self._finish(op, None)

    async def _perform(
        self, action: Action, runtime: ContainerRuntime, ref: ContainerRef, timeout: int
    ) -> None:
        if action == "start":
            async with self._starts.setdefault(runtime.name, asyncio.Semaphore(self._concurrency)):
                await runtime.start(ref)
        elif action == "stop":
            await runtime.stop(ref, timeout=timeout)
        else:
            # Not bounded like a start: the daemon waits out the grace period inside this one call,
            # so a bounded restart would hold a slot for all of it, and slow restarts would again
            # hold up the actions of other containers (a restart-all would take one grace period
            # per slot-full of containers instead of one in all).
            await runtime.restart(ref, timeout=timeout)

    def _mark(self, op: Operation, error: str | None, message: str | None = None) -> None:
        op.finished_at = now()
        op._finished_mono = time.monotonic()
        if error is None:
            op.state = "completed"
            op.message = f"Container {_PAST[op.action]} successfully"
        else:
            op.state = "failed"
            op.error = error
            op.message = message or f"Failed to {op.action} container"

    async def _finish(self, op: Operation, error: str | None, *, message: str | None = None) -> None:
        self._mark(op, error, message)
        # Ordering: the outcome is stored before it is announced, so a client that hears of it
        # and polls after a crash reads the same outcome.
        if self._store is not None:
            await self._store.save(op.stored())
        op.done.set()
        self._bus.publish(*op.event())

    def _prune(self) -> None:
        """Drop finished records past their retention, and the oldest finished ones over the cap."""
        cutoff = time.monotonic() - self._retention
        excess = len(self._records) + 1 - self._max_records
        dropped: list[str] = []
        for op_id, op in list(self._records.items()):
            if op._finished_mono is None:
                continue
            if excess > 0 or op._finished_mono < cutoff:
                del self._records[op_id]
                dropped.append(op_id)
                excess -= 1
            elif excess <= 0:
                break
        if self._store is not None:
            self._store.delete(dropped)

    async def close(self) -> None:
        await self._tasks.close()
        # A task cancelled before (or while) it ran leaves its record pending: say why it ended.
        for op in self._records.values():
            if op.state == "pending":
                self._mark(op, failure_code(op.action), "The gateway shut down before the operation finished")
                if self._store is not None:
                    self._store.save(op.stored())
            op.done.set()
