"""Start, stop, restart, pause, unpause and removal: one Engine request each, with the Engine's 304
and its conflicts told apart from a change."""

from __future__ import annotations

import re

from ..base import ContainerRef, ContainerState
from ..errors import (
    AlreadyPaused,
    AlreadyRunning,
    AlreadyStopped,
    Conflict,
    NotPaused,
    NotRunning,
    OperationFailed,
    StillRunning,
)
from .paths import container_path
from .queries import Queries
from .session import READ_TIMEOUT, EngineSession

# How the Engine words the conflicts of a pause, an unpause and a removal. Only the choice of error
# class is made from its words; what a client reads is the backend's own sentence. An unpause of a
# container that is not paused is a 500 on Engines before 23.0 and a 409 since.
_ALREADY_PAUSED = re.compile(r"is already paused")
_NOT_RUNNING = re.compile(r"is not running|is restarting")
_NOT_PAUSED = re.compile(r"is not paused")
_REMOVE_LIVE = re.compile(r"cannot remove a (running|paused|restarting) container")
_REMOVE_PENDING = re.compile(r"removal of container \S+ is already in progress")
REMOVE_TIMEOUT = 60.0  # a forced removal kills the container first


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

    async def pause(self, ref: ContainerRef) -> None:
        try:
            await self._session.post(container_path(ref.id, "pause"), params={}, timeout=READ_TIMEOUT)
        except Conflict as exc:
            if _ALREADY_PAUSED.search(str(exc)):
                raise AlreadyPaused(f"container {ref.id} is already paused") from exc
            if _NOT_RUNNING.search(str(exc)):
                raise NotRunning(
                    f"container {ref.id} is not running",
                    detail="The container is not running, so there is nothing to pause",
                ) from exc
            raise

    async def unpause(self, ref: ContainerRef) -> None:
        try:
            await self._session.post(container_path(ref.id, "unpause"), params={}, timeout=READ_TIMEOUT)
        except (Conflict, OperationFailed) as exc:
            if not _NOT_PAUSED.search(str(exc)):
                raise
            # Someone resumed it first: the goal is reached. Stopped meanwhile, it is not.
            if (await self._queries.get(ref)).state is ContainerState.RUNNING:
                raise AlreadyRunning(f"container {ref.id} is running, no longer paused") from exc
            raise NotPaused(
                f"container {ref.id} is not paused", detail="The container is not paused"
            ) from exc

    async def remove(self, ref: ContainerRef, *, force: bool, volumes: bool) -> None:
        # DELETE addresses the container itself: its path without an endpoint after it.
        path = container_path(ref.id, "").rstrip("/")
        try:
            await self._session.json(
                path,
                method="DELETE",
                params={"force": int(force), "v": int(volumes)},
                timeout=REMOVE_TIMEOUT,
            )
        except Conflict as exc:
            live = _REMOVE_LIVE.search(str(exc))
            if live:
                raise StillRunning(
                    f"container {ref.id} is {live.group(1)}",
                    detail=f"The container is {live.group(1)}: stop it first, or remove it with force=true",
                ) from exc
            if _REMOVE_PENDING.search(str(exc)):
                raise Conflict(
                    f"container {ref.id} is being removed already",
                    detail="Its removal is already in progress",
                ) from exc
            raise
