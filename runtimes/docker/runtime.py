"""The Docker backend behind the runtime Protocol: each method hands its work to one concern."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from ..base import (
    Action,
    ContainerRef,
    ContainerRow,
    ContainerSummary,
    ExportSource,
    LogChunk,
    RuntimeEvent,
    RuntimeInfo,
    StatsSample,
    state_refusal,
)
from ..compose import ServiceDraft
from ..errors import RuntimeFailure
from .compose import docker_service
from .events import stream_events
from .export import ExportSources
from .lifecycle import Lifecycle
from .logs import stream_logs
from .paths import is_container_id
from .queries import Queries
from .session import EngineSession
from .stats import ContainerStats


class DockerRuntime:
    """A Docker Engine reached at ``host`` (``unix://…`` or ``tcp://…``)."""

    namespaced = False

    def __init__(self, host: str, *, name: str = "docker") -> None:
        self._name = name
        self.host = host
        self._session = EngineSession(host)
        self._queries = Queries(self._session, name)
        self._lifecycle = Lifecycle(self._session, self._queries)
        self._stats = ContainerStats(self._session)
        self._exports = ExportSources(self._session, self._queries, name)

    @property
    def name(self) -> str:
        return self._name

    def accepts_id(self, value: object) -> bool:
        return is_container_id(value)

    def refusal(self, container: ContainerSummary, action: Action, *, force: bool) -> RuntimeFailure | None:
        return state_refusal(container, action)

    async def close(self) -> None:
        owned: list[asyncio.Future[Any]] = [*self._exports.pending(), *self._stats.pending()]
        for pending in owned:
            pending.cancel()
        await asyncio.gather(*owned, return_exceptions=True)
        await self._session.close()

    async def ping(self) -> RuntimeInfo:
        version = await self._session.json("version", versioned=False, timeout=5)
        return RuntimeInfo(self.name, str(version.get("Version", "")), str(version.get("ApiVersion", "")))

    async def list_containers(self, *, namespace: str | None = None) -> list[ContainerSummary]:
        return await self._queries.list_containers()

    async def rows(
        self, ids: Sequence[str] | None = None, *, known: Mapping[str, ContainerRow] | None = None
    ) -> list[ContainerRow]:
        """The state model's rows, each with the lifetime its status line is rendered from."""
        return await self._queries.rows(ids, known=known)

    async def get(self, ref: ContainerRef) -> ContainerSummary:
        return await self._queries.get(ref)

    async def inspect(self, ref: ContainerRef) -> dict[str, Any]:
        return await self._queries.inspect(ref)

    async def start(self, ref: ContainerRef) -> None:
        await self._lifecycle.start(ref)

    async def stop(self, ref: ContainerRef, *, timeout: int) -> None:
        await self._lifecycle.stop(ref, timeout=timeout)

    async def restart(self, ref: ContainerRef, *, timeout: int) -> None:
        await self._lifecycle.restart(ref, timeout=timeout)

    async def stats(self, ref: ContainerRef) -> StatsSample:
        return await self._stats.sample(ref)

    async def export_source(self, ref: ContainerRef) -> ExportSource:
        return await self._exports.source(ref)

    def compose_services(
        self, source: ExportSource, *, include_volumes: bool, include_networks: bool
    ) -> list[ServiceDraft]:
        return [
            docker_service(
                source.container,
                source.image,
                source.log_driver,
                include_volumes=include_volumes,
                include_networks=include_networks,
            )
        ]

    def events(self, *, since: int | None = None) -> AsyncIterator[RuntimeEvent]:
        return stream_events(self._session, self.name, since=since)

    def logs(
        self,
        ref: ContainerRef,
        *,
        follow: bool,
        tail: int | None,
        timestamps: bool,
        since: int | None = None,
        until: int | None = None,
    ) -> AsyncIterator[LogChunk]:
        return stream_logs(
            self._session,
            self._queries,
            ref,
            follow=follow,
            tail=tail,
            timestamps=timestamps,
            since=since,
            until=until,
        )
