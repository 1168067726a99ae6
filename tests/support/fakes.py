"""A small in-memory runtime for what a real daemon cannot be made to do on demand:
fail in a chosen way, or hold actions open so their concurrency can be counted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from runtimes import (
    Action,
    ContainerRef,
    ContainerRuntime,
    ContainerState,
    ContainerSummary,
    ExportSource,
    LogChunk,
    NotFound,
    OperationFailed,
    RemoveOutcome,
    RuntimeEvent,
    RuntimeFailure,
    RuntimeInfo,
    RuntimeRegistry,
    ServiceDraft,
    StatsSample,
    removal_refusal,
    state_refusal,
)
from runtimes.docker import is_container_id
from runtimes.docker.compose import docker_service


def summary(
    n: int, *, state: ContainerState = ContainerState.RUNNING, linked: bool = True
) -> ContainerSummary:
    full = f"{n:064x}"
    return ContainerSummary(
        id=full[:12],
        full_id=full,
        name=f"fake-{n}",
        image="fake:latest",
        state=state,
        status="Up",
        created=1_700_000_000,
        ports=(),
        labels={"nekzus.enable": "true"} if linked else {},
        runtime="docker",
    )


class FakeRuntime:
    """Containers in a dict; ``fail`` maps a method name to the exception it raises."""

    namespaced = False

    def __init__(self, containers: list[ContainerSummary], *, name: str = "docker") -> None:
        self._name = name
        self.containers = {c.full_id: c for c in containers}
        self.fail: dict[str, BaseException] = {}
        self.release = asyncio.Event()
        self.log_chunks: list[LogChunk] = []
        self.changed = asyncio.Condition()
        self.hold_actions = False
        self.active = 0
        self.max_active = 0
        self.export_kind = "docker"
        self.timeouts: list[tuple[str, int]] = []  # (container name, grace period) of each stop/restart
        self.removed: list[tuple[str, bool, bool]] = []  # (container name, force, volumes) of each removal

    @property
    def name(self) -> str:
        return self._name

    def accepts_id(self, value: object) -> bool:
        return is_container_id(value)  # it stands in for a Docker Engine

    def refusal(self, container: ContainerSummary, action: Action, *, force: bool) -> RuntimeFailure | None:
        return state_refusal(container, action)

    def _maybe_fail(self, method: str) -> None:
        if method in self.fail:
            raise self.fail[method]

    def _find(self, ref: ContainerRef) -> ContainerSummary:
        for c in self.containers.values():
            if ref.id in (c.id, c.full_id, c.name):
                return c
        raise NotFound(ref.id)

    async def ping(self) -> RuntimeInfo:
        self._maybe_fail("ping")
        return RuntimeInfo(self._name, "1.0", "1.0")

    async def list_containers(self, *, namespace: str | None = None) -> list[ContainerSummary]:
        self._maybe_fail("list_containers")
        return list(self.containers.values())

    async def get(self, ref: ContainerRef) -> ContainerSummary:
        self._maybe_fail("get")
        return self._find(ref)

    async def inspect(self, ref: ContainerRef) -> dict[str, Any]:
        self._maybe_fail("inspect")
        return {"Id": self._find(ref).full_id}

    async def _act(self, ref: ContainerRef, state: ContainerState) -> None:
        self._maybe_fail("action")
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        async with self.changed:
            self.changed.notify_all()
        try:
            if self.hold_actions:
                await self.release.wait()
            current = self._find(ref)
            self.containers[current.full_id] = ContainerSummary(
                **{**{f: getattr(current, f) for f in current.__dataclass_fields__}, "state": state}
            )
        finally:
            self.active -= 1

    async def start(self, ref: ContainerRef) -> None:
        await self._act(ref, ContainerState.RUNNING)

    async def stop(self, ref: ContainerRef, *, timeout: int) -> None:
        self.timeouts.append((self._find(ref).name, timeout))
        await self._act(ref, ContainerState.EXITED)

    async def restart(self, ref: ContainerRef, *, timeout: int) -> None:
        self.timeouts.append((self._find(ref).name, timeout))
        await self._act(ref, ContainerState.RUNNING)

    async def pause(self, ref: ContainerRef) -> None:
        await self._act(ref, ContainerState.PAUSED)

    async def unpause(self, ref: ContainerRef) -> None:
        await self._act(ref, ContainerState.RUNNING)

    def removal_refusal(self, container: ContainerSummary, *, force: bool) -> RuntimeFailure | None:
        return removal_refusal(container, force=force)

    async def remove(self, ref: ContainerRef, *, force: bool, volumes: bool) -> RemoveOutcome | None:
        """Drops the container, as the Engine does: gone when the removal runs is NotFound."""
        self._maybe_fail("remove")
        gone = self._find(ref)
        self.removed.append((gone.name, force, volumes))
        del self.containers[gone.full_id]
        return None

    async def stats(self, ref: ContainerRef) -> StatsSample:
        self._maybe_fail("stats")
        c = self._find(ref)
        return StatsSample(c.id, 0.0, 0.0, 1.0, 0.0, 0, 0, 0, 0, 0, 0)

    async def export_source(self, ref: ContainerRef) -> ExportSource:
        self._maybe_fail("export")
        c = self._find(ref)
        doc = {"Id": c.full_id, "Name": f"/{c.name}", "Config": {"Image": c.image}, "HostConfig": {}}
        return ExportSource(self._name, c.full_id, c.name, doc)

    def compose_services(
        self, source: ExportSource, *, include_volumes: bool, include_networks: bool
    ) -> list[ServiceDraft]:
        if self.export_kind != "docker":
            raise OperationFailed(f"no compose form for a {self.export_kind!r} container")
        return [
            docker_service(
                source.container,
                source.image,
                source.log_driver,
                include_volumes=include_volumes,
                include_networks=include_networks,
            )
        ]

    async def events(self, *, since: int | None = None) -> AsyncIterator[RuntimeEvent]:
        self._maybe_fail("events")
        return
        yield

    async def logs(
        self,
        ref: ContainerRef,
        *,
        follow: bool,
        tail: int | None,
        timestamps: bool,
        since: int | None = None,
        until: int | None = None,
    ) -> AsyncIterator[LogChunk]:
        self._maybe_fail("logs")
        self._find(ref)
        for chunk in self.log_chunks:
            yield chunk

    async def close(self) -> None:
        return None


def registry_of(*runtimes: ContainerRuntime, primary: str = "docker") -> RuntimeRegistry:
    """A registry holding the given runtimes, as ``create_app(config, runtimes=...)`` takes it."""
    registry = RuntimeRegistry(primary)
    for runtime in runtimes:
        registry.add(runtime)
    return registry
