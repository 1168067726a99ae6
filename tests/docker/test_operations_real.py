"""Operations on a real Docker Engine: a grace period holds up only its own container, and a
gateway killed mid-stop still answers for the operation after its restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from nekzus.keys import EVENT_BUS
from tests.support import ROOT
from tests.support.docker_engine import Containers
from tests.support.gateway import LINKED, ClientFactory, Heard, make_config, next_event
from tests.unit.test_tls_cli import free_port

# Ignores SIGTERM: a stop waits out its whole grace period, then the daemon kills it.
DEAF = ["sh", "-c", "trap '' TERM; while :; do sleep 1; done"]
LONG_GRACE = 60


async def test_a_long_stop_does_not_hold_up_other_containers(
    gateway: ClientFactory, docker_host: str, containers: Containers
) -> None:
    # One start at a time, the tightest setting: stops and restarts must still not queue.
    client = await gateway(make_config(docker_host, operations={"concurrency": 1}))
    slow, restarted, stopped, started = await asyncio.gather(
        containers.create(labels=LINKED, cmd=DEAF),
        containers.create(labels=LINKED, cmd=DEAF),
        containers.create(labels=LINKED, cmd=DEAF),
        containers.create(labels=LINKED, start=False),
    )
    sub = Heard(client.app[EVENT_BUS])
    slow_op = await accepted(client, f"{slow['Id'][:12]}/stop?timeout={LONG_GRACE}")
    began = time.monotonic()
    others = {
        await accepted(client, f"{restarted['Id'][:12]}/restart?timeout=1"),
        await accepted(client, f"{stopped['Id'][:12]}/stop?timeout=1"),
        await accepted(client, f"{started['Id'][:12]}/start"),
    }
    done: set[str] = set()
    while done != others:
        event = await next_event(sub, "container.", timeout=20)
        if event.type.endswith((".completed", ".failed")):
            assert event.data["operationId"] != slow_op, "the long stop ended first"
            assert event.type.endswith(".completed"), event
            done.add(event.data["operationId"])
    assert time.monotonic() - began < LONG_GRACE / 3
    op = await (await client.get(f"/api/v1/operations/{slow_op}")).json()
    assert op["state"] == "pending"
    assert await containers.state(started["Id"]) == "running"
    assert await containers.state(stopped["Id"]) == "exited"


async def test_stopping_many_takes_about_one_grace_period(
    gateway: ClientFactory, docker_host: str, containers: Containers
) -> None:
    # The batch form of stop-all (the same runner), so that no other container on the daemon is touched.
    grace = 5
    client = await gateway(make_config(docker_host, operations={"concurrency": 1}))
    made = await asyncio.gather(*(containers.create(labels=LINKED, cmd=DEAF) for _ in range(6)))
    began = time.monotonic()
    resp = await client.post(
        "/api/v1/containers/batch",
        json={"action": "stop", "containerIds": [m["Id"][:12] for m in made], "timeout": grace},
    )
    elapsed = time.monotonic() - began
    body = await resp.json()
    assert (body["total"], body["success"]) == (6, 6), body
    # Two grace periods or more would mean the stops queued.
    assert grace <= elapsed < 2 * grace - 1, f"6 stops took {elapsed:.1f} s"


async def accepted(client: TestClient[Any, Any], path: str) -> str:
    resp = await client.post(f"/api/v1/containers/{path}")
    body = await resp.json()
    assert resp.status == 202, body
    return str(body["operationId"])


# -- a gateway killed mid-stop --------------------------------------------------------------------


# Extra environment variables (``NEKZUS_*`` settings) may be given to a start.
Serve = Callable[..., Awaitable[str]]


@pytest.fixture
async def serve(
    tmp_path: Path, docker_host: str
) -> AsyncIterator[tuple[Serve, list[asyncio.subprocess.Process]]]:
    """``nekzus serve`` over plain HTTP on a free port, with its own data_dir; every process it
    started is killed at the end, whatever the test did to it."""
    processes: list[asyncio.subprocess.Process] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEKZUS_")}
    env.update(
        NEKZUS_SERVER__DATA_DIR=str(tmp_path / "data"),
        NEKZUS_SERVER__TLS__MODE="off",
        NEKZUS_SERVER__HOST="127.0.0.1",
        NEKZUS_RUNTIMES__DOCKER__HOST=docker_host,
        NEKZUS_RUNTIMES__DOCKER__SELF_ID="0" * 64,
    )

    async def start(**settings: str) -> str:
        port = free_port()
        log = (tmp_path / f"gateway-{len(processes)}.log").open("wb")
        with log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "nekzus", "serve",
                cwd=ROOT, env={**env, **settings, "NEKZUS_SERVER__PORT": str(port)},
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        async with asyncio.timeout(30), aiohttp.ClientSession() as session:
            while True:
                assert process.returncode is None, f"the gateway exited: {log.name}"
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{url}/healthz") as resp:
                        if resp.status == 200:
                            return url
                await asyncio.sleep(0.05)

    try:
        yield start, processes
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
            await process.wait()


async def wait_for_sigterm(docker_host: str, container_id: str, since: int) -> None:
    """Until the Engine reports that it sent the container SIGTERM: the stop is under way."""
    connector = aiohttp.UnixConnector(path=docker_host.removeprefix("unix://"))
    filters = json.dumps({"container": [container_id], "event": ["kill"]})
    async with asyncio.timeout(20), aiohttp.ClientSession(connector=connector) as engine:
        while True:
            params = {"since": str(since), "until": str(int(time.time()) + 1), "filters": filters}
            async with engine.get("http://docker/events", params=params) as resp:
                lines = (await resp.text()).splitlines()
            if any(json.loads(line)["Actor"]["Attributes"].get("signal") == "15" for line in lines if line):
                return
            await asyncio.sleep(0.1)


async def test_an_operation_cut_short_by_a_crash_reads_interrupted_after_the_restart(
    serve: tuple[Serve, list[asyncio.subprocess.Process]], docker_host: str, containers: Containers
) -> None:
    start, processes = serve
    made = await containers.create(labels=LINKED, cmd=DEAF)
    url = await start()
    since = int(time.time()) - 1
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{url}/api/v1/containers/{made['Id'][:12]}/stop?timeout={LONG_GRACE}"
        ) as resp:
            assert resp.status == 202
            op_id = (await resp.json())["operationId"]
        await wait_for_sigterm(docker_host, made["Id"], since)
        processes[0].send_signal(signal.SIGKILL)
        await processes[0].wait()

        url = await start()
        async with session.get(f"{url}/api/v1/operations/{op_id}") as resp:
            assert resp.status == 200
            op = await resp.json()
    assert op["state"] == "failed"
    assert op["error"] == "OPERATION_INTERRUPTED"
    assert "gateway restarted" in op["message"]
    assert op["action"] == "stop" and op["containerId"] == made["Id"][:12]
    assert op["finishedAt"] >= op["startedAt"]
