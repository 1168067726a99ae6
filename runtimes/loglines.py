"""Whole lines out of a runtime's log chunks, which cut lines wherever the socket read ended.

One splitter for every reader that needs lines (the REST log reads and searches, the Kubernetes
``until`` filter): per output stream it keeps the unfinished end of the last chunk, and hands on
blocks of whole lines, so a reader can search a block at C speed before it looks at single lines.
"""

from __future__ import annotations

from collections.abc import Iterator

# A line longer than this keeps its first MAX_LINE bytes; the rest, up to its newline, is dropped,
# so one endless line cannot hold the reader's memory.
MAX_LINE = 1 << 20


class LineSplitter:
    """Cuts each output stream's bytes into whole lines (``\\n``-terminated blocks)."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._pending: dict[str, bytes] = {}
        # Streams whose current line went over max_line: their bytes are dropped up to the newline.
        self._dropping: set[str] = set()

    def feed(self, stream: str, data: bytes) -> bytes:
        """The whole lines that ``data`` completes on ``stream``, as one block ending in ``\\n``
        (b"" when it completes none)."""
        pending = self._pending.pop(stream, b"")
        head = b""
        if stream in self._dropping:
            end = data.find(b"\n")
            if end < 0:
                self._pending[stream] = pending
                return b""
            self._dropping.discard(stream)
            head, pending, data = pending + b"\n", b"", data[end + 1 :]
        cut = data.rfind(b"\n")
        if cut < 0:
            block, rest = head, pending + data
        else:
            block, rest = head + pending + data[: cut + 1], data[cut + 1 :]
        if len(rest) > self.max_line:
            self._dropping.add(stream)
            rest = rest[: self.max_line]
        if rest:
            self._pending[stream] = rest
        return block

    def flush(self) -> Iterator[tuple[str, bytes]]:
        """The last, unterminated line of each stream (at the end of the log), without a newline."""
        pending, self._pending = self._pending, {}
        self._dropping.clear()
        for stream, rest in pending.items():
            if rest:
                yield stream, rest


def split_lines(block: bytes) -> list[bytes]:
    """The lines of a block from :meth:`LineSplitter.feed`, without their newlines (and a TTY's
    ``\\r``)."""
    if b"\r" in block:
        block = block.replace(b"\r\n", b"\n")
    lines = block.split(b"\n")
    lines.pop()
    return lines
