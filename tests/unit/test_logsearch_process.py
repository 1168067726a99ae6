"""The log search in a helper process (nekzus/logsearch_process.py), handed a socket as a runtime
hands one on: the answers of the search in the event loop, whatever was read before the handover;
the limit ends the read (the writer sees the socket closed); a cancelled search kills its helper."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator

from nekzus.logsearch import LogExcerpt, LogSearch, search_lines
from nekzus.logsearch_process import search_raw_log
from runtimes import LogChunk, RawLog
from runtimes.logframes import FrameDecoder
from tests.support.helpers import search_helpers, until_search_helpers

BOTH = frozenset({"stdout", "stderr"})


def framed(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


def handed_on(head: bytes) -> tuple[RawLog, socket.socket]:
    """A log whose first bytes were read already, and the other end of its socket."""
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    return RawLog(multiplexed=True, head=head, source=reader), writer


async def decoded(data: bytes) -> AsyncIterator[LogChunk]:
    decoder = FrameDecoder()
    for chunk in [*decoder.feed(data), *decoder.end()]:
        yield chunk


async def in_the_loop(data: bytes, search: LogSearch, limit: int) -> LogExcerpt:
    return await search_lines(decoded(data), search, limit=limit, streams=BOTH, timestamps=False)


async def test_the_answers_of_the_search_in_the_loop() -> None:
    lines = [b"%d %s\n" % (i, b"TERM" if i % 100 == 0 else b"x") for i in range(1, 20_001)]
    data = b"".join(framed(2 if i % 7 == 0 else 1, line) for i, line in enumerate(lines)) + framed(1, b"end")
    loop = asyncio.get_running_loop()

    async def send(writer: socket.socket, rest: bytes) -> None:
        with contextlib.suppress(ConnectionError):
            await loop.sock_sendall(writer, rest)
            writer.shutdown(socket.SHUT_WR)

    for search, limit in (
        (LogSearch(["TERM"], case_sensitive=True), 1000),
        (LogSearch(["x"], invert=True), 50),
    ):
        for head in (0, 5, 12_345):
            raw, writer = handed_on(data[:head])
            with writer:
                writing = asyncio.create_task(send(writer, data[head:]))
                found = await search_raw_log(raw, search, limit=limit, streams=BOTH, timestamps=False)
                await writing
            assert found == await in_the_loop(data, search, limit)
            assert found.lines and found.lines[0].number == 100
    assert not search_helpers()


async def test_the_limit_ends_the_read() -> None:
    raw, writer = handed_on(b"")
    block = b"".join(framed(1, b"%d TERM\n" % i) for i in range(1000))
    loop = asyncio.get_running_loop()

    async def endless() -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                await loop.sock_sendall(writer, block)

    with writer:
        writing = asyncio.create_task(endless())
        found = await search_raw_log(raw, LogSearch(["TERM"]), limit=10, streams=BOTH, timestamps=False)
        assert [line.text for line in found.lines] == [f"{i} TERM" for i in range(10)]
        assert found.truncated and found.scanned == 10
        # The helper closed the socket when it stopped: the writer's next send fails.
        async with asyncio.timeout(10):
            await writing
    assert not search_helpers()


async def test_a_cancelled_search_kills_its_helper_and_closes_the_log() -> None:
    raw, writer = handed_on(b"")
    with writer:
        search = asyncio.create_task(
            search_raw_log(raw, LogSearch(["TERM"]), limit=10, streams=BOTH, timestamps=False)
        )
        await until_search_helpers(running=True)
        search.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await search
        assert not search_helpers()
        async with asyncio.timeout(10):
            assert await asyncio.get_running_loop().sock_recv(writer, 1) == b""
