"""The host a runtime runs on: what it is (versions, size, counts) and how loaded it is now.

Docker answers for its Engine's machine, Kubernetes for its cluster (nodes summed). Fields a
runtime cannot know are None: the gateway renders them as ``null`` or leaves them out, it never
invents a figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ContainerCounts:
    """Containers (pods, on Kubernetes) by state. ``pending`` and ``failed`` are Kubernetes phases
    (None for Docker); every container is counted once, so the parts add up to ``total``."""

    total: int
    running: int
    paused: int
    stopped: int
    pending: int | None = None
    failed: int | None = None


@dataclass(frozen=True, slots=True)
class NodeCounts:
    """A cluster's nodes, and how many of them report Ready."""

    total: int
    ready: int


@dataclass(frozen=True, slots=True)
class SystemInfo:
    """What a runtime's host is. The Docker-only fields are None on Kubernetes, and ``platform``
    and ``nodes`` are None on Docker."""

    runtime: str
    engine_version: str
    cpus: float
    memory_total: int
    containers: ContainerCounts
    api_version: str | None = None
    os: str | None = None
    kernel: str | None = None
    architecture: str | None = None
    storage_driver: str | None = None
    docker_root_dir: str | None = None
    images: int | None = None
    volumes: int | None = None
    platform: str | None = None
    nodes: NodeCounts | None = None


@dataclass(frozen=True, slots=True)
class CpuUsage:
    """``percent`` of all ``cores`` busy (0–100); None when it cannot be measured from here."""

    percent: float | None
    cores: float | None


@dataclass(frozen=True, slots=True)
class MemoryUsage:
    used: int | None
    total: int | None
    percent: float | None


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """The file system holding ``path`` (the Engine's data root)."""

    path: str
    used: int
    total: int
    percent: float


@dataclass(frozen=True, slots=True)
class SpaceEntry:
    """One kind of the Engine's objects as ``docker system df`` counts it: how many, the bytes
    they hold, and the bytes a prune could free."""

    count: int
    size: int
    reclaimable: int


@dataclass(frozen=True, slots=True)
class SpaceUsage:
    images: SpaceEntry
    containers: SpaceEntry
    volumes: SpaceEntry
    build_cache: SpaceEntry


@dataclass(frozen=True, slots=True)
class SystemStats:
    """How loaded the host is now. ``load`` is the 1, 5 and 15 minute load average; ``metrics``
    says whether Kubernetes' metrics API answered ("available" / "unavailable", None for Docker)."""

    runtime: str
    cpu: CpuUsage
    memory: MemoryUsage
    load: tuple[float, float, float] | None
    disk: DiskUsage | None
    space: SpaceUsage | None
    timestamp: int
    metrics: str | None = None


@runtime_checkable
class SystemSource(Protocol):
    """A runtime that can describe and measure its host."""

    async def system_info(self) -> SystemInfo:
        """Versions, size and counts of the host; Unavailable when the runtime is down,
        Forbidden when its credentials may not read what this needs."""
        ...

    async def system_stats(self) -> SystemStats:
        """The host's load now; parts the runtime cannot measure are None."""
        ...
