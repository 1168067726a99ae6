"""The Docker backend's streams and translations, straight against the Engine (no HTTP)."""

from __future__ import annotations

import asyncio
import time

import pytest

from runtimes import ContainerRef, ContainerState, LogChunk, NotFound, RuntimeEvent, Unavailable
from runtimes.docker import DockerRuntime
from tests.support.docker_engine import Containers


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
