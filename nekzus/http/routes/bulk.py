"""Bulk actions (start-all, stop-all, restart-all, pause-all, unpause-all) and batch actions on a
list of ids.

They act only on linked containers, never on the gateway's own. Each action goes through the
operation tracker, which runs them all at once except for its bound on starts, so every client also
gets the usual completion or failure event; the response waits for all of them and reports each result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from runtimes import (
    ACTIONS,
    Action,
    AlreadyInState,
    ContainerRef,
    ContainerRuntime,
    ContainerSummary,
    NotInState,
    RuntimeFailure,
    Unavailable,
)

from ...errors import ApiError, from_runtime
from ...keys import LINKER, OPERATIONS, SELF_CONTAINER_ID
from ...linking import is_self
from ...operations.tracker import OperationTracker
from ...params import ID_LIST_FIELDS, container_ids, json_fields, namespace_value, timeout_of
from ...security.auth import WRITE_CONTAINERS, requires
from ...security.ratelimit import rate_pool
from ..idempotent import idempotent
from .common import current_state, list_from, managed, runtime_for, runtimes_for


@dataclass(frozen=True, slots=True)
class _Target:
    runtime: ContainerRuntime
    container: ContainerSummary


def _result(cid: str, name: str, error: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {"id": cid, "name": name, "success": error is None}
    if error is not None:
        item["error"] = error
    return item


def _failed(cid: str, name: str, exc: RuntimeFailure) -> dict[str, Any]:
    """The result of a container the action was not run on, its error named as the API's map has it."""
    error = from_runtime(
        exc,
        fallback="CONTAINER_INSPECT_FAILED",
        fallback_message="Failed to inspect container",
        container_id=cid,
    )
    return _result(cid, name, error.phrase)


async def _perform(
    tracker: OperationTracker, target: _Target, action: Action, timeout: int
) -> dict[str, Any]:
    c = target.container
    op = tracker.submit(
        target.runtime, ContainerRef(c.full_id, c.namespace), action, container_id=c.id, timeout=timeout
    )
    await op.done.wait()
    return _result(c.id, c.name, None if op.state == "completed" else op.message)


def _summary(message: str, results: Sequence[dict[str, Any]]) -> web.Response:
    success = sum(1 for r in results if r["success"])
    return web.json_response(
        {
            "message": message,
            "total": len(results),
            "success": success,
            "failed": len(results) - success,
            "results": list(results),
        }
    )


async def _run_all(
    request: web.Request, action: Action, targets: Sequence[_Target | dict[str, Any]], timeout: int
) -> list[dict[str, Any]]:
    """Results in the order of ``targets``; a dict in ``targets`` is an already-decided result."""
    tracker = request.app[OPERATIONS]

    async def one(target: _Target | dict[str, Any]) -> dict[str, Any]:
        if isinstance(target, dict):
            return target
        return await _perform(tracker, target, action, timeout)

    return list(await asyncio.gather(*(one(t) for t in targets)))


def _bulk_handler(action: Action) -> Any:
    title = f"{action.capitalize()} all operation completed"

    async def handler(request: web.Request) -> web.Response:
        timeout = timeout_of(request, await json_fields(request, ("timeout",), required=False))
        runtimes = {rt.name: rt for rt in runtimes_for(request)}
        containers = managed(request, await list_from(list(runtimes.values()), namespace_value(request)))
        targets: list[_Target | dict[str, Any]] = []
        for c in containers:
            runtime = runtimes[c.runtime]
            refused = runtime.refusal(c, action, force=False)
            if isinstance(refused, AlreadyInState | NotInState):
                # "all" means all that the action changes: the others are left out (pause-all
                # leaves out stopped containers as well as paused ones).
                continue
            targets.append(_failed(c.id, c.name, refused) if refused else _Target(runtime, c))
        return _summary(title, await _run_all(request, action, targets, timeout))

    handler.__name__ = f"{action}_all"
    return requires(WRITE_CONTAINERS)(rate_pool("containers")(idempotent(handler)))


start_all = _bulk_handler("start")
stop_all = _bulk_handler("stop")
restart_all = _bulk_handler("restart")
pause_all = _bulk_handler("pause")
unpause_all = _bulk_handler("unpause")


@requires(WRITE_CONTAINERS)
@rate_pool("containers")
@idempotent
async def batch(request: web.Request) -> web.Response:
    body = await json_fields(request, ("action", *ID_LIST_FIELDS, "timeout"), required=True)
    action = body.get("action")
    if action not in ACTIONS:
        raise ApiError(400, "INVALID_ACTION", f"Action must be one of {', '.join(ACTIONS)}")
    unique = container_ids(body, "containerIds")
    timeout = timeout_of(request, body)
    runtime = runtime_for(request)
    namespace = namespace_value(request)
    link = request.app[LINKER]
    self_id = request.app[SELF_CONTAINER_ID]

    unavailable: list[Unavailable] = []

    async def resolve(cid: str) -> _Target | dict[str, Any]:
        try:
            c, refused = await current_state(request, runtime, ContainerRef(cid, namespace), action)
        except RuntimeFailure as exc:
            if isinstance(exc, Unavailable):
                unavailable.append(exc)
            return _failed(cid, "", exc)
        if is_self(c, self_id):
            return _result(c.id, c.name, "refusing to act on the gateway's own container")
        if not link.is_linked(c):
            return _result(c.id, c.name, "container is not linked to an approved app")
        return _failed(c.id, c.name, refused) if refused else _Target(runtime, c)

    targets = await asyncio.gather(*(resolve(cid) for cid in unique))
    if len(unavailable) == len(targets):
        raise from_runtime(unavailable[0])
    return _summary("Batch operation completed", await _run_all(request, action, targets, timeout))
