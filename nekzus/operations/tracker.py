"""Asynchronous lifecycle operations: accepted with 202, finished by an owned task, then announced.

Each operation gets a record that a client can poll (``GET /api/v1/operations/{id}``) and, when it
ends, a ``<resource>.<action>.completed`` or ``.failed`` event on the bus. Lifecycle actions
(:meth:`OperationTracker.submit`) are one runtime call each; any other long task (a removal, a
creation, an image pull) is a *job* (:meth:`OperationTracker.submit_job`), whose work may publish
progress events along the way. Operations on the same
container run one after another in the order they were accepted, so a stop that was accepted
before a start cannot overtake it. Operations on different containers never wait for each other,
except that only a few starts run against the runtime at once.

With a store, records outlive the process: an operation's record is stored before its action
reaches the runtime, and its outcome before its event is published, so a gateway that crashed
finds every operation it may have acted on, and marks the unfinished ones as interrupted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from runtimes import Action, AlreadyInState, ContainerRef, ContainerRuntime, RuntimeFailure

from ..errors import from_runtime
from ..realtime.events import EventBus, now
from ..tasks import TaskGroup
from .store import OperationStore, StoredOperation

log = logging.getLogger(__name__)

_PAST = {
    "start": "started",
    "stop": "stopped",
    "restart": "restarted",
    "pause": "paused",
    "unpause": "unpaused",
}
# Container actions that end (or may end) a container's run: an exit during one was asked for.
STOPPING_ACTIONS = frozenset({"stop", "restart", "remove", "update", "pause"})
INTERRUPTED = "OPERATION_INTERRUPTED"
INTERRUPTED_MESSAGE = (
    "The gateway restarted before the operation finished; the container's current state tells "
    "whether it took effect"
)


def accepted_message(action: Action) -> str:
    return f"Container {action} initiated"


def failure_code(action: str, resource: str = "container") -> str:
    return f"{resource.upper()}_{action.upper()}_FAILED"


def _result(stored: str) -> dict[str, Any]:
    """A stored job result; one that cannot be read (a damaged row) is left out, not fatal."""
    try:
        result = json.loads(stored)
    except ValueError:
        return {}
    return result if isinstance(result, dict) else {}


@dataclass(frozen=True, slots=True)
class JobText:
    """How a job's record and events word it: ``Container removal initiated``, ``Container removed
    successfully`` (``past``, also the completion event's ``status``), ``Failed to remove container``."""

    accepted: str
    past: str
    verb: str


@dataclass(eq=False)
class Operation:
    id: str
    # The object acted on: a container's id, an image's reference, a volume's name.
    container_id: str
    runtime: str
    namespace: str
    action: str
    started_at: int
    state: Literal["pending", "completed", "failed"] = "pending"
    error: str | None = None
    message: str = ""
    finished_at: int | None = None
    resource: str = "container"
    # What a job's work answered (such as a created container's id), in the record and the event.
    result: Mapping[str, Any] = field(default_factory=dict)
    text: JobText | None = field(default=None, repr=False)
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _finished_mono: float | None = field(default=None, repr=False)

    def _subject(self) -> dict[str, Any]:
        if self.resource == "container":
            return {"containerId": self.container_id}
        return {"resource": self.resource, "target": self.container_id}

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "operationId": self.id,
            **self._subject(),
            "action": self.action,
            "state": self.state,
            "message": self.message,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
        }
        if self.error:
            body["error"] = self.error
        body.update(self.result)
        return body

    def event(self) -> tuple[str, dict[str, Any]]:
        """The completion or failure event of a finished operation: its type and data."""
        data: dict[str, Any] = self._subject()
        if self.state == "completed":
            data["status"] = self.text.past if self.text is not None else _PAST.get(self.action, self.action)
        else:
            data["error"] = self.error
        data.update(message=self.message, timestamp=self.finished_at, operationId=self.id)
        if self.namespace:
            data["namespace"] = self.namespace  # a pod's name is unique only within its namespace
        data.update(self.result)
        return f"{self.resource}.{self.action}.{self.state}", data

    def stored(self) -> StoredOperation:
        return StoredOperation(
            self.id,
            self.container_id,
            self.runtime,
            self.namespace,
            self.action if self.resource == "container" else f"{self.resource}.{self.action}",
            self.state,
            self.error,
            self.message,
            self.started_at,
            self.finished_at,
            json.dumps(dict(self.result)),
        )

    @classmethod
    def from_stored(cls, record: StoredOperation) -> Operation:
        resource, _, action = record.action.rpartition(".")
        op = cls(
            id=record.id,
            container_id=record.container_id,
            runtime=record.runtime,
            namespace=record.namespace,
            action=action,
            resource=resource or "container",
            started_at=record.started_at,
            state="completed" if record.state == "completed" else "failed",
            error=record.error,
            message=record.message,
            finished_at=record.finished_at,
            result=_result(record.result),
        )
        if record.finished_at is not None:
            # Retention counts on the monotonic clock: place the stored wall time on it.
            op._finished_mono = time.monotonic() - max(0.0, time.time() - record.finished_at)
            op.done.set()
        return op


