"""The host: what the runtime's machine (or cluster) is, and how loaded it is now.

Like every engine route, one runtime answers: the one ``?runtime=`` names, else the primary one
(else the first that can describe its host). Each answer names its ``runtime``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aiohttp import web

from runtimes.engine.system import SpaceEntry, SystemInfo, SystemSource, SystemStats

from ...security.auth import READ_ENGINE, requires
from ...security.ratelimit import rate_pool
from .common import capable_runtime, runtime_call


def _source(request: web.Request) -> SystemSource:
    """The runtime that describes its host, else 409 OPERATION_NOT_SUPPORTED."""
    # mypy takes a Protocol for an abstract class here (python/mypy#4717); isinstance works.
    return capable_runtime(request, SystemSource, "host information")  # type: ignore[type-abstract]


@requires(READ_ENGINE)
@rate_pool("containers")
async def system_info(request: web.Request) -> web.Response:
    info = await runtime_call(
        _source(request).system_info(), "SYSTEM_INFO_FAILED", "Failed to read the host's information"
    )
    return web.json_response(info_json(info))


@requires(READ_ENGINE)
@rate_pool("containers")
async def system_stats(request: web.Request) -> web.Response:
    stats = await runtime_call(
        _source(request).system_stats(), "SYSTEM_STATS_FAILED", "Failed to measure the host"
    )
    return web.json_response(stats_json(stats))


def info_json(info: SystemInfo) -> dict[str, Any]:
    """The runtime's own fields only: Docker's engine details, or a cluster's platform and nodes."""
    body: dict[str, Any] = {
        "runtime": info.runtime,
        "engineVersion": info.engine_version,
        "apiVersion": info.api_version,
        "os": info.os,
        "kernel": info.kernel,
        "architecture": info.architecture,
        "platform": info.platform,
        "nodes": asdict(info.nodes) if info.nodes is not None else None,
        "cpus": _whole(info.cpus),
        "memoryTotal": info.memory_total,
        "storageDriver": info.storage_driver,
        "dockerRootDir": info.docker_root_dir,
        "containers": {k: v for k, v in asdict(info.containers).items() if v is not None},
        "images": info.images,
        "volumes": info.volumes,
    }
    return {k: v for k, v in body.items() if v is not None}


def stats_json(stats: SystemStats) -> dict[str, Any]:
    """Every field present; what cannot be measured from here is null."""
    space = stats.space
    body: dict[str, Any] = {
        "runtime": stats.runtime,
        "cpu": {"percent": stats.cpu.percent, "cores": _whole(stats.cpu.cores)},
        "memory": {
            "used": stats.memory.used,
            "total": stats.memory.total,
            "percent": stats.memory.percent,
        },
        "load": list(stats.load) if stats.load is not None else None,
        "disk": asdict(stats.disk) if stats.disk is not None else None,
        "space": None
        if space is None
        else {
            "images": _entry(space.images),
            "containers": _entry(space.containers),
            "volumes": _entry(space.volumes),
            "buildCache": _entry(space.build_cache),
        },
        "timestamp": stats.timestamp,
    }
    if stats.metrics is not None:
        body["metrics"] = stats.metrics
    return body


def _entry(entry: SpaceEntry) -> dict[str, int]:
    return {"count": entry.count, "size": entry.size, "reclaimable": entry.reclaimable}


def _whole(value: float | None) -> float | int | None:
    """A count of CPUs as an integer when it is one (4, not 4.0); a cluster may have 3.5."""
    return int(value) if value is not None and float(value).is_integer() else value
