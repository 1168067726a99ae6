"""The session with one Docker Engine: every request goes through :class:`EngineSession`.

Every aiodocker error is translated into :mod:`runtimes.errors` here and nowhere else. aiodocker
reports a socket it cannot reach as status 900; that is :class:`Unavailable`, as is a timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import aiodocker
import aiohttp

from ..errors import Conflict, NotFound, OperationFailed, Unavailable
from . import aiodocker_compat

READ_TIMEOUT = 30.0
# What a request to the Engine may raise: each is translated by :meth:`EngineSession.fail`.
ENGINE_ERRORS = (TimeoutError, aiodocker.DockerError, aiohttp.ClientError, OSError)
_INFO_SECONDS = 60.0  # how long the daemon's info (logging driver, CPUs) is taken as known


def without_userinfo(address: str) -> str:
    """``ssh://user@host`` as ``ssh://host``: a login name is nobody's business but the operator's."""
    parts = urlsplit(address)
    if parts.netloc and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return address


class EngineSession:
    """A Docker Engine reached at ``host`` (``unix://…`` or ``tcp://…``), through aiodocker."""

    def __init__(self, host: str) -> None:
        self.host = host
        self._docker = aiodocker.Docker(
            url=host,
            timeout=aiohttp.ClientTimeout(total=None, connect=5, sock_connect=5),
        )
        self._unframed = aiodocker_compat.unframed_session(self._docker)
        self._info: tuple[float, dict[str, Any]] | None = None
        self._info_lock = asyncio.Lock()
        # What a client is told when the Engine does not answer: the address tried (without any
        # user name in it) and the settings that change it.
        self._unreachable = (
            f"the Docker Engine at {without_userinfo(host)} does not answer "
            "(set DOCKER_HOST or runtimes.docker.host to use another)"
        )

    async def close(self) -> None:
        await self._unframed.close()
        await self._docker.close()

    def fail(self, exc: BaseException, what: str) -> NoReturn:
        """Raise ``exc``, an error of the request ``what``, as the runtime error it means."""
        if isinstance(exc, aiodocker.DockerError):
            if exc.status == 404:
                raise NotFound(f"{what}: {exc.message}") from exc
            if exc.status == 409:
                raise Conflict(f"{what}: {exc.message}") from exc
            if exc.status == 900:
                unreachable = f"Docker Engine at {self.host} is unreachable"
                raise Unavailable(unreachable, detail=self._unreachable) from exc
            raise OperationFailed(f"{what}: [{exc.status}] {exc.message}") from exc
        if isinstance(exc, asyncio.TimeoutError | aiohttp.ClientError | OSError):
            raise Unavailable(
                f"Docker Engine at {self.host} did not answer: {exc!r}", detail=self._unreachable
            ) from exc
        raise OperationFailed(f"{what}: {exc!r}") from exc

    async def json(
        self,
        path: str,
        *,
        method: str = "GET",
        params: Mapping[str, Any] | None = None,
        timeout: float = READ_TIMEOUT,
        versioned: bool = True,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """The Engine's JSON answer to ``method path``; ``body``, when given, is sent as JSON."""
        try:
            return await aiodocker_compat.query_json(
                self._docker,
                path,
                method,
                params=params or {},
                timeout=aiohttp.ClientTimeout(total=timeout),
                versioned=versioned,
                body=body,
            )
        except ENGINE_ERRORS as exc:
            self.fail(exc, f"{method} {path}")

    async def post(self, path: str, *, params: Mapping[str, Any], timeout: float) -> int:
        """POST without a body; answer the HTTP status (204, or 304 when nothing changed)."""
        try:
            async with aiodocker_compat.query(
                self._docker, path, "POST", params=params, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                await response.read()
                return response.status
        except ENGINE_ERRORS as exc:
            self.fail(exc, f"POST {path}")

    def stream(
        self, path: str, params: Mapping[str, Any], *, method: str = "GET"
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """A request whose body is read for as long as it lasts (events, followed logs, a pull's
        progress): no time limit. Its errors, reading included, are the caller's to pass to :meth:`fail`."""
        return aiodocker_compat.query(
            self._docker,
            path,
            method,
            params=params,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        )

    def stream_until_close(
        self, path: str, params: Mapping[str, Any]
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """A GET without a time limit, as :meth:`stream`, whose answer's body arrives unframed
        (HTTP/1.0) up to the connection's end, for a reader that takes the connection over."""
        return aiodocker_compat.query_until_close(
            self._docker,
            self._unframed,
            path,
            params=params,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        )

    async def daemon_info(self) -> dict[str, Any]:
        """The daemon's ``info``, asked at most once a minute (and once at a time)."""
        known = self._info
        if known is not None and time.monotonic() - known[0] < _INFO_SECONDS:
            return known[1]
        async with self._info_lock:
            now = time.monotonic()
            if self._info is None or now - self._info[0] >= _INFO_SECONDS:
                self._info = (now, await self.json("info"))
            return self._info[1]
