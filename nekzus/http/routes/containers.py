"""List, inspect, lifecycle actions, removal and stats of single containers."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from aiohttp import web

from runtimes import (
    Action,
    ContainerRef,
    ContainerRuntime,
    ContainerState,
    ContainerSummary,
    RuntimeFailure,
)
from runtimes.engine.updates import ImageUpdates

from ...errors import ApiError, invalid_request
from ...keys import LINKER, OPERATIONS, REGISTRY, SELF_CONTAINER_ID, STATE
from ...linking import is_self
from ...operations.tracker import JobProgress, JobText, accepted_message, failure_code
from ...params import (
    LabelFilter,
    bool_query,
    choices_query,
    container_id,
    int_query,
    json_fields,
    label_filters,
    labels_match,
    name_filter,
    namespace_value,
    sort_query,
    timeout_of,
)
from ...realtime.events import now
from ...realtime.state import RenderedList
from ...realtime.statsfeed import Target
from ...realtime.statshistory import STATS_HISTORY
from ...realtime.updates import UPDATES
from ...security.auth import PRINCIPAL, READ_CONTAINERS, WRITE_CONTAINERS, WRITE_ENGINE, requires
from ...security.ratelimit import rate_pool
from ..idempotent import idempotent
from ..pages import page_of
from .common import (
    accepted,
    current_state,
    list_from,
    managed,
    managed_in,
    runtime_error,
    runtime_for,
    runtimes_for,
    stats_json,
    summary_json,
)

log = logging.getLogger(__name__)

_T = TypeVar("_T")

MAX_HISTORY_MINUTES = 1440  # the most stats.history_minutes may keep

REMOVAL = JobText(accepted="Container removal initiated", past="removed", verb="remove")


@requires(READ_CONTAINERS)
@rate_pool("containers")
async def list_containers(request: web.Request) -> web.Response:
    runtimes = runtimes_for(request)
    show_all = bool_query(request, "all")
    namespace = namespace_value(request)
    state = request.app[STATE]
    # Served from warm models only, an answer is the same for everyone within a second (status
    # lines count seconds) until a model changes: render it once. The query as sent is part of
    # the key: filters and pages change the answer, and the Link header repeats the query. Only
    # a valid query's answer is kept, so a hit needs no second validation.
    versions = state.warm_versions(runtimes)
    updates = request.app[UPDATES]
    key = (
        tuple(rt.name for rt in runtimes),
        namespace,
        show_all,
        request.query_string,
        versions,
        updates.version,
    )
    second = int(time.time())
    if versions is not None:
        cached = state.rendered.get(key, second)
        if cached is not None:
            return _list_response(cached)
    chosen = list_filter(request)
    containers = await list_from(runtimes, namespace, state.models)
    if not show_all:
        containers = managed(request, containers)
    page, headers = page_of(request, chosen.apply(containers))
    body = json.dumps([summary_json(c, updates.of(c.runtime, c.full_id)) for c in page]).encode()
    rendered = RenderedList(body, headers)
    if versions is not None:
        state.rendered.put(key, second, rendered)
    return _list_response(rendered)


def _list_response(rendered: RenderedList) -> web.Response:
    return web.Response(
        body=rendered.body, headers=rendered.headers, content_type="application/json", charset="utf-8"
    )


# What a ?state= value matches. "stopped" is what a user means by it: not running and not about to
# run (Docker's exited and created containers, a failed pod, as well as the stopped state itself).
_STATE_FILTERS: Mapping[str, frozenset[ContainerState]] = {
    **{s.value: frozenset({s}) for s in ContainerState},
    ContainerState.STOPPED.value: frozenset(
        {ContainerState.STOPPED, ContainerState.EXITED, ContainerState.CREATED, ContainerState.FAILED}
    ),
}
_SORT_KEYS: Mapping[str, Callable[[ContainerSummary], Any]] = {
    "name": lambda c: c.name.casefold(),
    "created": lambda c: c.created,
    "state": lambda c: c.state.value,
}


@dataclass(frozen=True, slots=True)
class ListFilter:
    """What ``?state=``, ``?name=``, ``?label=`` and ``?sort=`` keep of a list, and in which order.

    ``states`` None keeps every state; ``name`` is case-folded; a label's value None asks only
    that the key be there. Without ``sort`` the list keeps its order; a sort is stable, so ties
    keep it too.
    """

    states: frozenset[ContainerState] | None = None
    name: str | None = None
    labels: LabelFilter = ()
    sort: str | None = None
    descending: bool = False

    def apply(self, containers: list[ContainerSummary]) -> list[ContainerSummary]:
        chosen = [c for c in containers if self.matches(c)]
        if self.sort is not None:
            chosen.sort(key=_SORT_KEYS[self.sort], reverse=self.descending)
        return chosen

    def matches(self, c: ContainerSummary) -> bool:
        if self.states is not None and c.state not in self.states:
            return False
        if self.name is not None and self.name not in c.name.casefold():
            return False
        return labels_match(c.labels, self.labels)


def list_filter(request: web.Request) -> ListFilter:
    """The list's filters and order from the query; a bad value is INVALID_REQUEST naming it."""
    states: set[ContainerState] = set()
    for value in choices_query(request, "state", _STATE_FILTERS):
        states |= _STATE_FILTERS[value]
    sort, descending = sort_query(request, _SORT_KEYS)
    return ListFilter(
        states=frozenset(states) if states else None,
        name=name_filter(request),
        labels=label_filters(request),
        sort=sort,
        descending=descending,
    )


