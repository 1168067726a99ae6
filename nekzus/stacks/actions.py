"""Stack actions as the jobs that do them: compose's arguments for each action, compose's progress
lines as ``stack.progress`` events, and the Engine-direct way for the stacks whose compose files
the gateway cannot read (only what needs no compose file: start, stop, restart, pause, unpause).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from runtimes import (
    AlreadyInState,
    ContainerRef,
    ContainerRuntime,
    ContainerSummary,
    NotInState,
    RuntimeFailure,
)

from ..linking import is_self
from ..operations.tracker import JobProgress, JobText
from ..params import DEFAULT_TIMEOUT
from .driver import ComposeDriver, ComposeError, ComposeUnavailable, Project
from .model import SERVICE, Stack
from .service import Stacks

ACTIONS = ("deploy", "start", "stop", "restart", "pause", "unpause", "pull", "down")
# What the Engine does alone, one container at a time; the others need the compose file.
ENGINE_ACTIONS = frozenset({"start", "stop", "restart", "pause", "unpause"})
# Actions that stop, freeze or recreate containers: never run on the gateway's own.
HALTING = frozenset({"deploy", "stop", "restart", "pause", "down", "delete"})
# Pull byte progress: at most one event per layer and step in this many seconds.
PROGRESS_INTERVAL = 0.25

_PAST = {
    "deploy": "deployed",
    "start": "started",
    "stop": "stopped",
    "restart": "restarted",
    "pause": "paused",
    "unpause": "unpaused",
    "pull": "pulled",
    "down": "taken down",
    "delete": "deleted",
}
_VERB = {"down": "take down"}
# The Engine-direct steps: what a container is doing, then what it has done.
_STEPS = {
    "start": ("starting", "started"),
    "stop": ("stopping", "stopped"),
    "restart": ("restarting", "restarted"),
    "pause": ("pausing", "paused"),
    "unpause": ("unpausing", "unpaused"),
}
# Compose's phrases whose first word does not say the step ("Pull complete" is not "pull").
_PHRASES = {
    "pull complete": "pulled",
    "download complete": "downloaded",
    "already exists": "exists",
    "verifying checksum": "verifying",
    "pulling fs layer": "pulling",
}
_WORD = re.compile(r"[A-Za-z]+")
_CONTAINER = "Container "
# Compose names other objects it makes the same way: "Volume p_data", "Network p_default".
_OBJECT = re.compile(r"(Volume|Network|Image) (\S+)")

Publish = Callable[[str, Mapping[str, Any]], None]
Work = Callable[[JobProgress], Awaitable[Mapping[str, Any] | None]]


def job_text(action: str) -> JobText:
    """How a stack job's record and events word ``action``: ``Stack deploy initiated``, ``Stack
    deployed successfully``, ``Failed to deploy stack``."""
    return JobText(f"Stack {action} initiated", _PAST[action], _VERB.get(action, action))


@dataclass(frozen=True, slots=True)
class StackAction:
    """One action as a client asked for it; ``services`` empty means every service, ``timeout``
    None leaves each service's own ``stop_grace_period`` in force; ``pull`` has a deploy pull
    every image first (a deploy hook's pull-and-deploy), in the same compose run."""

    action: str
    services: tuple[str, ...] = ()
    remove_orphans: bool = False
    volumes: bool = False
    timeout: int | None = None
    pull: bool = False

    def compose_args(self) -> list[str]:
        """The compose command line after the project's options. A deploy waits for every service
        to run (and be healthy, where it has a healthcheck), so a failing one fails the deploy with
        compose's sentence; a delete is a ``down`` that leaves no orphan behind."""
        services = list(self.services)
        timeout = ["--timeout", str(self.timeout)] if self.timeout is not None else []
        orphans = ["--remove-orphans"] if self.remove_orphans or self.action == "delete" else []
        volumes = ["--volumes"] if self.volumes else []
        if self.action == "deploy":
            pull = ["--pull", "always"] if self.pull else []
            return ["up", "--detach", "--wait", *pull, *orphans, *services]
        if self.action in ("stop", "restart"):
            return [self.action, *timeout, *services]
        if self.action in ("down", "delete"):
            return ["down", *volumes, *orphans, *services]
        return [self.action, *services]

    def chosen(self, stack: Stack) -> list[ContainerSummary]:
        """The containers of the services asked for (every one when none is named)."""
        return [c for c in stack.containers if not self.services or c.labels.get(SERVICE) in self.services]


def status_of(phrase: str) -> str:
    """The step a compose phrase names, as one lowercase word: ``Creating`` → creating, ``Pull
    complete`` → pulled, ``Skipped - Image is already being pulled by web`` → skipped."""
    known = _PHRASES.get(phrase.lower())
    if known is not None:
        return known
    word = _WORD.search(phrase)
    return word.group(0).lower() if word else "unknown"


def service_of(container: str, project: str, services: Iterable[str]) -> str | None:
    """The service of a container compose named ``<project>-<service>-<n>``; the longest service
    name that fits wins, so ``web-api-1`` is of ``web-api`` even beside a ``web``."""
    for service in sorted(services, key=len, reverse=True):
        prefix = f"{project}-{service}-"
        if container.startswith(prefix) and container[len(prefix) :].isdigit():
            return service
    return None


class ProgressEvents:
    """Compose's ``--progress json`` objects as ``stack.progress`` events: which service and
    container, the step as one word (``status``) and compose's own words (``text``), bytes where a
    pull gives them. Byte progress is thinned to one event per layer and step a ``interval``; every
    change of step is told."""

    def __init__(
        self,
        publish: Publish,
        stack: Stack,
        action: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        interval: float = PROGRESS_INTERVAL,
    ) -> None:
        self._publish = publish
        self._stack = stack.name
        self._action = action
        self._services = stack.services
        # A container compose names by a container_name of its own is found by its label.
        self._named = {c.name: c.labels.get(SERVICE, "") for c in stack.containers}
        self._clock = clock
        self._interval = interval
        self._last: dict[tuple[str, str], float] = {}

    def __call__(self, line: Mapping[str, Any]) -> None:
        data = self.event(line)
        if data is not None:
            self._publish("stack.progress", data)

    def event(self, line: Mapping[str, Any]) -> dict[str, Any] | None:
        """The event data of one compose object; None for one that tells nothing of the stack (a
        log line of compose's own) or a byte count that comes too soon after the last."""
        ident, text, detail = (line.get(k) for k in ("id", "text", "status"))
        if not isinstance(ident, str) or not ident:
            return None
        phrase = text if isinstance(text, str) and text else detail
        if not isinstance(phrase, str) or not phrase:
            return None
        said = f"{phrase} {detail}" if phrase is text and isinstance(detail, str) and detail else phrase
        data: dict[str, Any] = {
            "stack": self._stack,
            "action": self._action,
            "service": None,
            "container": None,
            "status": status_of(phrase),
            "text": said,
        }
        self._place(data, ident, line.get("parent_id"))
        current, total = line.get("current"), line.get("total")
        if isinstance(current, int) and isinstance(total, int) and total > 0:
            data.update(current=current, total=total)
            if current < total and self._too_soon((ident, phrase)):
                return None
        return data

    def _place(self, data: dict[str, Any], ident: str, parent: Any) -> None:
        """Which service (and container, layer or object) a compose id names."""
        if ident.startswith(_CONTAINER):
            name = ident[len(_CONTAINER) :]
            data["container"] = name
            data["service"] = self._named.get(name) or service_of(name, self._stack, self._services)
        elif isinstance(parent, str) and parent:
            data["service"] = parent if parent in self._services else None
            data["layer"] = ident
        elif ident in self._services:
            data["service"] = ident
        elif found := _OBJECT.fullmatch(ident):
            data["resource"] = found.group(1).lower()
            data["name"] = found.group(2)

    def _too_soon(self, key: tuple[str, str]) -> bool:
        moment = self._clock()
        last = self._last.get(key)
        if last is not None and moment - last < self._interval:
            return True
        self._last[key] = moment
        return False


def compose_failure(exc: ComposeError | ComposeUnavailable, stack: str, action: str) -> RuntimeFailure:
    """A compose failure as the tracker records it: ``STACK_<ACTION>_FAILED`` whose message ends
    with compose's own sentence (or the driver's, for a timeout or a missing binary)."""
    said = exc.message if isinstance(exc, ComposeError) else str(exc)
    return RuntimeFailure(f"compose {action} of stack {stack} failed: {said}", detail=said)


async def run_compose(
    driver: ComposeDriver, project: Project, request: StackAction, events: ProgressEvents
) -> None:
    try:
        await driver.run(project, request.compose_args(), on_progress=events)
    except (ComposeError, ComposeUnavailable) as exc:
        raise compose_failure(exc, project.name, request.action) from exc


async def run_on_engine(
    runtime: ContainerRuntime, stack: Stack, request: StackAction, publish: Publish, *, self_id: str
) -> None:
    """``request`` on each chosen container through the Engine, all at once as compose does. A
    container already in the state asked for, or one the action does not apply to (a pause of a
    stopped one, which compose passes over too), is no failure; any other refusal is, after every
    container has had its turn."""
    step, done = _STEPS[request.action]
    timeout = request.timeout if request.timeout is not None else DEFAULT_TIMEOUT

    def tell(c: ContainerSummary, status: str, text: str) -> None:
        publish(
            "stack.progress",
            {
                "stack": stack.name,
                "action": request.action,
                "service": c.labels.get(SERVICE) or None,
                "container": c.name,
                "status": status,
                "text": text,
            },
        )

    async def act(c: ContainerSummary) -> str | None:
        ref = ContainerRef(c.full_id)
        tell(c, step, step.capitalize())
        try:
            await _engine_call(runtime, request.action, ref, timeout)
        except AlreadyInState:
            pass
        except NotInState as exc:
            tell(c, "skipped", exc.detail or f"Not {done}")
            return None
        except RuntimeFailure as exc:
            said = exc.detail or f"the Engine could not {request.action} it"
            tell(c, "error", said)
            return f"{c.name}: {said}"
        tell(c, done, done.capitalize())
        return None

    # Security: the gateway's own container is never acted on, whatever the stack holds.
    chosen = [c for c in request.chosen(stack) if not is_self(c, self_id)]
    failures = [f for f in await asyncio.gather(*(act(c) for c in chosen)) if f is not None]
    if failures:
        said = "; ".join(failures)
        raise RuntimeFailure(f"{request.action} of stack {stack.name} failed: {said}", detail=said)


async def _engine_call(runtime: ContainerRuntime, action: str, ref: ContainerRef, timeout: int) -> None:
    if action == "start":
        await runtime.start(ref)
    elif action == "stop":
        await runtime.stop(ref, timeout=timeout)
    elif action == "restart":
        await runtime.restart(ref, timeout=timeout)
    elif action == "pause":
        await runtime.pause(ref)
    else:
        await runtime.unpause(ref)


def stack_job(
    stacks: Stacks, name: str, work: Callable[[JobProgress], Awaitable[None]], result: Mapping[str, Any]
) -> Work:
    """``work`` as a tracker job that answers ``result``, and frees the stack when it ends,
    however it ends."""

    async def job(progress: JobProgress) -> Mapping[str, Any]:
        try:
            await work(progress)
        finally:
            stacks.release(name)
        return result

    return job


def interrupted_reason(action: str) -> str:
    """An interrupted stack operation's message, told at the next start."""
    return f"The gateway restarted before the stack {action} finished"


def interrupted_state(name: str) -> str:
    return f"the stack's state is what compose left; GET /api/v1/stacks/{name} shows it"
