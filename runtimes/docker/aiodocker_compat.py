"""The one place the Docker backend calls aiodocker's private request methods.

aiodocker's public resources parse and wrap every answer (log lines decoded one string at a time,
events fanned out through unbounded queues, a 304 from start or stop not told apart), which costs
the log path its speed and the event path its bound. ``Docker._query`` and ``Docker._query_json``
are what those resources call themselves: they add the API version, turn an answer of 4xx/5xx into
``DockerError`` and a dead socket into status 900; :func:`query_until_close` does what
``Docker._query`` does, in the HTTP version that method cannot choose.
tests/unit/test_aiodocker_compat.py fails when their signature or that behaviour changes, and
pyproject.toml bounds aiodocker's version, so an upgrade is checked here before it ships.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
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
    body: Mapping[str, Any] | None = None,
) -> Any:
    """The Engine's JSON answer to one request (``versioned=False`` for ``/version`` itself), with
    ``body`` sent as JSON when given."""
    return await docker._query_json(
        path, method, params=dict(params), timeout=timeout, versioned_api=versioned, data=body
    )


def unframed_session(docker: aiodocker.Docker) -> aiohttp.ClientSession:
    """A session on ``docker``'s connections (closing it leaves them to ``docker``) that asks in
    HTTP/1.0, for :func:`query_until_close`: aiohttp sets the HTTP version per session only."""
    return aiohttp.ClientSession(
        connector=docker.connector, connector_owner=False, version=aiohttp.HttpVersion10
    )


@asynccontextmanager
async def query_until_close(
    docker: aiodocker.Docker,
    unframed: aiohttp.ClientSession,
    path: str,
    *,
    params: Mapping[str, Any],
    timeout: aiohttp.ClientTimeout,
) -> AsyncIterator[aiohttp.ClientResponse]:
    """A versioned GET asked through ``unframed`` (see :func:`unframed_session`), so that the
    Engine sends the answer's body unframed, up to the end of the connection, which closes when
    the answer does; errors as :func:`query`'s.

    A reader of the connection's socket then needs no HTTP parser; and in HTTP/1.1 the Engine
    sends each frame of a log as one HTTP chunk, which costs whoever parses them a Python step
    per frame.
    """
    await docker._check_version()
    url = docker._canonicalize_url(path)
    try:
        response = await unframed.request("GET", url, params=dict(params), timeout=timeout)
    except aiohttp.ClientConnectionError as exc:
        raise aiodocker.DockerError(
            900, f"Cannot connect to Docker Engine via {docker._connection_info} [{exc}]"
        ) from exc
    try:
        if response.status >= 400:
            body = (await response.read()).decode("utf8")
            if response.headers.get("content-type", "") == "application/json":
                body = json.loads(body)["message"]
            raise aiodocker.DockerError(response.status, body)
        yield response
    finally:
        response.close()
