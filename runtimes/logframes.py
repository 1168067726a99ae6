"""The multiplexed log format: frames of an 8-byte header (output stream, length) and their data.

The Docker Engine sends a non-TTY container's log this way. Decoding it is bytes work with no I/O,
kept apart from the backend so that a reader of the raw stream (see ``RawLogSource``) decodes it
exactly as the backend's own log stream does, wherever that reader runs.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator

from .base import LogChunk

log = logging.getLogger(__name__)

_LOG_HEADER = struct.Struct(">BxxxL")
_LOG_STREAMS = {0: "stdout", 1: "stdout", 2: "stderr"}
MAX_LOG_FRAME = 1 << 20  # frames above 1 MiB are skipped rather than buffered
# A socket read may bring ten thousand frames; handing them on in runs of at most this many lets a
# consumer that yields to the event loop between chunks do so every fraction of a millisecond.
FRAMES_PER_CHUNK = 1024


class FrameDecoder:
    """Frames out of the bytes of a multiplexed stream, cut wherever its reads ended.

    Consecutive frames of one stream are handed on as one chunk (up to FRAMES_PER_CHUNK): a
    consumer's step per frame would cost more than the parsing.
    """

    def __init__(self) -> None:
        # The start of a frame that has not fully arrived, and how long it must get before it can
        # be parsed: a big frame arriving in many reads is gathered, not re-copied on each one.
        self._pending = bytearray()
        self._need = 0
        self._skipping = 0  # bytes still to drop of a frame that is over the size limit
        self._skipping_stream = "stdout"
        self._skipped_total = 0

    def feed(self, data: bytes) -> Iterator[LogChunk]:
        """The chunks that ``data`` completes, lazily: a run is parsed when it is asked for."""
        # Frames are cut out as views of one immutable buffer and copied once, by the join: most
        # frames are a line, and a copy per frame cost more than its parsing.
        if self._pending:
            self._pending += data
            if len(self._pending) < self._need:
                return
            buf = bytes(self._pending)
            self._pending.clear()
        else:
            buf = data
        view = memoryview(buf)
        offset = 0
        size = len(buf)
        if self._skipping:
            dropped = min(self._skipping, size)
            self._skipping -= dropped
            offset = dropped
            if not self._skipping:
                yield LogChunk(self._skipping_stream, b"", skipped=self._skipped_total)
        run_stream: str | None = None
        parts: list[memoryview] = []
        unpack, header, streams = _LOG_HEADER.unpack_from, _LOG_HEADER.size, _LOG_STREAMS
        while not self._skipping and size - offset >= header:
            stream_type, length = unpack(buf, offset)
            stream = streams.get(stream_type, "stdout")
            if length > MAX_LOG_FRAME:
                log.warning("skipping a %d-byte log frame (limit %d)", length, MAX_LOG_FRAME)
                if parts:
                    yield LogChunk(run_stream or stream, b"".join(parts))
                    parts = []
                self._skipping, self._skipping_stream, self._skipped_total = length, stream, length
                offset += header
                dropped = min(self._skipping, size - offset)
                self._skipping -= dropped
                offset += dropped
                if not self._skipping:
                    yield LogChunk(stream, b"", skipped=length)
                continue
            end = offset + header + length
            if end > size:
                break
            if stream != run_stream or len(parts) >= FRAMES_PER_CHUNK:
                if parts:
                    yield LogChunk(run_stream or stream, b"".join(parts))
                    parts = []
                run_stream = stream
            parts.append(view[offset + header : end])
            offset = end
        if parts:
            yield LogChunk(run_stream or "stdout", b"".join(parts))
        if offset < size:
            self._pending += view[offset:]
            self._need = header
            if size - offset >= header:
                self._need += unpack(buf, offset)[1]

    def end(self) -> Iterator[LogChunk]:
        """What arrived of a last frame the stream ended inside."""
        buf, self._pending = self._pending, bytearray()
        if len(buf) > _LOG_HEADER.size:
            stream_type, _ = _LOG_HEADER.unpack_from(buf, 0)
            yield LogChunk(_LOG_STREAMS.get(stream_type, "stdout"), bytes(buf[_LOG_HEADER.size :]))