async def _read(
    request: web.Request,
    read: Callable[[ContainerRuntime, ContainerRef], Awaitable[_T]],
    code: str,
    message: str,
    *,
    reading: bool = False,
) -> _T:
    """One container's document or sample from the runtime the request addresses; a failure is
    the endpoint's ``code`` unless it is of a kind with a code of its own."""
    cid = container_id(request)
    runtime = runtime_for(request)
    try:
        return await read(runtime, ContainerRef(cid, namespace_value(request)))
    except RuntimeFailure as exc:
        raise runtime_error(exc, code, message, cid, reading=reading) from exc


@requires(READ_CONTAINERS)
@rate_pool("containers")
async def inspect_container(request: web.Request) -> web.Response:
    doc = await _read(
        request, lambda rt, ref: rt.inspect(ref), "CONTAINER_INSPECT_FAILED", "Failed to inspect container"
    )
    runtime = runtime_for(request)
    if isinstance(runtime, ImageUpdates) and isinstance(doc.get("Id"), str):
        doc["updateAvailable"] = request.app[UPDATES].of(runtime.name, doc["Id"])
    return web.json_response(doc)


@requires(WRITE_CONTAINERS)
@rate_pool("containers")
@idempotent
async def container_action(request: web.Request) -> web.Response:
    action = cast(Action, request.match_info["action"])
    cid = container_id(request)
    runtime = runtime_for(request)
    timeout = timeout_of(request, await json_fields(request, ("timeout",), required=False))
    force = bool_query(request, "force")
    ref = ContainerRef(cid, namespace_value(request))
    return await start_container_action(request, runtime, ref, action, timeout=timeout, force=force)


async def start_container_action(
    request: web.Request,
    runtime: ContainerRuntime,
    ref: ContainerRef,
    action: Action,
    *,
    timeout: int,
    force: bool = False,
) -> web.Response:
    """The pre-check of ``action`` on the container ``ref`` names, then its submission: the REST
    action and a deploy hook start a container action through here alike."""
    cid = ref.id
    # The synchronous pre-check, so a client learns of 404/409 at once.
    try:
        current, refused = await current_state(request, runtime, ref, action, force=force)
        if refused is not None:
            raise refused
    except RuntimeFailure as exc:
        raise runtime_error(exc, failure_code(action), f"Failed to {action} container", cid) from exc
    op = request.app[OPERATIONS].submit(
        runtime,
        ContainerRef(current.full_id, ref.namespace),
        action,
        container_id=current.id,
        timeout=timeout,
    )
    body: dict[str, Any] = {
        "status": "accepted",
        "containerId": current.id,
        "message": accepted_message(action),
    }
    if action == "stop":
        body["timeout"] = timeout
    body["timestamp"] = now()
    body["operationId"] = op.id
    return web.json_response(body, status=202, headers={"Location": f"/api/v1/operations/{op.id}"})


