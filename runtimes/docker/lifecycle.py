"""Start, stop and restart: one POST each, with the Engine's 304 told apart from a change."""

from __future__ import annotations

from ..base import ContainerRef, ContainerState
from ..errors import AlreadyRunning, AlreadyStopped
from .paths import container_path
from .queries import Queries
from .session import READ_TIMEOUT, EngineSession


class Lifecycle:
    """The actions on one container; a start asks its state first (see :meth:`start`)."""

    def __init__(self, session: EngineSession, queries: Queries) -> None:
        self._session = session
        self._queries = queries

    async def start(self, ref: ContainerRef) -> None:
        current = await self._queries.get(ref)
        if current.state is ContainerState.PAUSED:
            # "Start" on a paused container means "make it run": resume its frozen processes.
            await self._session.post(container_path(ref.id, "unpause"), params={}, timeout=READ_TIMEOUT)
            return
        if await self._session.post(container_path(ref.id, "start"), params={}, timeout=60) == 304:
            raise AlreadyRunning(f"container {ref.id} is already running")

    async def stop(self, ref: ContainerRef, *, timeout: int) -> None:
        status = await self._session.post(
            container_path(ref.id, "stop"), params={"t": timeout}, timeout=timeout + 30
        )
        if status == 304:
            raise AlreadyStopped(f"container {ref.id} is already stopped")

    async def restart(self, ref: ContainerRef, *, timeout: int) -> None:
        await self._session.post(
            container_path(ref.id, "restart"), params={"t": timeout}, timeout=timeout + 60
        )
