"""The readiness probe, whose verdict opens or closes the session's outage gate."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping

import aiohttp

from ..base import RuntimeInfo
from ..errors import Unavailable
from .client import ApiSession, raise_status

# The readiness probe's bound: the apiserver takes 2 s to report a dead etcd on its /readyz, and the
# gateway's monitor gives a probe 5 s in all.
_PROBE_TIMEOUT = aiohttp.ClientTimeout(total=4, sock_connect=4)
_FAILED_CHECK = re.compile(r"^\[-\]([\w./-]+) failed", re.MULTILINE)


async def ping(session: ApiSession, watch_trouble: Mapping[str, str], runtime: str) -> RuntimeInfo:
    """The apiserver's version, if its own /readyz passes.

    /version is answered from memory even with etcd dead; /readyz checks etcd (and fails in
    about 2 s without it), so it is what tells whether calls can work. Its verdict opens or
    closes the gate every other call passes (:meth:`ApiSession.open`). A pod watch that is silent
    or being reopened (``watch_trouble``) makes the probe fail too, but closes no gate: calls
    still reach the apiserver.
    """
    results = await asyncio.gather(
        session.json("GET", "/version", timeout=_PROBE_TIMEOUT, gated=False),
        _readiness(session),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    down = next((f for f in failures if isinstance(f, Unavailable)), None)
    session.outage = (down.detail or "The Kubernetes runtime is not available") if down else None
    if failures:
        raise failures[0]
    version = results[0]
    assert isinstance(version, dict)
    trouble = next(iter(watch_trouble.values()), None)
    if trouble is not None:
        raise Unavailable(f"pod watch: {trouble}", detail=trouble)
    return RuntimeInfo(runtime, str(version.get("gitVersion", "")), "v1")


async def _readiness(session: ApiSession) -> None:
    """Unavailable unless the apiserver's /readyz answers 200."""
    response = await session.open("GET", "/readyz", timeout=_PROBE_TIMEOUT, gated=False, checked=False)
    try:
        text = await response.text()
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        response.close()
        detail = "The Kubernetes API did not answer its readiness check in time"
        raise Unavailable(f"{detail}: {exc!r}", detail=detail) from exc
    finally:
        response.release()
    if response.status == 200:
        return
    if response.status in (403, 404):  # an account without the (default) /readyz permission
        raise_status(response.status, text, "GET /readyz")
    failing = ", ".join(_FAILED_CHECK.findall(text))
    raise Unavailable(
        f"the Kubernetes API server is not ready: [{response.status}] {text[:300]}",
        detail=f"The Kubernetes API server is not ready (failing: {failing})"
        if failing
        else f"The Kubernetes API server is not ready ({response.status})",
    )
