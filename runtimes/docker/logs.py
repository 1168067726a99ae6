"""A container's log stream: raw for a TTY container, demultiplexed from the Engine's frames else."""

from __future__ import annotations

import logging
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from ..base import ContainerRef, LogChunk
from .paths import container_path
from .queries import Queries
from .session import ENGINE_ERRORS, EngineSession

log = logging.getLogger(__name__)

_LOG_HEADER = struct.Struct(">BxxxL")
_LOG_STREAMS = {0: "stdout", 1: "stdout", 2: "stderr"}
MAX_LOG_FRAME = 1 << 20  # frames above 1 MiB are skipped rather than buffered
# A socket read may bring ten thousand frames; handing them on in runs of at most this many lets a
# consumer that yields to the event loop between chunks do so every fraction of a millisecond.
FRAMES_PER_CHUNK = 1024


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
    try:
        async with session.stream(container_path(ref.id, "logs"), params) as response:
            if tty:
                # A TTY container's output is one raw stream with no frame headers.
                async for data in response.content.iter_any():
                    yield LogChunk("stdout", data)
                return
            async for chunk in _demultiplex(response.content):
                yield chunk
    except ENGINE_ERRORS as exc:
        session.fail(exc, f"GET containers/{ref.id}/logs")


async def _demultiplex(content: aiohttp.StreamReader) -> AsyncIterator[LogChunk]:
    """Split the Engine's multiplexed log format: 8-byte headers (stream, length), then data.

    Frames are parsed out of whatever the socket delivered, and consecutive frames of one stream
    are handed on as one chunk (up to FRAMES_PER_CHUNK): a coroutine step per frame would cost
    more than the parsing.
    """
    buf = bytearray()
    skipping = 0  # bytes still to drop of a frame that is over the size limit
    skipping_stream = "stdout"
    skipped_total = 0
    async for data in content.iter_any():
        buf += data
        offset = 0
        size = len(buf)
        if skipping:
            dropped = min(skipping, size)
            skipping -= dropped
            offset = dropped
            if not skipping:
                yield LogChunk(skipping_stream, b"", skipped=skipped_total)
        run_stream: str | None = None
        parts: list[bytes] = []
        while not skipping and size - offset >= _LOG_HEADER.size:
            stream_type, length = _LOG_HEADER.unpack_from(buf, offset)
            stream = _LOG_STREAMS.get(stream_type, "stdout")
            if length > MAX_LOG_FRAME:
                log.warning("skipping a %d-byte log frame (limit %d)", length, MAX_LOG_FRAME)
                if parts:
                    yield LogChunk(run_stream or stream, b"".join(parts))
                    parts = []
                skipping, skipping_stream, skipped_total = length, stream, length
                offset += _LOG_HEADER.size
                dropped = min(skipping, size - offset)
                skipping -= dropped
                offset += dropped
                if not skipping:
                    yield LogChunk(stream, b"", skipped=length)
                continue
            end = offset + _LOG_HEADER.size + length
            if end > size:
                break
            if parts and (stream != run_stream or len(parts) >= FRAMES_PER_CHUNK):
                yield LogChunk(run_stream or stream, b"".join(parts))
                parts = []
            run_stream = stream
            parts.append(bytes(buf[offset + _LOG_HEADER.size : end]))
            offset = end
        if parts:
            yield LogChunk(run_stream or "stdout", b"".join(parts))
        del buf[:offset]
    if len(buf) > _LOG_HEADER.size:
        # The stream ended inside a frame: hand on what arrived of it.
        stream_type, _ = _LOG_HEADER.unpack_from(buf, 0)
        yield LogChunk(_LOG_STREAMS.get(stream_type, "stdout"), bytes(buf[_LOG_HEADER.size :]))
