"""A container's log over REST: the last lines as JSON, a search of the whole log, or the raw text
as a download that streams at the pace the client reads.

Every answer is bounded: JSON holds at most ``limit`` lines (the most recent ones, or the first
matches of a search), and a download keeps no more than the runtime's current chunk in the
gateway, however slowly the client reads, and closes the runtime's stream when the client goes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web

from runtimes import (
    ContainerRef,
    ContainerRuntime,
    ContainerState,
    LogChunk,
    RawLogSource,
    RuntimeFailure,
    Unsupported,
)

from ...errors import ApiError, container_not_running, invalid_request
from ...keys import LOG_SEARCHES
from ...logsearch import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    InvalidSearch,
    LogExcerpt,
    LogLine,
    LogSearch,
    read_lines,
    search_lines,
)
from ...logsearch_process import SearchFailed, search_raw_log
from ...params import bool_query, container_id, int_query, is_valid_container_name, namespace_value
from ...realtime.logrequest import InvalidSubscription, parse_since
from ...security.auth import READ_CONTAINERS, requires
from ...security.guard import refuse_foreign_read
from ...security.ratelimit import rate_pool
from .common import runtime_error, runtime_for

log = logging.getLogger(__name__)

MAX_TAIL = 100_000
STREAMS: dict[str, frozenset[str]] = {
    "all": frozenset({"stdout", "stderr"}),
    "stdout": frozenset({"stdout"}),
    "stderr": frozenset({"stderr"}),
}
# The options every log answer takes; a route adds those that name what is read.
LOG_PARAMETERS = frozenset(
    {
        "tail",
        "since",
        "until",
        "timestamps",
        "stream",
        "search",
        "combinator",
        "invert",
        "regex",
        "caseSensitive",
        "limit",
        "download",
    }
)
_CONTAINER_PARAMETERS = LOG_PARAMETERS | {"container", "runtime", "namespace"}
_SEARCH_ONLY = ("combinator", "invert", "regex", "caseSensitive")
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True, slots=True)
class LogQuery:
    """What a client asks of a log, checked: which lines, in which form."""

    tail: int | None
    since: int | None
    until: int | None
    timestamps: bool
    streams: frozenset[str]
    limit: int
    search: LogSearch | None
    download: bool


def _choice(request: web.Request, name: str, choices: Collection[str], default: str) -> str:
    value = request.query.get(name, default)
    if value not in choices:
        raise invalid_request(f"Query parameter {name!r} must be one of {', '.join(sorted(choices))}")
    return value


def _time(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return parse_since(raw)[0]
    except InvalidSubscription:
        raise invalid_request(
            f"Query parameter {name!r} must be an RFC 3339 time or Unix seconds, from 1970 to the year 9999"
        ) from None


def _wants_text(request: web.Request) -> bool:
    """``?download=true``, or an ``Accept`` that names text/plain and not JSON."""
    if bool_query(request, "download"):
        return True
    accept = request.headers.get(hdrs.ACCEPT, "").lower()
    return "text/plain" in accept and "application/json" not in accept


def log_query(request: web.Request, allowed: frozenset[str] = LOG_PARAMETERS) -> LogQuery:
    """The request's log parameters (``allowed`` names every parameter the route takes); anything
    unknown, repeated or out of range is 400, naming it."""
    query = request.query
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise invalid_request(f"Unknown query parameter(s): {', '.join(map(repr, unknown))}")
    repeated = sorted(name for name in set(query) if name != "search" and len(query.getall(name)) > 1)
    if repeated:
        raise invalid_request(f"Query parameter {repeated[0]!r} may be given once")
    since, until = _time(request, "since"), _time(request, "until")
    if since is not None and until is not None and since > until:
        raise invalid_request("Query parameter 'since' must not be after 'until'")
    terms = query.getall("search", [])
    download = _wants_text(request)
    search = None
    if terms:
        if download:
            raise invalid_request("A search answers JSON: search and download cannot be combined")
        combinator = _choice(request, "combinator", ("and", "or"), "and")
        try:
            search = LogSearch(
                terms,
                any_term=combinator == "or",
                invert=bool_query(request, "invert"),
                regex=bool_query(request, "regex"),
                case_sensitive=bool_query(request, "caseSensitive"),
            )
        except InvalidSearch as exc:
            raise invalid_request(f"Query parameter 'search': {exc}") from None
    else:
        stray = [name for name in _SEARCH_ONLY if name in query]
        if stray:
            raise invalid_request(f"Query parameter {stray[0]!r} needs a 'search' term")
    limit = int_query(request, "limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    if download and "limit" in query:
        raise invalid_request("Query parameter 'limit' bounds a JSON answer; a download has no limit")
    return LogQuery(
        tail=int_query(request, "tail", default=None, minimum=0, maximum=MAX_TAIL),
        since=since,
        until=until,
        timestamps=bool_query(request, "timestamps"),
        streams=STREAMS[_choice(request, "stream", STREAMS, "all")],
        limit=limit or DEFAULT_LIMIT,
        search=search,
        download=download,
    )


async def close_stream(chunks: AsyncIterator[LogChunk]) -> None:
    """Ends the runtime's stream at once (its connection to the daemon is released)."""
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


