"""A stack's logs over REST: the lines of its services' containers merged in time order, each
tagged with its service and container, with the container logs' options and search.

Each container is read as a container log is (routes/logs.py), always with the Engine's time
stamps, which is what orders the merge; a few containers are read at a time. A JSON answer holds
at most ``limit`` lines from each container before the merge cuts it to ``limit``; a download
merges the containers' streams line by line and keeps one line of each in the gateway.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from aiohttp import web

from runtimes import ContainerRef, ContainerRuntime, ContainerSummary, LogChunk, NotFound, RuntimeFailure
from runtimes.loglines import LineSplitter, split_lines

from ...errors import ApiError, invalid_request
from ...logsearch import LINE_BYTES, LogExcerpt, LogLine
from ...realtime.logrequest import InvalidSubscription, parse_since
from ...security.auth import READ_STACKS, requires
from ...security.guard import refuse_foreign_read
from ...security.ratelimit import rate_pool
from ...stacks.model import SERVICE, Stack
from .logs import (
    LOG_PARAMETERS,
    LogQuery,
    close_stream,
    download_response,
    log_error,
    log_query,
    read_log,
    search_log,
    window,
)
from .stack_common import find_stack, stack_runtime

log = logging.getLogger(__name__)

# Containers whose logs are read at the same time for one answer.
READ_CONCURRENCY = 4
_PARAMETERS = LOG_PARAMETERS | {"services", "runtime"}
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Source:
    """One container of the stack whose log is read, and the tags its lines carry."""

    service: str
    container: ContainerSummary


@dataclass(frozen=True, slots=True)
class _Tagged:
    """One line of the merged answer: its time (the merge's order), its container and the line."""

    at: tuple[int, int]
    source: _Source
    line: LogLine


def chosen_services(stack: Stack, names: Sequence[str] | None) -> list[str]:
    """The services named (all the stack's when None); one the stack does not have is
    ``400 INVALID_REQUEST`` naming it."""
    if names is None:
        return list(stack.services)
    unknown = [name for name in names if name not in stack.services]
    if unknown:
        shown = unknown[0] if len(unknown[0]) <= 64 else unknown[0][:61] + "..."
        raise invalid_request(f"services: stack {stack.name!r} has no service {shown!r}")
    return list(dict.fromkeys(names))


def _service_names(request: web.Request) -> list[str] | None:
    """``services=a,b`` as names; None when absent."""
    raw = request.query.get("services")
    if raw is None:
        return None
    names = [name.strip() for name in raw.split(",")]
    if not all(names):
        raise invalid_request("Query parameter 'services' must be service names separated by commas")
    return names


def _sources(stack: Stack, services: Collection[str]) -> list[_Source]:
    return [
        _Source(c.labels.get(SERVICE, ""), c) for c in stack.containers if c.labels.get(SERVICE) in services
    ]


def _nanos(stamp: str | None) -> tuple[int, int]:
    if stamp is None:
        return (0, 0)
    try:
        return parse_since(stamp)
    except InvalidSubscription:
        return (0, 0)


async def _each(sources: Sequence[_Source], read: Callable[[_Source], Awaitable[_T]]) -> list[_T | None]:
    """``read`` of every source, ``READ_CONCURRENCY`` at a time, in the sources' order; None for a
    container that went away meanwhile (a stack being recreated loses containers while read)."""
    gate = asyncio.Semaphore(READ_CONCURRENCY)

    async def one(source: _Source) -> _T | None:
        async with gate:
            try:
                return await read(source)
            except ApiError as exc:
                if exc.status == 404:
                    return None
                raise

    return list(await asyncio.gather(*(one(source) for source in sources)))


def _merge(sources: Sequence[_Source], excerpts: Sequence[LogExcerpt | None]) -> list[_Tagged]:
    """Every container's lines in time order; a tie keeps the sources' order (service, name)."""
    runs = [
        [_Tagged(_nanos(line.stamp), source, line) for line in excerpt.lines]
        for source, excerpt in zip(sources, excerpts, strict=True)
        if excerpt is not None
    ]
    return list(heapq.merge(*runs, key=lambda tagged: tagged.at))


def _line_json(tagged: _Tagged, options: LogQuery, *, numbered: bool) -> dict[str, Any]:
    container = tagged.source.container
    body: dict[str, Any] = {
        "service": tagged.source.service,
        "container": container.name,
        "containerId": container.id,
        "stream": tagged.line.stream,
        "timestamp": tagged.at[0],
        "text": tagged.line.text,
    }
    if numbered:
        # The line's number in what was read of its own container's log.
        body["lineNumber"] = tagged.line.number
    if options.timestamps:
        body["time"] = tagged.line.stamp
    return body


@requires(READ_STACKS)
@rate_pool("containers")
async def stack_logs(request: web.Request) -> web.StreamResponse:
    refuse_foreign_read(request, "logs")
    options = log_query(request, _PARAMETERS)
    stack = await find_stack(request)
    runtime = stack_runtime(request)
    services = chosen_services(stack, _service_names(request))
    sources = _sources(stack, services)
    # The Engine's time stamps order the merge: always asked for, shown only when wanted.
    stamped = replace(options, timestamps=True)
    if options.download:
        return await _download(request, runtime, stack.name, sources, stamped, options.timestamps)
    search = options.search
    if search is not None:

        async def searched(source: _Source) -> LogExcerpt:
            ref = ContainerRef(source.container.id)
            return await search_log(request, runtime, ref, search, stamped, source.container.id)

        found = await _each(sources, searched)
        merged = _merge(sources, found)
        return web.json_response(
            {
                "stack": stack.name,
                "matches": [_line_json(t, options, numbered=True) for t in merged[: options.limit]],
                "truncated": len(merged) > options.limit or any(e is not None and e.truncated for e in found),
                "scanned": sum(e.scanned for e in found if e is not None),
            }
        )

    async def read(source: _Source) -> LogExcerpt:
        return await read_log(runtime, ContainerRef(source.container.id), stamped, source.container.id)

    excerpts = await _each(sources, read)
    merged = _merge(sources, excerpts)
    keep = options.limit if options.tail is None else min(options.tail, options.limit)
    kept = merged[-keep:] if keep else []
    return web.json_response(
        {
            "stack": stack.name,
            "lines": [_line_json(t, options, numbered=False) for t in kept],
            "truncated": len(merged) > len(kept) or any(e is not None and e.truncated for e in excerpts),
        }
    )


async def _stamped_lines(
    chunks: AsyncIterator[LogChunk], streams: Collection[str]
) -> AsyncGenerator[tuple[tuple[int, int], bytes, bytes], None]:
    """(time, stamp, text) of each line of the chosen streams of one time-stamped log."""
    splitter = LineSplitter()

    def line(raw: bytes) -> tuple[tuple[int, int], bytes, bytes]:
        if raw.endswith(b"\r"):
            raw = raw[:-1]  # TTY output ends lines with CRLF
        stamp, _, text = raw.partition(b" ")
        return _nanos(stamp.decode("ascii", "replace")), stamp, text[:LINE_BYTES]

    async for chunk in chunks:
        if chunk.data and chunk.stream in streams:
            for raw in split_lines(splitter.feed(chunk.stream, chunk.data)):
                yield line(raw)
    for _, rest in splitter.flush():
        yield line(rest)


async def _download(
    request: web.Request,
    runtime: ContainerRuntime,
    name: str,
    sources: Sequence[_Source],
    options: LogQuery,
    timestamps: bool,
) -> web.StreamResponse:
    """The merged text, ``service | line`` a line, written no faster than the client reads it.

    The merge needs the next line of every container, so each one's stream is open for the whole
    download (one line of each held in the gateway). The first line of each is awaited before the
    answer starts, so a container that cannot be read is still an error answer.
    """
    streams: list[AsyncIterator[LogChunk]] = []
    readers: list[AsyncGenerator[tuple[tuple[int, int], bytes, bytes], None]] = []
    try:
        heads: list[tuple[tuple[int, int], int, bytes, bytes]] = []
        for index, source in enumerate(sources):
            chunks = runtime.logs(
                ContainerRef(source.container.id), follow=False, tail=options.tail, timestamps=True,
                **window(options),
            )  # fmt: skip
            streams.append(chunks)
            reader = _stamped_lines(chunks, options.streams)
            readers.append(reader)
            try:
                at, stamp, text = await anext(reader)
            except (StopAsyncIteration, NotFound):
                continue  # nothing to read, or a container removed meanwhile (as in JSON)
            except RuntimeFailure as exc:
                raise log_error(exc, source.container.id) from exc
            heads.append((at, index, stamp, text))
        heapq.heapify(heads)
        response = await download_response(request, name)
        prefixes = [f"{source.service} | ".encode() for source in sources]
        try:
            while heads:
                at, index, stamp, text = heads[0]
                # Back-pressure: write() waits while the client's socket is full.
                await response.write(prefixes[index] + (stamp + b" " if timestamps else b"") + text + b"\n")
                try:
                    at, stamp, text = await anext(readers[index])
                except StopAsyncIteration:
                    heapq.heappop(heads)
                    continue
                heapq.heapreplace(heads, (at, index, stamp, text))
        except RuntimeFailure as exc:
            log.warning("the log download of stack %s broke off: %s", name, exc)
            if request.transport is not None:
                request.transport.close()
            return response
        except ConnectionResetError:
            log.info("the client of the log download of stack %s went away", name)
            return response
        await response.write_eof()
        return response
    finally:
        # The line readers first (they stop reading), then the runtime's streams (released).
        for reader in readers:
            await reader.aclose()
        await asyncio.gather(*(close_stream(chunks) for chunks in streams), return_exceptions=True)