class JobProgress:
    """What a job's work publishes on the way: events that carry the job's ``operationId``."""

    def __init__(self, bus: EventBus, op: Operation) -> None:
        self._bus = bus
        self._op = op

    @property
    def operation_id(self) -> str:
        return self._op.id

    def publish(self, event_type: str, data: Mapping[str, Any]) -> None:
        self._bus.publish(event_type, {**data, "operationId": self._op.id})


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

    def submit_job(
        self,
        *,
        runtime: str,
        resource: str,
        action: str,
        target: str,
        work: Callable[[JobProgress], Awaitable[Mapping[str, Any] | None]],
        text: JobText,
        namespace: str = "",
        key: str | None = None,
    ) -> Operation:
        """Record a job on ``target`` (a ``resource`` of ``runtime``) and start ``work``; the caller
        answers 202 right away. Jobs and actions with the same ``key`` (default: ``target``) run
        one after another, in the order they were accepted.

        ``work`` publishes progress through the :class:`JobProgress` it is given, and answers the
        fields its completion adds to the record and the event. A :class:`RuntimeFailure` it
        raises fails the job with the error's own code where it has one (``IMAGE_IN_USE``), else
        ``<RESOURCE>_<ACTION>_FAILED``.
        """
        self._prune()
        op = Operation(
            id=uuid.uuid4().hex,
            container_id=target,
            runtime=runtime,
            namespace=namespace,
            action=action,
            resource=resource,
            started_at=now(),
            message=text.accepted,
            text=text,
        )
        self._records[op.id] = op
        stored = self._store.save(op.stored()) if self._store is not None else None
        return self._spawn(op, (runtime, namespace, key or target), lambda: self._run_job(op, work, stored))

    def get(self, operation_id: str) -> Operation | None:
        return self._records.get(operation_id)

    def __len__(self) -> int:
        return len(self._records)

    def pending(self) -> list[Operation]:
        """The operations not finished yet, oldest first."""
        return [op for op in self._records.values() if op.state == "pending"]

    def started_since(self, since: int) -> list[Operation]:
        """The kept records of operations started at or after ``since`` (Unix seconds), newest
        first: what a client back from sleep reads to learn how its actions ended."""
        chosen = [op for op in reversed(self._records.values()) if op.started_at >= since]
        chosen.sort(key=lambda op: op.started_at, reverse=True)
        return chosen

    def acted_on(
        self, runtime: str, namespace: str, container_id: str, stack: str | None, *, within: float
    ) -> bool:
        """Whether the gateway was asked to stop, restart, remove or replace the container, or to act
        on its stack (compose project), in an operation running now or ended less than ``within``
        seconds ago: an exit it explains is no failure."""
        horizon = time.monotonic() - within
        for op in self._records.values():
            if op.runtime != runtime or (op._finished_mono is not None and op._finished_mono < horizon):
                continue
            if op.resource == "container" and op.action in STOPPING_ACTIONS:
                if (op.namespace, op.container_id) == (namespace, container_id):
                    return True
            elif op.resource == "stack" and stack is not None and op.container_id == stack:
                return True
        return False

    async def restore(self) -> None:
        """Load the stored records; those a dead gateway left unfinished become failed
        (``OPERATION_INTERRUPTED``), stored at once, and are announced by :meth:`announce_interrupted`."""
        if self._store is None:
            return
        loaded = await self._store.load(retention_seconds=self._retention, max_records=self._max_records)
        for record in loaded.finished:
            self._records[record.id] = Operation.from_stored(record)
        for record in loaded.orphaned:
            op = Operation.from_stored(record)
            self._mark(op, INTERRUPTED, INTERRUPTED_MESSAGE)
            op.done.set()
            self._records[op.id] = op
            self._interrupted.append(op)
        if self._interrupted:
            await self._store.save_now(op.stored() for op in self._interrupted)
            log.warning("%d operations were cut short by the gateway's last exit", len(self._interrupted))

    @property
    def interrupted(self) -> list[Operation]:
        """The operations a dead gateway left unfinished, until they are announced."""
        return list(self._interrupted)

    async def explain(self, op: Operation, what_was_done: str, *, reason: str = INTERRUPTED_MESSAGE) -> None:
        """Add to an interrupted operation's message what was done since about what it left;
        ``reason`` replaces the first half where the container's wording does not fit."""
        op.message = f"{reason}; {what_was_done}"
        if self._store is not None:
            await self._store.save(op.stored())

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
        return self._spawn(op, key, lambda: self._run(op, runtime, ref, action, timeout, stored))

    def _spawn(
        self, op: Operation, key: tuple[str, str, str], run: Callable[[], Awaitable[None]]
    ) -> Operation:
        """Start ``run`` once every operation accepted before it under ``key`` has finished."""
        previous = self._tails.get(key)
        task = self._tasks.spawn(
            self._after(previous, run),
            name=f"operation-{op.resource}-{op.action}-{op.container_id}-{op.id[:8]}",
        )
        self._tails[key] = task
        task.add_done_callback(lambda t: self._tails.pop(key, None) if self._tails.get(key) is t else None)
        return op

    @staticmethod
    async def _after(previous: asyncio.Task[None] | None, run: Callable[[], Awaitable[None]]) -> None:
        if previous is not None:
            await asyncio.wait({previous})
        await run()

    async def _run_job(
        self,
        op: Operation,
        work: Callable[[JobProgress], Awaitable[Mapping[str, Any] | None]],
        stored: asyncio.Future[None] | None,
    ) -> None:
        if stored is not None:
            await stored
        assert op.text is not None
        try:
            op.result = dict(await work(JobProgress(self._bus, op)) or {})
        except RuntimeFailure as exc:
            log.warning("%s %s of %s failed: %s", op.resource, op.action, op.container_id, exc)
            error = from_runtime(
                exc,
                fallback=failure_code(op.action, op.resource),
                fallback_message=f"Failed to {op.text.verb} {op.resource}",
                container_id=op.container_id,
            )
            await self._finish(op, error.code, message=error.message)
        except Exception:
            log.exception("%s %s of %s failed unexpectedly", op.resource, op.action, op.container_id)
            await self._finish(op, failure_code(op.action, op.resource))
        else:
            await self._finish(op, None)

    async def _run(
        self,
        op: Operation,
        runtime: ContainerRuntime,
        ref: ContainerRef,
        action: Action,
        timeout: int,
        stored: asyncio.Future[None] | None,
    ) -> None:
        # Ordering: the record is on disk before the action reaches the runtime, so a crash can
        # never leave an acted-on container without a record to poll after the restart.
        if stored is not None:
            await stored
        try:
            await self._perform(action, runtime, ref, timeout)
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
        elif action == "pause":
            # A freeze or a thaw is one cgroup write: nothing to bound, and no grace period.
            await runtime.pause(ref)
        elif action == "unpause":
            await runtime.unpause(ref)
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
            past = op.text.past if op.text is not None else _PAST.get(op.action, op.action)
            op.message = f"{op.resource.capitalize()} {past} successfully"
        else:
            op.state = "failed"
            op.error = error
            verb = op.text.verb if op.text is not None else op.action
            op.message = message or f"Failed to {verb} {op.resource}"

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
                self._mark(
                    op,
                    failure_code(op.action, op.resource),
                    "The gateway shut down before the operation finished",
                )
                if self._store is not None:
                    self._store.save(op.stored())
            op.done.set()
