"""Log streams of a pod's container, or of one running pod of a workload entry."""

from __future__ import annotations

import calendar
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from .. import kubeobjects as ko
from ..base import ContainerRef, LogChunk
from ..errors import NotFound, Unavailable
from ..loglines import LineSplitter
from .client import ApiSession
from .client import until as wait_until
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
    until: int | None = None,
) -> AsyncIterator[LogChunk]:
    """The container's log as it comes, in the chunks the apiserver sends (all marked stdout).

    The API has no ``until``: for one, the lines are asked with their time stamps and handed on
    up to the first line after it (the log is in time order), without the stamps unless asked.
    """
    namespace = namespaces.of(ref)
    if ko.WORKLOAD_ID.fullmatch(ref.id):
        # One pod of the workload, the one kubectl would pick; when it goes, the log session
        # asks again and goes on with another from the last line's time. While the workload
        # replaces all its pods at once, this waits for one to run.
        running: list[dict[str, Any]] = []

        async def some_running() -> bool:
            running[:] = await queries.running_pods(namespace, ref.id)
            return bool(running)

        await wait_until(some_running, f"{ref.id} to have a running pod", session.ready_timeout)
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
        "timestamps": "true" if timestamps or until is not None else "false",
        "tailLines": tail,
        "sinceTime": ko.rfc3339(since) if since is not None else None,
    }
    response = await session.open(
        "GET", f"{pod_path(namespace, pod_name)}/log", query=query, timeout=_STREAM_TIMEOUT
    )
    try:
        # Kubernetes sends plain text (no stream headers) and does not tell stdout from stderr.
        chunks: AsyncIterator[LogChunk] = (
            LogChunk("stdout", data) async for data in response.content.iter_any()
        )
        if until is not None:
            chunks = _until(chunks, until, keep_stamps=timestamps)
        async for chunk in chunks:
            yield chunk
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise Unavailable(f"the log stream of {namespace}/{pod_name} broke off: {exc!r}") from exc
    finally:
        response.release()


async def _until(
    chunks: AsyncIterator[LogChunk], until: int, *, keep_stamps: bool
) -> AsyncIterator[LogChunk]:
    """The lines of ``chunks`` (each with its time stamp) stamped no later than ``until`` (Unix
    seconds), stamps removed unless ``keep_stamps``; ends at the first line after ``until``."""
    splitter = LineSplitter()
    cache = _StampSeconds()
    async for chunk in chunks:
        block = splitter.feed(chunk.stream, chunk.data)
        kept, done = _lines_until(block, until, cache, keep_stamps)
        if kept:
            yield LogChunk(chunk.stream, kept)
        if done:
            return
    for stream, rest in splitter.flush():
        kept, _ = _lines_until(rest + b"\n", until, cache, keep_stamps)
        if kept:
            yield LogChunk(stream, kept[:-1])


def _lines_until(block: bytes, until: int, cache: _StampSeconds, keep_stamps: bool) -> tuple[bytes, bool]:
    """The lines of ``block`` up to ``until`` and whether a later line came (nothing more is kept)."""
    if not block:
        return b"", False
    last = block.rfind(b"\n", 0, len(block) - 1) + 1
    if cache.not_after(block[last : last + 31], until):
        # The block's last line is in time, and so is every line before it.
        return (block if keep_stamps else _unstamped(block)), False
    kept: list[bytes] = []
    for line in block.split(b"\n")[:-1]:
        if not cache.not_after(line[:31], until):
            return _joined(kept, keep_stamps), True
        kept.append(line)
    return _joined(kept, keep_stamps), False


def _joined(lines: list[bytes], keep_stamps: bool) -> bytes:
    if not lines:
        return b""
    return b"\n".join(lines if keep_stamps else (line.partition(b" ")[2] for line in lines)) + b"\n"


def _unstamped(block: bytes) -> bytes:
    return b"\n".join(line.partition(b" ")[2] for line in block.split(b"\n")[:-1]) + b"\n"


class _StampSeconds:
    """Reads the kubelet's RFC 3339 line stamps, parsing each distinct second once."""

    def __init__(self) -> None:
        self._prefix = b""
        self._seconds = 0

    def not_after(self, stamp: bytes, until: int) -> bool:
        """Whether a line stamped ``stamp`` (``2006-01-02T15:04:05.999999999Z``) is at or before
        ``until``; a line without a readable stamp is kept."""
        prefix = stamp[:19]
        if prefix != self._prefix:
            try:
                self._seconds = calendar.timegm(time.strptime(prefix.decode("ascii"), "%Y-%m-%dT%H:%M:%S"))
            except (UnicodeDecodeError, ValueError):
                return True
            self._prefix = prefix
        if self._seconds != until:
            return self._seconds < until
        fraction = stamp[20:].partition(b"Z")[0]
        return stamp[19:20] != b"." or not fraction.strip(b"0")
