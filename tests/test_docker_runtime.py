"""The Docker backend's streams and translations, straight against the Engine (no HTTP)."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.base_protocol import BaseProtocol

from runtimes import ContainerRef, ContainerState, LogChunk, NotFound, RuntimeEvent, Unavailable
from runtimes.docker import MAX_LOG_FRAME, DockerRuntime, _demultiplex, map_state, parse_timestamp

from .conftest import Containers


@pytest.fixture
async def runtime(docker_host: str) -> AsyncIterator[DockerRuntime]:
    rt = DockerRuntime(docker_host)
    try:
        yield rt
    finally:
        await rt.close()


async def collect_logs(runtime: DockerRuntime, cid: str, **kwargs: object) -> list[LogChunk]:
    params: dict[str, object] = {"follow": False, "tail": 100, "timestamps": False, **kwargs}
    async with asyncio.timeout(15):
        return [chunk async for chunk in runtime.logs(ContainerRef(cid), **params)]  # type: ignore[arg-type]


async def test_events_report_changes_made_outside_the_gateway(
    runtime: DockerRuntime, containers: Containers
) -> None:
    made = await containers.create(start=False)
    since = int(time.time()) - 1
    await containers.docker.containers.container(made["Id"]).start()
    await containers.docker.containers.container(made["Id"]).stop(t=1)
    seen: list[RuntimeEvent] = []
    async with asyncio.timeout(15):
        async for event in runtime.events(since=since):
            if event.container_id == made["Id"][:12]:
                seen.append(event)
                if event.action == "die":
                    break
    actions = [e.action for e in seen]
    assert "start" in actions and actions[-1] == "die"
    start = next(e for e in seen if e.action == "start")
    assert start.state is ContainerState.RUNNING
    assert start.name == made["Name"].lstrip("/")
    assert start.labels.get("nekzus.test.run") == containers.run_id
    assert seen[-1].state is ContainerState.EXITED
    assert start.timestamp >= since


async def test_logs_keep_stdout_and_stderr_apart(runtime: DockerRuntime, containers: Containers) -> None:
    made = await containers.create(cmd=["sh", "-c", "echo out1; echo err1 >&2; echo out2"])
    await containers.docker.containers.container(made["Id"]).wait()
    chunks = await collect_logs(runtime, made["Id"])
    stdout = b"".join(c.data for c in chunks if c.stream == "stdout")
    stderr = b"".join(c.data for c in chunks if c.stream == "stderr")
    assert stdout == b"out1\nout2\n"
    assert stderr == b"err1\n"


async def test_logs_of_a_tty_container_are_one_raw_stream(
    runtime: DockerRuntime, containers: Containers
) -> None:
    made = await containers.create(cmd=["sh", "-c", "echo hello; echo world >&2"], tty=True)
    await containers.docker.containers.container(made["Id"]).wait()
    chunks = await collect_logs(runtime, made["Id"])
    assert {c.stream for c in chunks} == {"stdout"}
    assert b"".join(c.data for c in chunks).replace(b"\r\n", b"\n") == b"hello\nworld\n"


async def test_follow_ends_when_the_container_stops(runtime: DockerRuntime, containers: Containers) -> None:
    made = await containers.create(cmd=["sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.2; done"])
    chunks = await collect_logs(runtime, made["Id"], follow=True, tail=0)
    assert b"".join(c.data for c in chunks).endswith(b"line3\n")


async def test_logs_tail_and_timestamps(runtime: DockerRuntime, containers: Containers) -> None:
    made = await containers.create(cmd=["sh", "-c", "for i in 1 2 3 4 5; do echo n$i; done"])
    await containers.docker.containers.container(made["Id"]).wait()
    chunks = await collect_logs(runtime, made["Id"], tail=2, timestamps=True)
    lines = b"".join(c.data for c in chunks).decode().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["n4", "n5"]
    assert all(line[:4].isdigit() and "T" in line.split(" ", 1)[0] for line in lines)


async def test_unknown_container_and_dead_socket(runtime: DockerRuntime, tmp_path: object) -> None:
    with pytest.raises(NotFound):
        await runtime.get(ContainerRef("nekzus-no-such-container"))
    with pytest.raises(NotFound):
        await collect_logs(runtime, "nekzus-no-such-container")
    dead = DockerRuntime(f"unix://{tmp_path}/none.sock")
    try:
        with pytest.raises(Unavailable):
            await dead.ping()
        with pytest.raises(Unavailable):
            await dead.list_containers()
        with pytest.raises(Unavailable):
            async with asyncio.timeout(5):
                async for _ in dead.events():
                    pass
    finally:
        await dead.close()


def test_state_mapping_and_timestamps() -> None:
    assert map_state("running") is ContainerState.RUNNING
    assert map_state("exited") is ContainerState.EXITED
    assert map_state("dead") is ContainerState.STOPPED
    assert map_state("removing") is ContainerState.STOPPED
    assert map_state("created") is ContainerState.CREATED
    assert map_state("paused") is ContainerState.PAUSED
    assert map_state("restarting") is ContainerState.RESTARTING
    assert parse_timestamp("2023-12-01T00:00:00.123456789Z") == 1701388800
    assert parse_timestamp("0001-01-01T00:00:00Z") == 0
    assert parse_timestamp("garbage") == 0


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


async def demux(pieces: list[bytes]) -> list[LogChunk]:
    loop = asyncio.get_running_loop()
    # A limit above the test data, so the reader never asks the (absent) transport to pause.
    reader = aiohttp.StreamReader(BaseProtocol(loop), 2**30, loop=loop)
    for piece in pieces:
        reader.feed_data(piece)
    reader.feed_eof()
    return [chunk async for chunk in _demultiplex(reader)]


async def test_demultiplex_frames_split_anywhere_and_oversized_ones_skipped() -> None:
    big = b"x" * (MAX_LOG_FRAME + 10)
    raw = frame(1, b"a1\n") + frame(1, b"a2\n") + frame(2, b"e1\n") + frame(1, big) + frame(1, b"after\n")
    # Delivered in awkward pieces: headers and the big frame split across reads.
    pieces = [raw[i : i + 7000] for i in range(0, len(raw), 7000)]
    chunks = await demux(pieces)
    assert [(c.stream, c.data, c.skipped) for c in chunks] == [
        ("stdout", b"a1\na2\n", 0),
        ("stderr", b"e1\n", 0),
        ("stdout", b"", MAX_LOG_FRAME + 10),
        ("stdout", b"after\n", 0),
    ]
    whole = await demux([raw])
    assert [(c.stream, c.data, c.skipped) for c in whole] == [(c.stream, c.data, c.skipped) for c in chunks]
    truncated = await demux([frame(1, b"complete\n") + frame(2, b"cut off here")[:-4]])
    assert [(c.stream, c.data) for c in truncated] == [("stdout", b"complete\n"), ("stderr", b"cut off ")]