def _line_json(line: LogLine, *, numbered: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"lineNumber": line.number} if numbered else {}
    body["stream"] = line.stream
    body["line"] = line.text
    if line.stamp is not None:
        try:
            body["timestamp"] = parse_since(line.stamp)[0]
        except InvalidSubscription:
            body["timestamp"] = None
    return body


@requires(READ_CONTAINERS)
@rate_pool("containers")
async def container_logs(request: web.Request) -> web.StreamResponse:
    refuse_foreign_read(request, "logs")
    cid = container_id(request)
    runtime = runtime_for(request)
    namespace = namespace_value(request)
    container = request.query.get("container", "")
    if container and not is_valid_container_name(container):
        raise invalid_request("Query parameter 'container' must be the name of a container in the pod")
    options = log_query(request, _CONTAINER_PARAMETERS)
    ref = ContainerRef(cid, namespace, container)
    try:
        current = await runtime.get(ref)
    except RuntimeFailure as exc:
        raise log_error(exc, cid) from exc
    if current.controller == current.id and current.state is ContainerState.STOPPED:
        # A workload entry (its own controller) scaled to 0 has no pod whose log could be read.
        raise container_not_running(cid, f"{current.id} is not running: it is stopped")
    if options.download:
        return await _download(request, runtime, ref, options, current.name or current.id)
    if options.search is not None:
        excerpt = await search_log(request, runtime, ref, options.search, options, cid)
        return web.json_response(
            {
                "containerId": current.id,
                "matches": [_line_json(line, numbered=True) for line in excerpt.lines],
                "truncated": excerpt.truncated,
                "scanned": excerpt.scanned,
            }
        )
    excerpt = await read_log(runtime, ref, options, cid)
    return web.json_response(
        {
            "containerId": current.id,
            "lines": [_line_json(line, numbered=False) for line in excerpt.lines],
            "truncated": excerpt.truncated,
        }
    )


def window(options: LogQuery) -> dict[str, int | None]:
    return {"since": options.since, "until": options.until}


async def search_log(
    request: web.Request,
    runtime: ContainerRuntime,
    ref: ContainerRef,
    search: LogSearch,
    options: LogQuery,
    cid: str,
) -> LogExcerpt:
    """The matching lines of the whole log (or of what ``tail``, ``since`` and ``until`` select).

    A runtime that hands on its log undecoded has it searched by a helper process, which keeps
    the CPU work of a large log out of the event loop; a few at a time, the others wait their turn.
    """
    if isinstance(runtime, RawLogSource):
        async with request.app[LOG_SEARCHES]:
            try:
                raw = await runtime.raw_logs(
                    ref, tail=options.tail, timestamps=options.timestamps, **window(options)
                )
            except Unsupported:
                raw = None
            except RuntimeFailure as exc:
                raise log_error(exc, cid) from exc
            if raw is not None:
                try:
                    return await search_raw_log(
                        raw,
                        search,
                        limit=options.limit,
                        streams=options.streams,
                        timestamps=options.timestamps,
                    )
                except SearchFailed as exc:
                    log.warning("the log search of %s failed: %s", cid, exc)
                    raise ApiError(
                        500, "CONTAINER_LOGS_FAILED", "Failed to read the container's logs"
                    ) from exc
    chunks = runtime.logs(
        ref, follow=False, tail=options.tail, timestamps=options.timestamps, **window(options)
    )
    try:
        return await search_lines(
            chunks, search, limit=options.limit, streams=options.streams, timestamps=options.timestamps
        )
    except RuntimeFailure as exc:
        raise log_error(exc, cid) from exc
    finally:
        await close_stream(chunks)


