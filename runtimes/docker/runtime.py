"""The Docker backend behind the runtime Protocol: each method hands its work to one concern."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from ..base import (
    Action,
    ContainerRef,
    ContainerRow,
    ContainerSummary,
    ExportSource,
    LogChunk,
    RawLog,
    RemoveOutcome,
    RuntimeEvent,
    RuntimeInfo,
    StatsSample,
    removal_refusal,
    state_refusal,
)
from ..compose import ServiceDraft
from ..engine.creation import ContainerSpec, Recreated, UpdateSource
from ..engine.images import ImageFilter, ImagePrune, ImageRemoval, ImageSummary, PulledImage, PullProgress
from ..engine.networks import Network, NetworkSpec
from ..engine.system import SystemInfo, SystemStats
from ..engine.updates import ContainerImage
from ..engine.volumes import Volume, VolumePrune, VolumeSpec
from ..errors import RuntimeFailure
from .compose import docker_service
from .create import Creation
from .events import stream_events
from .export import ExportSources
from .images import Images
from .lifecycle import Lifecycle
from .logs import detach_logs, stream_logs
from .networks import Networks
from .paths import is_container_id
from .queries import Queries
from .session import EngineSession
from .stats import ContainerStats
from .system import HostSystem, is_local
from .update import Updates
from .volumes import Volumes


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
        self._images = Images(self._session)
        self._creation = Creation(self._session)
        self._updates = Updates(self._session, self._queries, self._creation)
        self._volumes = Volumes(self._session)
        self._networks = Networks(self._session)
        self._system = HostSystem(self._session, name, local=is_local(host))

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

    def stream_stats(self, ref: ContainerRef) -> AsyncIterator[StatsSample]:
        return self._stats.stream(ref)

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

    async def raw_logs(
        self,
        ref: ContainerRef,
        *,
        tail: int | None,
        timestamps: bool,
        since: int | None = None,
        until: int | None = None,
    ) -> RawLog:
        return await detach_logs(
            self._session,
            self._queries,
            ref,
            tail=tail,
            timestamps=timestamps,
            since=since,
            until=until,
        )

    # Pause, unpause and removal of one container.
    async def pause(self, ref: ContainerRef) -> None:
        await self._lifecycle.pause(ref)

    async def unpause(self, ref: ContainerRef) -> None:
        await self._lifecycle.unpause(ref)

    def removal_refusal(self, container: ContainerSummary, *, force: bool) -> RuntimeFailure | None:
        return removal_refusal(container, force=force)

    async def remove(self, ref: ContainerRef, *, force: bool, volumes: bool) -> RemoveOutcome | None:
        await self._lifecycle.remove(ref, force=force, volumes=volumes)
        return None

    # Images
    async def pull_image(self, reference: str, on_progress: Callable[[PullProgress], None]) -> PulledImage:
        return await self._images.pull(reference, on_progress)

    async def list_images(self, filters: ImageFilter) -> list[ImageSummary]:
        return await self._images.summaries(filters)

    async def remove_image(self, target: str, *, force: bool) -> ImageRemoval:
        return await self._images.remove(target, force=force)

    async def prune_images(self, *, unused: bool, labels: Sequence[str]) -> ImagePrune:
        return await self._images.prune(unused=unused, labels=labels)

    # Container creation, updates and the registry check of updateAvailable
    async def name_taken(self, name: str) -> bool:
        return await self._creation.name_taken(name)

    async def has_image(self, reference: str) -> bool:
        return await self._creation.has_image(reference)

    async def create_container(self, spec: ContainerSpec, *, start: bool) -> str:
        return await self._creation.create(spec, start=start)

    async def update_source(self, container: str) -> UpdateSource:
        return await self._updates.source(container)

    async def recreate_container(self, container: str, reference: str) -> Recreated:
        return await self._updates.recreate(container, reference)

    async def recover_update(self, container: str) -> str | None:
        return await self._updates.recover(container)

    async def container_images(self) -> list[ContainerImage]:
        return await self._updates.container_images()

    async def registry_digest(self, reference: str) -> str:
        return await self._updates.registry_digest(reference)

    # Volumes and networks (runtimes.engine.volumes.VolumeStore, runtimes.engine.networks.NetworkStore)
    async def list_volumes(self, *, sizes: bool) -> list[Volume]:
        return await self._volumes.list_volumes(sizes=sizes)

    async def create_volume(self, spec: VolumeSpec) -> Volume:
        return await self._volumes.create(spec)

    async def remove_volume(self, name: str, *, force: bool) -> None:
        await self._volumes.remove(name, force=force)

    async def prune_volumes(self, *, all: bool) -> VolumePrune:
        return await self._volumes.prune(all=all)

    async def list_networks(self) -> list[Network]:
        return await self._networks.list_networks()

    async def get_network(self, ref: str) -> Network:
        return await self._networks.get(ref)

    async def create_network(self, spec: NetworkSpec) -> Network:
        return await self._networks.create(spec)

    async def remove_network(self, ref: str) -> None:
        await self._networks.remove(ref)

    async def connect_network(
        self, ref: str, container: str, *, aliases: Sequence[str], ipv4: str | None
    ) -> None:
        await self._networks.connect(ref, container, aliases=aliases, ipv4=ipv4)

    async def disconnect_network(self, ref: str, container: str, *, force: bool) -> None:
        await self._networks.disconnect(ref, container, force=force)

    async def prune_networks(self) -> list[str]:
        return await self._networks.prune()

    # The host (runtimes.engine.system.SystemSource)
    async def system_info(self) -> SystemInfo:
        return await self._system.info()

    async def system_stats(self) -> SystemStats:
        return await self._system.stats()
