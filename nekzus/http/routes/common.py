"""What several handlers share: choosing runtimes and rendering containers and stats."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

from aiohttp import web

from runtimes import (
    Action,
    ContainerRef,
    ContainerRuntime,
    ContainerSummary,
    NoRuntime,
    NotNamespaced,
    RuntimeFailure,
    StatsSample,
    UnknownRuntime,
)

from ...errors import ApiError, from_runtime
from ...keys import LINKER, REGISTRY, SELF_CONTAINER_ID, STATE
from ...linking import is_self
from ...operations.tracker import Operation
from ...params import addressed
from ...realtime.events import now
from ...realtime.state import ContainerModel

log = logging.getLogger(__name__)

_C = TypeVar("_C")
_T = TypeVar("_T")


def _lookup_error(request: web.Request, exc: LookupError) -> ApiError:
    """A runtime the request cannot have: INVALID_RUNTIME (NO_RUNTIME when none is configured).

    A namespace means a pod: the path form ``/containers/{namespace}/{pod}`` and ``?namespace=`` both
    address the runtime with namespaces, and naming another runtime with one is a contradiction.
    """
    if isinstance(exc, NotNamespaced) and "namespace" in request.match_info:
        return ApiError(
            400, "INVALID_RUNTIME", "The path form /containers/{namespace}/{pod} is for Kubernetes"
        )
    return from_runtime(exc)


def runtime_for(request: web.Request) -> ContainerRuntime:
    """The one runtime a request addresses (see ``RuntimeRegistry.addressed``), else the primary one."""
    try:
        return request.app[REGISTRY].addressed(*addressed(request))
    except (UnknownRuntime, NoRuntime, NotNamespaced) as exc:
        raise _lookup_error(request, exc) from exc


def runtimes_for(request: web.Request) -> list[ContainerRuntime]:
    """The runtime a request names or implies, or every enabled runtime for a merged view.

    ``?namespace=`` alone selects the runtime with namespaces, so without one it is
    ``INVALID_RUNTIME`` rather than an empty list that looks like an empty namespace.
    """
    try:
        return request.app[REGISTRY].select(*addressed(request))
    except (UnknownRuntime, NoRuntime, NotNamespaced) as exc:
        raise _lookup_error(request, exc) from exc


def capable_runtime(request: web.Request, capability: type[_C], what: str) -> _C:
    """The runtime that serves an engine route: the one ``?runtime=`` names, else the primary
    one if it has ``capability`` (a runtime-checkable Protocol such as images), else the first that
    has it. One without it is ``409 OPERATION_NOT_SUPPORTED``, saying it has no ``what``."""
    registry = request.app[REGISTRY]
    name = request.query.get("runtime") or None
    try:
        runtime = registry.get(name)
    except (UnknownRuntime, NoRuntime) as exc:
        raise from_runtime(exc) from exc
    if isinstance(runtime, capability):
        return runtime
    if name is None:
        for other in registry:
            if isinstance(other, capability):
                return other
    raise ApiError(409, "OPERATION_NOT_SUPPORTED", f"The {runtime.name} runtime has no {what}")


async def current_state(
    request: web.Request,
    runtime: ContainerRuntime,
    ref: ContainerRef,
    action: Action,
    *,
    force: bool = False,
) -> tuple[ContainerSummary, RuntimeFailure | None]:
    """One container as the pre-check of ``action`` needs it, and the runtime's refusal of the
    action on it (None: it may run).

    The runtime's warm state model answers when the runtime accepts the action on it: no runtime
    call, so an Engine busy with other actions does not slow the 202 down. The model is only as
    fresh as the event stream, so a refusal is never taken from it but confirmed with the runtime;
    an action accepted on a state the runtime had already left finds it done, and completes as such.
    """
    model = request.app[STATE].models.get(runtime.name)
    if model is not None and not ref.namespace:
        found = model.find(ref.id, time.time())
        if found is not None and runtime.refusal(found, action, force=force) is None:
            return found, None
    current = await runtime.get(ref)
    return current, runtime.refusal(current, action, force=force)


async def _list_one(
    runtime: ContainerRuntime, namespace: str, model: ContainerModel | None
) -> list[ContainerSummary]:
    if model is not None and model.warm:
        return model.summaries(time.time())
    return await runtime.list_containers(namespace=namespace or None)


async def list_from(
    runtimes: list[ContainerRuntime],
    namespace: str = "",
    models: Mapping[str, ContainerModel] | None = None,
) -> list[ContainerSummary]:
    """Containers of every runtime given, only those of ``namespace`` when one is named (a runtime
    without namespaces, Docker, has none there). A runtime with a warm model in ``models`` is
    served from it, any other is asked. A merged view skips a runtime that is down, unless every
    one is: then the first runtime's error is the answer."""
    models = models or {}
    results = await asyncio.gather(
        *(_list_one(rt, namespace, models.get(rt.name)) for rt in runtimes), return_exceptions=True
    )
    containers: list[ContainerSummary] = []
    failures: list[Exception] = []
    for runtime, result in zip(runtimes, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result
            log.warning("listing containers of %s failed: %s", runtime.name, result)
            failures.append(result)
        else:
            containers.extend(c for c in result if not namespace or c.namespace == namespace)
    if failures and len(failures) == len(runtimes):
        raise from_runtime(
            failures[0], fallback="CONTAINER_LIST_FAILED", fallback_message="Failed to list containers"
        )
    return containers


def managed(request: web.Request, containers: list[ContainerSummary]) -> list[ContainerSummary]:
    """The linked containers, never the gateway's own."""
    return managed_in(request.app, containers)


def managed_in(app: web.Application, containers: list[ContainerSummary]) -> list[ContainerSummary]:
    """:func:`managed` for work of the gateway's own, outside any request."""
    link = app[LINKER]
    self_id = app[SELF_CONTAINER_ID]
    return [c for c in containers if link.is_linked(c) and not is_self(c, self_id)]


def summary_json(c: ContainerSummary, update_available: bool | None = None) -> dict[str, Any]:
    """One container in the list; ``update_available`` is the update check's verdict (None: unknown)."""
    return {
        "id": c.id,
        "name": c.name,
        "image": c.image,
        "state": c.state.value,
        "status": c.status,
        "created": c.created,
        "ports": [
            {"ip": p.ip, "privatePort": p.private_port, "publicPort": p.public_port, "type": p.type}
            for p in c.ports
        ],
        "labels": dict(c.labels),
        "runtime": c.runtime,
        "namespace": c.namespace,
        "updateAvailable": update_available,
    }


def stats_json(s: StatsSample) -> dict[str, Any]:
    return {
        "containerId": s.container_id,
        "cpu": {"usage": s.cpu_percent, "coresUsed": s.cores_used, "totalCores": s.total_cores},
        "memory": {
            "usage": s.memory_percent,
            "used": s.memory_used,
            "limit": s.memory_limit,
            "available": s.memory_available,
        },
        "network": {"rx": s.network_rx, "tx": s.network_tx},
        "timestamp": s.timestamp,
    }


def runtime_error(
    exc: RuntimeFailure, code: str, message: str, container_id: str = "", *, reading: bool = False
) -> ApiError:
    return from_runtime(
        exc, fallback=code, fallback_message=message, container_id=container_id, reading=reading
    )


async def runtime_call(call: Awaitable[_T], code: str, message: str) -> _T:
    """What ``call`` returns; a runtime failure becomes its API error, ``code`` when it is of no
    other kind, so a handler that makes one runtime call needs no try block of its own."""
    try:
        return await call
    except RuntimeFailure as exc:
        raise from_runtime(exc, fallback=code, fallback_message=message) from exc


def accepted(op: Operation, body: Mapping[str, Any]) -> web.Response:
    """The 202 of a job just submitted: ``body`` with the job's message and where to follow it."""
    answer = {"status": "accepted", **body, "message": op.message, "timestamp": now(), "operationId": op.id}
    return web.json_response(answer, status=202, headers={"Location": f"/api/v1/operations/{op.id}"})
