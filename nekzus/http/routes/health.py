"""Liveness, readiness and the health summary."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from nekzus import __version__

from ...errors import error_response
from ...keys import CONFIG, MONITOR, REGISTRY, STARTED_AT
from ...security.auth import AUTHORITY, principal_of, public


@public
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _check_all(request: web.Request) -> dict[str, dict[str, Any]]:
    """Each runtime's status, with its version and API version, or why it is unavailable."""
    registry = request.app[REGISTRY]
    monitor = request.app[MONITOR]
    runtimes = list(registry)
    infos = await asyncio.gather(*(monitor.check(rt) for rt in runtimes))
    report: dict[str, dict[str, Any]] = {}
    for runtime, info in zip(runtimes, infos, strict=True):
        if info is None:
            report[runtime.name] = {"status": "unavailable", "reason": monitor.reasons.get(runtime.name, "")}
        else:
            report[runtime.name] = {
                "status": "healthy",
                "version": info.version,
                "apiVersion": info.api_version,
            }
    return report


def _identified(request: web.Request) -> bool:
    """A LAN or authenticated caller, who may see details."""
    return principal_of(request, request.app[AUTHORITY], request.app[CONFIG].auth) is not None


def _statuses(report: dict[str, dict[str, Any]], *, reasons: bool) -> dict[str, dict[str, Any]]:
    """Only each runtime's status (with ``reasons``, also why it is unavailable): versions tell
    an attacker which exploits to try."""
    kept = ("status", "reason") if reasons else ("status",)
    return {name: {k: v for k, v in runtime.items() if k in kept} for name, runtime in report.items()}


@public
async def readyz(request: web.Request) -> web.Response:
    # Public for orchestrators' probes, so it shows statuses only, never versions; why a runtime
    # is unavailable only to a LAN or authenticated caller (a kubelet probes from the pod network).
    report = _statuses(await _check_all(request), reasons=_identified(request))
    if any(r["status"] == "healthy" for r in report.values()):
        return web.json_response({"status": "ready", "runtimes": report})
    return error_response(503, "RUNTIME_UNAVAILABLE", "No container runtime answers", runtimes=report)


@public
async def health(request: web.Request) -> web.Response:
    """Public, but the details (versions, uptime, runtimes) only for a LAN or authenticated caller;
    anyone else learns the status alone."""
    report = await _check_all(request)
    healthy = sum(1 for r in report.values() if r["status"] == "healthy")
    status = "healthy" if report and healthy == len(report) else "degraded" if healthy else "unhealthy"
    if not _identified(request):
        return web.json_response({"status": status})
    return web.json_response(
        {
            "status": status,
            "version": __version__,
            "uptime": int(time.monotonic() - request.app[STARTED_AT]),
            "runtimes": report,
        }
    )