async def read_log(runtime: ContainerRuntime, ref: ContainerRef, options: LogQuery, cid: str) -> LogExcerpt:
    """The most recent lines, at most ``limit`` of them.

    When the runtime's own tail counts the same lines as the answer (both streams, no ``until``,
    which Kubernetes applies after its tail), it is asked for one line more than fits, which
    tells whether lines were left out without reading the rest of the log.
    """
    tail = options.tail
    if options.streams == STREAMS["all"] and options.until is None:
        tail = options.limit + 1 if tail is None else min(tail, options.limit + 1)
    chunks = runtime.logs(ref, follow=False, tail=tail, timestamps=options.timestamps, **window(options))
    try:
        return await read_lines(
            chunks, keep=options.limit, streams=options.streams, timestamps=options.timestamps
        )
    except RuntimeFailure as exc:
        raise log_error(exc, cid) from exc
    finally:
        await close_stream(chunks)


async def _download(
    request: web.Request, runtime: ContainerRuntime, ref: ContainerRef, options: LogQuery, name: str
) -> web.StreamResponse:
    """The log's raw text, chunked, written no faster than the client reads it.

    The first chunk is awaited before the answer starts, so an error the runtime reports when it
    opens the stream is still an error answer. One that breaks the stream later can no longer be:
    the connection is closed without the final chunk, so the client sees an incomplete download.
    """
    chunks = runtime.logs(
        ref, follow=False, tail=options.tail, timestamps=options.timestamps, **window(options)
    )
    try:
        try:
            first: LogChunk | None = await anext(chunks)
        except StopAsyncIteration:
            first = None
        except RuntimeFailure as exc:
            raise log_error(exc, ref.id) from exc
        response = await download_response(request, name)
        try:
            if first is not None:
                if first.data and first.stream in options.streams:
                    await response.write(first.data)
                async for chunk in chunks:
                    # A frame the runtime skipped as too large holds no data.
                    if chunk.data and chunk.stream in options.streams:
                        # Back-pressure: write() waits while the client's socket is full.
                        await response.write(chunk.data)
        except RuntimeFailure as exc:
            log.warning("the log download of %s broke off: %s", ref.id, exc)
            if request.transport is not None:
                request.transport.close()
            return response
        except ConnectionResetError:
            # The client went away mid-download: nothing is wrong, and nobody is left to tell.
            log.info("the client of the log download of %s went away", ref.id)
            return response
        await response.write_eof()
        return response
    finally:
        await close_stream(chunks)


async def download_response(request: web.Request, name: str) -> web.StreamResponse:
    """A log download's response, prepared: plain text, saved as ``<name>-logs.txt`` (``name``
    made safe for a file name), never cached; the caller writes the lines."""
    filename = _UNSAFE_FILENAME.sub("_", name).strip("._") or "container"
    response = web.StreamResponse(
        headers={
            hdrs.CONTENT_TYPE: "text/plain; charset=utf-8",
            hdrs.CONTENT_DISPOSITION: f'attachment; filename="{filename}-logs.txt"',
            hdrs.CACHE_CONTROL: "no-store",
        }
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    return response


def log_error(exc: RuntimeFailure, cid: str) -> ApiError:
    """The client's error for a container log the runtime could not read: one map for every route."""
    return runtime_error(
        exc, "CONTAINER_LOGS_FAILED", "Failed to read the container's logs", cid, reading=True
    )
