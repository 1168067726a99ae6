"""The Docker backend's log stream against a fake Engine on a unix socket: asked in HTTP/1.0 (its
body unframed, no HTTP chunk per frame), and a log whose Engine is gone when it ends is an error,
not a log that merely ended there.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from runtimes import ContainerRef, LogChunk, Unavailable
from runtimes.docker.logs import stream_logs
from runtimes.docker.queries import Queries
from runtimes.docker.session import EngineSession


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


# A line of three-byte characters whose frames, and the socket writes, split one of them.
SNOWMEN = "☃" * 5
LOG = (
    frame(1, b"2026-01-01T00:00:00.000000001Z first\n")
    + frame(2, b"2026-01-01T00:00:00.000000002Z " + SNOWMEN.encode()[:4])
    + frame(2, SNOWMEN.encode()[4:] + b"\n")
    + frame(1, b"2026-01-01T00:00:00.000000003Z last, unterminated")
)


@dataclass
class FakeEngine:
    """What the fake Engine was asked, and whether it still answers after serving a log."""

    dies_after_log: bool = False
    dead: bool = False
    versions: list[str] = field(default_factory=list)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[tuple[EngineSession, Queries, FakeEngine]]:
    fake = FakeEngine()

    async def answer(request: web.Request) -> web.StreamResponse:
        if fake.dead:
            # A daemon that died answers nothing: the connection drops without an answer.
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        if request.path == "/version":
            return web.json_response({"ApiVersion": "1.47"})
        if request.path == "/v1.47/containers/abc/json":
            return web.json_response({"Id": "abc", "Config": {"Tty": False}})
        assert request.path == "/v1.47/containers/abc/logs"
        fake.versions.append(f"HTTP/{request.version.major}.{request.version.minor}")
        response = web.StreamResponse()
        response.force_close()  # as the Engine does: an HTTP/1.0 body ends with its connection
        await response.prepare(request)
        for cut in range(0, len(LOG), 7):  # the body in writes that split headers and characters
            await response.write(LOG[cut : cut + 7])
        fake.dead = fake.dies_after_log
        return response

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    socket = tmp_path / "engine.sock"
    await web.UnixSite(runner, str(socket)).start()
    session = EngineSession(f"unix://{socket}")
    try:
        yield session, Queries(session, "docker"), fake
    finally:
        await session.close()
        await runner.cleanup()


async def read(session: EngineSession, queries: Queries, chunks: list[LogChunk]) -> None:
    async for chunk in stream_logs(
        session, queries, ContainerRef("abc"), follow=False, tail=None, timestamps=True, since=None
    ):
        chunks.append(chunk)


async def test_the_log_is_asked_unframed_and_decoded_whole(
    engine: tuple[EngineSession, Queries, FakeEngine],
) -> None:
    session, queries, fake = engine
    chunks: list[LogChunk] = []
    await read(session, queries, chunks)
    assert fake.versions == ["HTTP/1.0"]
    by_stream = {
        stream: b"".join(c.data for c in chunks if c.stream == stream) for stream in ("stdout", "stderr")
    }
    assert by_stream == {
        "stdout": b"2026-01-01T00:00:00.000000001Z first\n2026-01-01T00:00:00.000000003Z last, unterminated",
        "stderr": b"2026-01-01T00:00:00.000000002Z " + SNOWMEN.encode() + b"\n",
    }


async def test_a_log_whose_engine_is_gone_at_its_end_fails_after_its_lines(
    engine: tuple[EngineSession, Queries, FakeEngine],
) -> None:
    # Unframed, the end of the body cannot tell "the log ended" from "the daemon died after a
    # frame": the stream asks the Engine once more, and a dead one makes the read fail.
    session, queries, fake = engine
    fake.dies_after_log = True
    chunks: list[LogChunk] = []
    with pytest.raises(Unavailable):
        await read(session, queries, chunks)
    assert b"".join(c.data for c in chunks).endswith(b"last, unterminated")
