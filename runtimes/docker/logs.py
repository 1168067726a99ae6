"""A container's log stream: raw for a TTY container, demultiplexed from the Engine's frames else;
or, for a reader that decodes it elsewhere, the connection the log arrives on."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from ..base import ContainerRef, LogChunk, RawLog
from ..errors import Unsupported
from ..logframes import FrameDecoder
from .paths import container_path
from .queries import Queries
from .session import ENGINE_ERRORS, READ_TIMEOUT, EngineSession


async def _request(
    queries: Queries,
    ref: ContainerRef,
    *,
    follow: bool,
    tail: int | None,
    timestamps: bool,
    since: int | None,
    until: int | None,
) -> tuple[bool, dict[str, Any]]:
    """Whether the container has a TTY (its log is then one raw stream, no frames), and the
    query of its log."""
    doc = await queries.inspect_raw(ref)
    tty = bool((doc.get("Config") or {}).get("Tty"))
    params: dict[str, Any] = {
        "stdout": "1",
        "stderr": "1",
        "follow": "1" if follow else "0",
        "tail": "all" if tail is None else str(tail),
        "timestamps": "1" if timestamps else "0",
    }
    if since is not None:
        params["since"] = str(since)
    if until is not None:
        params["until"] = str(until)
    return tty, params


async def stream_logs(
    session: EngineSession,
    queries: Queries,
    ref: ContainerRef,
    *,
    follow: bool,
    tail: int | None,
    timestamps: bool,
    since: int | None,
    until: int | None = None,
) -> AsyncIterator[LogChunk]:
    """The log asked in HTTP/1.0, so that its body comes unframed up to the connection's end.

    In HTTP/1.1 the Engine sends each frame (each line) as one HTTP chunk, and aiohttp takes a few
    Python steps per chunk: a quarter of the gateway's time per line. Unframed, a log the Engine
    cut short at a frame's end would read like a whole one, so its end is confirmed by asking the
    Engine once more: one that died meanwhile answers nothing, and the read fails as it did
    when a chunk went missing.
    """
    tty, params = await _request(
        queries, ref, follow=follow, tail=tail, timestamps=timestamps, since=since, until=until
    )
    try:
        async with session.stream_until_close(container_path(ref.id, "logs"), params) as response:
            if tty:
                async for data in response.content.iter_any():
                    yield LogChunk("stdout", data)
            else:
                decoder = FrameDecoder()
                async for data in response.content.iter_any():
                    for chunk in decoder.feed(data):
                        yield chunk
                for chunk in decoder.end():
                    yield chunk
    except ENGINE_ERRORS as exc:
        session.fail(exc, f"GET containers/{ref.id}/logs")
    await session.json("version", versioned=False, timeout=READ_TIMEOUT)


async def detach_logs(
    session: EngineSession,
    queries: Queries,
    ref: ContainerRef,
    *,
    tail: int | None,
    timestamps: bool,
    since: int | None,
    until: int | None,
) -> RawLog:
    """The finished log's connection, once the Engine has answered, taken from aiohttp: what it
    has read of the body, and a socket of its own on which the rest arrives, unframed (HTTP/1.0)
    up to the connection's end, for a reader in another process that parses no HTTP.
    ``Unsupported`` when the bytes on the socket are not the log's (TLS).

    Unframed, a log cut short by the Engine at a frame's end reads as a log that ends there; a
    reader that must tell the two apart asks the Engine afterwards, as :func:`stream_logs` does.
    """
    tty, params = await _request(
        queries, ref, follow=False, tail=tail, timestamps=timestamps, since=since, until=until
    )
    try:
        async with session.stream_until_close(container_path(ref.id, "logs"), params) as response:
            head, source = _detach(response)
    except ENGINE_ERRORS as exc:
        session.fail(exc, f"GET containers/{ref.id}/logs")
    return RawLog(multiplexed=not tty, head=head, source=source)


def _detach(response: aiohttp.ClientResponse) -> tuple[bytes, socket.socket]:
    connection = response.connection
    transport = connection.transport if connection is not None else None
    held = transport.get_extra_info("socket") if transport is not None else None
    if transport is None or held is None or transport.get_extra_info("sslcontext") is not None:
        raise Unsupported("This Engine connection cannot be handed on: it is encrypted")
    # Ordering: aiohttp reads no more once paused, so the buffer and the socket hold it all.
    transport.pause_reading()
    source = held.dup()
    return response.content.read_nowait(), source
