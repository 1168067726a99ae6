"""What Docker accepts as a container id or name, and the Engine paths built from one."""

from __future__ import annotations

import re
from typing import TypeGuard

from ..errors import NotFound
from ..urlpath import segment

# What Docker accepts as a container name (ids are hex, so they fit too).
_CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
MAX_NAME = 253


def short_id(full_id: str) -> str:
    return full_id[:12]


def is_container_id(value: object) -> TypeGuard[str]:
    """An id or name Docker could have given a container (names are at most 253 characters here)."""
    return isinstance(value, str) and len(value) <= MAX_NAME and bool(_CONTAINER_NAME.fullmatch(value))


def container_path(container: str, endpoint: str) -> str:
    """``containers/{id}/{endpoint}``, for an id or name that Docker could have given a container.

    Security: the Engine decodes the path before routing it (``%2F`` is a slash to it), so
    percent-encoding alone would not keep a value in its segment: anything that is not a Docker
    id or name is NotFound here, never sent.
    """
    if not _CONTAINER_NAME.fullmatch(container):
        raise NotFound(f"{container!r} is not a Docker container id or name")
    return f"containers/{segment(container)}/{endpoint}"
