"""A log search in a helper process, which reads the log's connection itself.

Reading a million-line log costs the reader a million small frames: the kernel's work of taking
them off the socket, and Python's of decoding them, about two seconds of CPU in all. In the
event loop's thread, even in slices, that delays each other request at each of its steps. A
helper process instead reads and searches the log on its own, at a lower priority than the
gateway's, so the event loop's work wins the CPU, and the loop itself waits only for the answer.

One helper per search: the runtime hands on the log's socket (``RawLogSource``) and the helper
inherits it; the gateway writes the search (one JSON line) and what was already read of the log
to the helper's stdin, and reads the answer (one JSON document) from its stdout. The helper
stops reading, closing the runtime's stream, once it has what it needs; a search that ends
before (the client left, the gateway stops) kills its helper, which closes the stream as well.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Collection, Iterator
from typing import Any

from runtimes import LogChunk, RawLog
from runtimes.logframes import FrameDecoder

from .logsearch import LogExcerpt, LogLine, LogSearch, search_lines

# How much lower the helper's priority is than the gateway's (os.nice).
NICENESS = 10
READ_BYTES = 1 << 20


class SearchFailed(RuntimeError):
    """The helper process ended without an answer."""


async def search_raw_log(
    raw: RawLog, search: LogSearch, *, limit: int, streams: Collection[str], timestamps: bool
) -> LogExcerpt:
    """:func:`~nekzus.logsearch.search_lines` over ``raw``, run by a helper process; ``raw.source``
    is closed (the helper has its own copy) once the helper has started."""
    request = {
        "search": search.arguments,
        "limit": limit,
        "streams": sorted(streams),
        "timestamps": timestamps,
        "multiplexed": raw.multiplexed,
    }
    with raw.source:
        fd = raw.source.fileno()
        helper = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            str(fd),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            pass_fds=(fd,),
        )
    try:
        body, _ = await helper.communicate(json.dumps(request).encode() + b"\n" + raw.head)
    finally:
        if helper.returncode is None:
            helper.kill()
            await helper.wait()
    if helper.returncode != 0 or not body:
        raise SearchFailed(f"the log search helper exited with {helper.returncode} and no answer")
    found = json.loads(body)
    return LogExcerpt([LogLine(*line) for line in found["lines"]], found["truncated"], found["scanned"])


def _pieces(head: bytes, fd: int) -> Iterator[bytes]:
    if head:
        yield head
    while data := os.read(fd, READ_BYTES):
        yield data


async def _chunks(pieces: Iterator[bytes], multiplexed: bool) -> AsyncIterator[LogChunk]:
    decoder = FrameDecoder()
    for data in pieces:
        if not multiplexed:
            yield LogChunk("stdout", data)
            continue
        for chunk in decoder.feed(data):
            yield chunk
    for chunk in decoder.end():
        yield chunk


def main() -> None:
    """The helper's side: the search and the log's start from stdin, the rest of the log from the
    socket named by the first argument, the answer to stdout."""
    os.nice(NICENESS)
    # An interrupt from the terminal is the gateway's to handle: it kills its helpers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fd = int(sys.argv[1])
    os.set_blocking(fd, True)
    request: dict[str, Any] = json.loads(sys.stdin.buffer.readline())
    head = sys.stdin.buffer.read()
    excerpt = asyncio.run(
        search_lines(
            _chunks(_pieces(head, fd), request["multiplexed"]),
            LogSearch(**request["search"]),
            limit=request["limit"],
            streams=frozenset(request["streams"]),
            timestamps=request["timestamps"],
            paced=False,
        )
    )
    lines = [[line.number, line.stream, line.text, line.stamp] for line in excerpt.lines]
    answer = {"lines": lines, "truncated": excerpt.truncated, "scanned": excerpt.scanned}
    sys.stdout.buffer.write(json.dumps(answer).encode())


if __name__ == "__main__":
    main()
