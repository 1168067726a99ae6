"""API errors: one exception type, the JSON error body, and the map from runtime errors to codes.

Every error body is ``{"error": CODE, "message": sentence}``. Upstream text (a daemon's message, a
stack trace) never reaches a client; it is logged with the request id instead.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from runtimes import (
    AlreadyPaused,
    AlreadyRunning,
    AlreadyStopped,
    Conflict,
    Forbidden,
    InUse,
    NoRuntime,
    NotFound,
    NotNamespaced,
    NotPaused,
    NotRunning,
    RuntimeFailure,
    StillRunning,
    Unavailable,
    UnknownRuntime,
    Unsupported,
)

log = logging.getLogger(__name__)

# How one container's result in a bulk or batch answer names its error, by code; any other code is
# named by its message. Public: clients match on these.
_PHRASES = {
    "CONTAINER_NOT_FOUND": "container not found",
    "RUNTIME_UNAVAILABLE": "container runtime not available",
    "CONTAINER_ALREADY_STARTED": "container already running",
    "CONTAINER_ALREADY_STOPPED": "container already stopped",
    "CONTAINER_ALREADY_PAUSED": "container already paused",
    "CONTAINER_NOT_PAUSED": "container not paused",
    "CONTAINER_NOT_RUNNING": "container not running",
    "CONTAINER_INSPECT_FAILED": "failed to inspect container",
}


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra

    @property
    def phrase(self) -> str:
        """The error as one container's result in a list of them (a bulk or batch answer)."""
        return _PHRASES.get(self.code, self.message)

    def response(self) -> web.Response:
        response = error_response(self.status, self.code, self.message, **self.extra)
        response.headers.update(self.headers)
        return response


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": code, "message": message, **extra}, status=status)


def invalid_request(message: str) -> ApiError:
    return ApiError(400, "INVALID_REQUEST", message)


def validation_error(field: str, message: str) -> ApiError:
    """400 VALIDATION_ERROR for a body field that breaks its rule: ``message`` says which rule,
    ``field`` (also in the body) names the field by its path, such as ``ports[1].containerPort``."""
    return ApiError(400, "VALIDATION_ERROR", message, field=field)


def container_not_found(container_id: str) -> ApiError:
    return ApiError(404, "CONTAINER_NOT_FOUND", f"Container {container_id!r} does not exist")


def not_found(resource: str, name: str) -> ApiError:
    """404 ``<RESOURCE>_NOT_FOUND`` for an object of the engine other than a container."""
    return ApiError(404, f"{resource.upper()}_NOT_FOUND", f"{resource.capitalize()} {name!r} does not exist")


def container_not_running(container_id: str, detail: str = "") -> ApiError:
    """409 for a reading (stats, logs) of an entry with nothing running to read, such as a stopped
    Kubernetes workload, or a pause of one with nothing running to freeze; ``detail``, the
    runtime's sentence, says why."""
    return ApiError(409, "CONTAINER_NOT_RUNNING", detail or f"Container {container_id!r} is not running")


def from_runtime(
    exc: Exception,
    *,
    fallback: str = "INTERNAL_ERROR",
    fallback_message: str = "An unexpected error occurred",
    container_id: str = "",
    reading: bool = False,
    broken: bool = False,
) -> ApiError:
    """The API error for a runtime failure: the one map, for REST answers, log streams and bulk
    results alike. ``fallback`` is the endpoint's own code for a failure of no other kind.

    A runtime error's ``detail`` (a sentence its backend wrote for clients) ends the message. With
    ``reading`` (stats, logs) a Conflict means nothing runs to read. ``broken``: the error ended a
    stream the client was already reading, so only the runtime going away (and, reading, nothing
    left to read) keeps its own code; any other is the fallback, told by its detail alone.
    """
    detail = exc.detail if isinstance(exc, RuntimeFailure) else ""
    if isinstance(exc, Unavailable):
        # The detail names the address tried and the settings that change it, nothing more.
        message = "Container runtime not available"
        return ApiError(503, "RUNTIME_UNAVAILABLE", f"{message}: {detail}" if detail else message)
    if reading and isinstance(exc, Conflict):
        return container_not_running(container_id, detail)
    if broken and isinstance(exc, RuntimeFailure):
        log.info("%s: %s", fallback, exc)
        return ApiError(500, fallback, detail or fallback_message)
    if isinstance(exc, NotFound):
        if exc.resource != "container":
            return not_found(exc.resource, exc.name or container_id)
        return container_not_found(container_id)
    if isinstance(exc, InUse):
        # The detail says who uses it (which containers, which endpoints).
        what = exc.resource.replace("_", " ").capitalize()
        return ApiError(409, f"{exc.resource.upper()}_IN_USE", detail or f"{what} is in use")
    if isinstance(exc, Forbidden):
        log.warning("runtime refused the request: %s", exc)
        return ApiError(403, "FORBIDDEN", detail or "The container runtime refused this request")
    if isinstance(exc, UnknownRuntime):
        return ApiError(400, "INVALID_RUNTIME", f"Invalid runtime specified: {exc.args[0]!r} is not enabled")
    if isinstance(exc, NotNamespaced):
        return ApiError(400, "INVALID_RUNTIME", str(exc))
    if isinstance(exc, NoRuntime):
        return ApiError(500, "NO_RUNTIME", "No container runtime configured")
    if isinstance(exc, Unsupported):
        return ApiError(
            409, "OPERATION_NOT_SUPPORTED", detail or "The runtime does not support this operation here"
        )
    if isinstance(exc, AlreadyRunning):
        return ApiError(409, "CONTAINER_ALREADY_STARTED", "Container is already running")
    if isinstance(exc, AlreadyStopped):
        return ApiError(409, "CONTAINER_ALREADY_STOPPED", "Container is already stopped")
    if isinstance(exc, AlreadyPaused):
        return ApiError(409, "CONTAINER_ALREADY_PAUSED", "Container is already paused")
    if isinstance(exc, NotPaused):
        return ApiError(409, "CONTAINER_NOT_PAUSED", "Container is not paused")
    if isinstance(exc, NotRunning):
        return container_not_running(container_id, detail)
    if isinstance(exc, StillRunning):
        # The detail says in which state, and that force=true removes it anyway.
        return ApiError(409, "CONTAINER_RUNNING", detail or "Container is running")
    if isinstance(exc, Conflict | RuntimeFailure):
        log.warning("%s: %s", fallback, exc)
    else:
        log.exception("%s", fallback, exc_info=exc)
    return ApiError(500, fallback, f"{fallback_message}: {detail}" if detail else fallback_message)