@requires(WRITE_CONTAINERS)
@rate_pool("containers")
async def remove_container(request: web.Request) -> web.Response:
    """``DELETE /containers/{id}``: checked at once (404, 403, 409), then removed by a job (202).

    Security: the gateway's own container is never removed, even forced; a container that is
    not linked only with ``all=true``, which also needs ``write:engine``: deleting what the
    gateway does not manage is a host administrator's act, not an app user's.
    """
    cid = container_id(request)
    runtime = runtime_for(request)
    force = bool_query(request, "force")
    volumes = bool_query(request, "volumes")
    unlinked = bool_query(request, "all")
    namespace = namespace_value(request)
    if (await request.read()).strip():
        raise invalid_request(
            "A removal takes no body: its options are the query parameters force, volumes, all"
        )
    if unlinked and not request[PRINCIPAL].allows(WRITE_ENGINE):
        raise ApiError(
            403,
            "FORBIDDEN",
            f"Removing with all=true (containers that are not linked) needs the scope {WRITE_ENGINE!r}",
        )
    try:
        current = await runtime.get(ContainerRef(cid, namespace))
    except RuntimeFailure as exc:
        raise runtime_error(exc, "CONTAINER_REMOVE_FAILED", "Failed to remove container", cid) from exc
    if is_self(current, request.app[SELF_CONTAINER_ID]):
        raise ApiError(403, "FORBIDDEN", "The gateway does not remove its own container")
    if not unlinked and not request.app[LINKER].is_linked(current):
        raise ApiError(
            409,
            "CONTAINER_NOT_LINKED",
            f"Container {current.name!r} is not linked to an approved app: remove it with all=true "
            f"(which needs the scope {WRITE_ENGINE!r})",
        )
    refused = runtime.removal_refusal(current, force=force)
    if refused is not None:
        raise runtime_error(refused, "CONTAINER_REMOVE_FAILED", "Failed to remove container", cid)
    ref = ContainerRef(current.full_id, namespace)

    async def work(progress: JobProgress) -> Mapping[str, Any] | None:
        outcome = await runtime.remove(ref, force=force, volumes=volumes)
        if outcome is None or not outcome.recreated_by:
            return None
        # These fields join the record and the completion event; the message replaces the plain
        # "Container removed successfully", which would hide that the pod comes back.
        by = outcome.recreated_by
        return {"recreatedBy": by, "message": f"Container removed; its controller {by} recreates it"}

    # Keyed as lifecycle actions of the same container are (see OperationTracker.submit), so a
    # stop accepted before this removal finishes before it starts.
    op = request.app[OPERATIONS].submit_job(
        runtime=runtime.name,
        resource="container",
        action="remove",
        target=current.id,
        work=work,
        text=REMOVAL,
        namespace=namespace,
        key=current.full_id,
    )
    return accepted(op, {"containerId": current.id})


@requires(READ_CONTAINERS)
@rate_pool("containers")
async def container_stats(request: web.Request) -> web.Response:
    # A Conflict is nothing running to measure (a stopped workload): the client's 409.
    sample = await _read(
        request,
        lambda rt, ref: rt.stats(ref),
        "CONTAINER_STATS_FAILED",
        "Failed to get container stats",
        reading=True,
    )
    return web.json_response(stats_json(sample))


@requires(READ_CONTAINERS)
@rate_pool("containers")
async def batch_stats(request: web.Request) -> web.Response:
    """Stats of every linked, running container, sampled concurrently (one sampling period)."""
    runtimes = {rt.name: rt for rt in runtimes_for(request)}
    containers = await list_from(list(runtimes.values()), namespace_value(request), request.app[STATE].models)
    running = [c for c in managed(request, containers) if c.state is ContainerState.RUNNING]
    results = await asyncio.gather(
        *(runtimes[c.runtime].stats(ContainerRef(c.full_id, c.namespace)) for c in running),
        return_exceptions=True,
    )
    samples = []
    for container, result in zip(running, results, strict=True):
        if isinstance(result, RuntimeFailure):
            # A container that stopped between the list and its sample is simply left out.
            log.info("no stats for %s: %s", container.id, result)
        elif isinstance(result, BaseException):
            raise result
        else:
            samples.append(stats_json(result))
    return web.json_response({"containers": samples, "timestamp": now()})


@requires(READ_CONTAINERS)
@rate_pool("containers")
async def stats_history(request: web.Request) -> web.Response:
    """``GET /containers/{id}/stats/history?minutes=``: the kept samples, oldest first.

    A container that exists but has no history (not linked, not running, a runtime that does not
    stream stats, or the history turned off) answers an empty list rather than an error: a
    sparkline simply starts empty.
    """
    history = request.app[STATS_HISTORY]
    minutes = int_query(request, "minutes", default=history.minutes, minimum=1, maximum=MAX_HISTORY_MINUTES)
    current = await _read(
        request, lambda rt, ref: rt.get(ref), "CONTAINER_STATS_FAILED", "Failed to get container stats"
    )
    samples = history.samples(Target.of(current), minutes or 0)
    return web.json_response(
        {
            "containerId": current.id,
            "resolution": history.resolution,
            "samples": [stats_json(s) for s in samples],
        }
    )


async def linked_running(app: web.Application) -> list[ContainerSummary]:
    """The linked running containers of every runtime (from the warm state models where there
    are some): what the stats history keeps and a ``linked`` stats subscription follows."""
    runtimes: list[ContainerRuntime] = [*app[REGISTRY]]
    containers = await list_from(runtimes, "", app[STATE].models)
    return [c for c in managed_in(app, containers) if c.state is ContainerState.RUNNING]
