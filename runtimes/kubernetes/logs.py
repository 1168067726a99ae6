"""Log streams of a pod's container, or of one running pod of a workload entry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from .. import kubeobjects as ko
from ..base import ContainerRef, LogChunk
from ..errors import NotFound, Unavailable
from .client import ApiSession, until
from .paths import ManagedNamespaces, pod_path
from .queries import Queries

_STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=None)


async def stream_logs(
    session: ApiSession,
    namespaces: ManagedNamespaces,
    queries: Queries,
    ref: ContainerRef,
    *,
    follow: bool,
    tail: int | None,
    timestamps: bool,
    since: int | None,
) -> AsyncIterator[LogChunk]:
    """The container's log as it comes, in the chunks the apiserver sends (all marked stdout)."""
    namespace = namespaces.of(ref)
    if ko.WORKLOAD_ID.fullmatch(ref.id):
        # One pod of the workload, the one kubectl would pick; when it goes, the log session
        # asks again and goes on with another from the last line's time. While the workload
        # replaces all its pods at once, this waits for one to run.
        running: list[dict[str, Any]] = []

        async def some_running() -> bool:
            running[:] = await queries.running_pods(namespace, ref.id)
            return bool(running)

        await until(some_running, f"{ref.id} to have a running pod", session.ready_timeout)
        pod = running[0]
    else:
        pod = await queries.pod(ref)
    pod_name = str((pod.get("metadata") or {}).get("name", ""))
    names = [str(c.get("name", "")) for c in (pod.get("spec") or {}).get("containers") or ()]
    container = ref.container or (names[0] if names else "")
    if container not in names:
        raise NotFound(
            f"pod {pod_name} has no container {container!r}",
            detail=f"Pod {pod_name} has no container {container!r}; it has {', '.join(names)}",
        )
    query: dict[str, Any] = {
        "container": container,
        "follow": "true" if follow else "false",
        "timestamps": "true" if timestamps else "false",
        "tailLines": tail,
        "sinceTime": ko.rfc3339(since) if since is not None else None,
    }
    response = await session.open(
        "GET", f"{pod_path(namespace, pod_name)}/log", query=query, timeout=_STREAM_TIMEOUT
    )
    try:
        # Kubernetes sends plain text (no stream headers) and does not tell stdout from stderr.
        async for data in response.content.iter_any():
            yield LogChunk("stdout", data)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise Unavailable(f"the log stream of {namespace}/{pod_name} broke off: {exc!r}") from exc
    finally:
        response.release()
