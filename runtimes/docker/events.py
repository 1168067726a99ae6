"""The Engine's event stream, read down to the container changes the gateway tracks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping

from ..base import ContainerState, RuntimeEvent
from .paths import short_id
from .session import ENGINE_ERRORS, EngineSession

# Engine events that change a container's state, and the state they leave it in.
_EVENT_STATES: Mapping[str, ContainerState | None] = {
    "create": ContainerState.CREATED,
    "start": ContainerState.RUNNING,
    "restart": ContainerState.RUNNING,
    "unpause": ContainerState.RUNNING,
    "pause": ContainerState.PAUSED,
    "die": ContainerState.EXITED,
    "destroy": None,
}
_EVENT_NON_LABELS = frozenset({"image", "name", "exitCode", "signal", "execDuration", "oldName"})
# Events that change what a container's list row shows but not its state.
_EVENT_REFRESH = frozenset({"rename"})
# Events that tell of something that happened to a container without changing its state: the
# kernel killed one of its processes for want of memory (its "die" follows if it was the main one).
_EVENT_NOTICES = frozenset({"oom"})


async def stream_events(
    session: EngineSession, runtime: str, *, since: int | None
) -> AsyncIterator[RuntimeEvent]:
    # Only state changes and healthcheck verdicts: not the exec_* events every healthcheck makes.
    wanted = {
        "type": ["container"],
        "event": [*_EVENT_STATES, *_EVENT_REFRESH, *_EVENT_NOTICES, "health_status"],
    }
    params = {"filters": json.dumps(wanted)}
    if since is not None:
        params["since"] = str(since)
    try:
        async with session.stream("events", params) as response:
            async for line in response.content:
                event = event_from_line(line, runtime)
                if event is not None:
                    yield event
    except ENGINE_ERRORS as exc:
        session.fail(exc, "GET events")


def event_from_line(line: bytes, runtime: str) -> RuntimeEvent | None:
    """The event of one line of the stream; None for one the gateway does not track, or junk."""
    try:
        raw = json.loads(line)
    except ValueError:
        return None
    action = str(raw.get("Action") or raw.get("status") or "")
    health = None
    state: ContainerState | None
    if action.startswith("health_status:"):
        # "health_status: healthy" — a healthcheck result of a running container.
        health = action.partition(":")[2].strip()
        action, state = "health_status", ContainerState.RUNNING
    elif action in _EVENT_STATES:
        state = _EVENT_STATES[action]
    elif action in _EVENT_REFRESH or action in _EVENT_NOTICES:
        state = None
    else:
        return None
    actor = raw.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    full_id = str(actor.get("ID") or raw.get("id") or "")
    exit_code = None
    if action == "die":
        try:
            exit_code = int(attributes["exitCode"])
        except (KeyError, TypeError, ValueError):
            exit_code = None
    return RuntimeEvent(
        container_id=short_id(full_id),
        name=str(attributes.get("name", "")),
        action=action,
        state=state,
        labels={k: v for k, v in attributes.items() if k not in _EVENT_NON_LABELS},
        runtime=runtime,
        namespace="",
        timestamp=int(raw.get("time", 0)),
        health=health,
        time_nano=int(raw.get("timeNano", 0)),
        exit_code=exit_code,
    )
