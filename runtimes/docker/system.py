"""The Engine's host: what it is (``/info``, ``/version``, ``/volumes``) and how loaded it is.

Load (CPU, memory, load average, the data root's disk) is measured with psutil on this machine,
so only when the Engine is on it too (a unix socket): the gateway cannot measure a remote host,
and says so with nulls rather than report its own machine. Space per kind comes from the Engine's
``/system/df``, which walks every layer and volume and can take seconds on a big host: it is kept
for ``SPACE_SECONDS`` and asked by one caller at a time, the others waiting for that answer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import psutil

from ..engine.system import (
    ContainerCounts,
    CpuUsage,
    DiskUsage,
    MemoryUsage,
    SpaceEntry,
    SpaceUsage,
    SystemInfo,
    SystemStats,
)
from ..errors import Conflict, OperationFailed
from .session import EngineSession

log = logging.getLogger(__name__)

SPACE_SECONDS = 30.0
# /system/df on a host with thousands of layers takes long; it is never asked twice at once.
SPACE_TIMEOUT = 120.0
# A CPU rate over less than this is mostly noise: a caller within it gets the last rate again.
CPU_WINDOW = 0.5
# Docker's states with live processes: their writable layers are not reclaimable.
_LIVE = ("running", "paused", "restarting")


class CpuMeter:
    """The host's CPU busy percentage between two samples of the kernel's counters that the meter
    keeps itself, so a call never blocks for an interval (as ``cpu_percent(interval=1)`` would)
    and no other user of psutil's module-wide sample moves its window."""

    def __init__(self) -> None:
        self._at = time.monotonic()
        self._times = psutil.cpu_times()
        self._percent: float | None = None

    def percent(self) -> float | None:
        """The busy share since the previous sample (at least ``CPU_WINDOW`` ago, else that
        sample's rate again); None until the counters have moved at all."""
        now = time.monotonic()
        if self._percent is not None and now - self._at < CPU_WINDOW:
            return self._percent
        times = psutil.cpu_times()
        total = _total(times) - _total(self._times)
        if total <= 0:
            return self._percent
        busy = total - (_idle(times) - _idle(self._times))
        self._percent = round(min(100.0, max(0.0, busy / total * 100)), 1)
        self._at, self._times = now, times
        return self._percent


def _total(times: Any) -> float:
    # Linux counts guest time inside user time already.
    return float(sum(times)) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


def _idle(times: Any) -> float:
    return float(times.idle) + getattr(times, "iowait", 0.0)


def is_local(host: str) -> bool:
    """Whether an Engine at ``host`` runs on this machine (a unix socket)."""
    return host.startswith("unix://")


