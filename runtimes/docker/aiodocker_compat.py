"""The one place the Docker backend calls aiodocker's private request methods.

aiodocker's public resources parse and wrap every answer (log lines decoded one string at a time,
events fanned out through unbounded queues, a 304 from start or stop not told apart), which costs
the log path its speed and the event path its bound. ``Docker._query`` and ``Docker._query_json``
are what those resources call themselves: they add the API version, turn an answer of 4xx/5xx into
``DockerError`` and a dead socket into status 900. tests/unit/test_aiodocker_compat.py fails when their
signature or that behaviour changes, and pyproject.toml bounds aiodocker's version, so an upgrade
is checked here before it ships.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiodocker
import aiohttp


def query(
    docker: aiodocker.Docker,
    path: str,
    method: str = "GET",
    *,
    params: Mapping[str, Any],
    timeout: aiohttp.ClientTimeout,
) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
    """The Engine's raw response to one versioned request; its body is the caller's to read."""
    return docker._query(path, method, params=dict(params), timeout=timeout)


async def query_json(
    docker: aiodocker.Docker,
    path: str,
    method: str = "GET",
    *,
    params: Mapping[str, Any],
    timeout: aiohttp.ClientTimeout,
    versioned: bool = True,
    data: bytes | None = None,
) -> Any:
    """The Engine's JSON answer to one request (``versioned=False`` for ``/version`` itself);
    ``data`` is a JSON body, which aiodocker sends as ``application/json``."""
    return await docker._query_json(
        path, method, params=dict(params), data=data, timeout=timeout, versioned_api=versioned
    )
