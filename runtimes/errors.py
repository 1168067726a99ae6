"""The runtime error hierarchy.

Backends translate their client library's errors into these (with ``raise ... from exc``) so the
gateway can map them to API codes in one place without importing aiodocker or kubernetes_asyncio.
Messages are written by the backend for operators; they are logged, never sent to API clients.
Only ``detail``, a sentence the backend wrote to be shown (never upstream text as it came), may
reach a client.
"""

from __future__ import annotations


class RuntimeFailure(Exception):
    """Base class of every error a container runtime raises."""

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class NotFound(RuntimeFailure):
    """The addressed object does not exist: a container (or pod) unless ``resource`` names another
    kind ("image", "volume", "network"), and ``name`` is how the client named it."""

    def __init__(
        self, message: str, *, detail: str = "", resource: str = "container", name: str = ""
    ) -> None:
        super().__init__(message, detail=detail)
        self.resource = resource
        self.name = name


class Conflict(RuntimeFailure):
    """The container is in a state that does not allow the action."""


class AlreadyInState(Conflict):
    """The container is already in the state the action asked for (started, stopped, paused)."""


class AlreadyRunning(AlreadyInState):
    """A start found the container running already."""


class AlreadyStopped(AlreadyInState):
    """A stop found nothing running."""


class AlreadyPaused(AlreadyInState):
    """A pause found the container paused already."""


class NotInState(Conflict):
    """The action does not apply to the container's state (a pause of a stopped container, an
    unpause of one that is not paused): unlike :class:`AlreadyInState`, its goal is not reached."""


class NotRunning(NotInState):
    """A pause found nothing running to freeze."""


class NotPaused(NotInState):
    """An unpause found the container not paused."""


class StillRunning(Conflict):
    """A removal found the container running (or paused, or restarting) and was not forced."""


class InUse(Conflict):
    """The object is still used, so it cannot go: an image or volume a container uses, a network
    with endpoints, a container name another container holds (``resource`` "container_name")."""

    def __init__(self, message: str, *, detail: str = "", resource: str) -> None:
        super().__init__(message, detail=detail)
        self.resource = resource


class Unavailable(RuntimeFailure):
    """The runtime is configured but cannot be reached (dead socket, refused connection, timeout)."""


class Forbidden(RuntimeFailure):
    """The runtime refused the caller's credentials this action (Kubernetes RBAC)."""


class Unsupported(RuntimeFailure):
    """The runtime cannot perform this action on this kind of container."""


class OperationFailed(RuntimeFailure):
    """The runtime answered but the action failed."""