class HostSystem:
    """The host of one Engine, measured locally when the Engine is local."""

    def __init__(self, session: EngineSession, runtime: str, *, local: bool) -> None:
        self._session = session
        self._runtime = runtime
        self._cpu = CpuMeter() if local else None
        self._space: tuple[float, SpaceUsage] | None = None
        self._space_lock = asyncio.Lock()

    async def info(self) -> SystemInfo:
        """One call each to ``/info``, ``/version`` and ``/volumes``, at the same time."""
        results = await asyncio.gather(
            self._session.json("info"),
            self._session.json("version", versioned=False),
            self._session.json("volumes"),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):  # raised once every call has ended: none leaks
                raise result
        info, version, volumes = results
        assert isinstance(info, dict) and isinstance(version, dict) and isinstance(volumes, dict)
        root = info.get("DockerRootDir")
        return SystemInfo(
            runtime=self._runtime,
            engine_version=str(version.get("Version", "")),
            api_version=str(version.get("ApiVersion", "")),
            os=str(info.get("OperatingSystem", "")),
            kernel=str(info.get("KernelVersion", "")),
            architecture=str(info.get("Architecture", "")),
            cpus=_number(info.get("NCPU")),
            memory_total=int(_number(info.get("MemTotal"))),
            storage_driver=str(info.get("Driver", "")),
            docker_root_dir=str(root) if root else None,
            containers=ContainerCounts(
                total=int(_number(info.get("Containers"))),
                running=int(_number(info.get("ContainersRunning"))),
                paused=int(_number(info.get("ContainersPaused"))),
                stopped=int(_number(info.get("ContainersStopped"))),
            ),
            images=int(_number(info.get("Images"))),
            volumes=len(volumes.get("Volumes") or ()),
        )

    async def stats(self) -> SystemStats:
        results = await asyncio.gather(self._session.daemon_info(), self.space(), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        info, space = results
        assert isinstance(info, dict) and (space is None or isinstance(space, SpaceUsage))
        cores = _number(info.get("NCPU")) or None
        total = int(_number(info.get("MemTotal"))) or None
        if self._cpu is None:
            return SystemStats(
                runtime=self._runtime,
                cpu=CpuUsage(None, cores),
                memory=MemoryUsage(None, total, None),
                load=None,
                disk=None,
                space=space,
                timestamp=int(time.time()),
            )
        memory = psutil.virtual_memory()
        used = int(memory.total - memory.available)
        one, five, fifteen = os.getloadavg()
        return SystemStats(
            runtime=self._runtime,
            cpu=CpuUsage(self._cpu.percent(), cores),
            memory=MemoryUsage(used, int(memory.total), round(used / memory.total * 100, 1)),
            load=(round(one, 2), round(five, 2), round(fifteen, 2)),
            disk=await _disk(str(info.get("DockerRootDir") or "")),
            space=space,
            timestamp=int(time.time()),
        )

    async def space(self) -> SpaceUsage | None:
        """``docker system df`` per kind, at most ``SPACE_SECONDS`` old; one request at a time.

        The Engine refuses a second disk-usage walk while one runs (for any client): the last
        figures answer then, else None. A dead Engine is raised as Unavailable.
        """
        known = self._space
        if known is not None and time.monotonic() - known[0] < SPACE_SECONDS:
            return known[1]
        async with self._space_lock:
            known = self._space
            if known is not None and time.monotonic() - known[0] < SPACE_SECONDS:
                return known[1]
            try:
                df = await self._session.json("system/df", timeout=SPACE_TIMEOUT)
            except (Conflict, OperationFailed) as exc:
                log.warning("the Engine's disk usage is unknown for now: %s", exc)
                return known[1] if known is not None else None
            usage = space_usage(df)
            self._space = (time.monotonic(), usage)
            return usage


async def _disk(path: str) -> DiskUsage | None:
    """The file system of the Engine's data root, when that path is visible here (a gateway in a
    container sees it only if it is mounted). statvfs can hang on a network file system: it runs
    off the event loop."""
    if not path:
        return None
    try:
        usage = await asyncio.to_thread(psutil.disk_usage, path)
    except OSError as exc:
        log.debug("no disk usage of %s: %s", path, exc)
        return None
    return DiskUsage(path, int(usage.used), int(usage.total), round(float(usage.percent), 1))


def space_usage(df: Mapping[str, Any]) -> SpaceUsage:
    """The Engine's ``/system/df`` reduced as the Docker CLI's ``docker system df`` does."""
    images = _items(df.get("Images"))
    layers = int(_number(df.get("LayersSize")))
    # An image a container uses keeps its own layers; shared layers count once, in LayersSize.
    used = sum(
        int(_number(i.get("Size"))) - int(_number(i.get("SharedSize")))
        for i in images
        if int(_number(i.get("Containers"))) > 0 and i.get("SharedSize", -1) != -1
    )
    containers = _items(df.get("Containers"))
    # (bytes, containers using it) of each volume whose size the Engine measured (-1: not measured).
    volumes = [
        (int(_number(usage.get("Size"))), int(_number(usage.get("RefCount"))))
        for usage in (v.get("UsageData") or {} for v in _items(df.get("Volumes")))
        if _number(usage.get("Size")) >= 0
    ]
    cache = _items(df.get("BuildCache"))
    return SpaceUsage(
        images=SpaceEntry(len(images), layers, max(layers - used, 0)),
        containers=SpaceEntry(
            len(containers),
            sum(int(_number(c.get("SizeRw"))) for c in containers),
            sum(int(_number(c.get("SizeRw"))) for c in containers if str(c.get("State", "")) not in _LIVE),
        ),
        volumes=SpaceEntry(
            len(_items(df.get("Volumes"))),
            sum(size for size, _ in volumes),
            sum(size for size, users in volumes if not users),
        ),
        build_cache=SpaceEntry(
            len(cache),
            sum(int(_number(b.get("Size"))) for b in cache if not b.get("Shared")),
            sum(int(_number(b.get("Size"))) for b in cache if not b.get("Shared") and not b.get("InUse")),
        ),
    )


def _items(value: Any) -> Sequence[Mapping[str, Any]]:
    """A list of objects from the Engine, which sends null for an empty one."""
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _number(value: Any) -> float:
    """A count or size the Engine reported; 0 for a missing or malformed one."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
