"""The Docker daemon dying in the middle of a stack action, through compose or through the Engine
directly: the operation ends ``failed`` with words about the lost daemon, the stack is not left
busy, and once the daemon is back the stack is what the action left and can be acted on again."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from nekzus.keys import EVENT_BUS
from tests.docker.test_stack_actions import SLOW, act, ended
from tests.support.gateway import ClientFactory, Heard, make_config
from tests.support.stacks import HandProjects, compose_file, project_name, service
from tests.support.unix_proxy import KillableEngine

pytestmark = pytest.mark.timeout(300)


async def _stack(client: Any, name: str) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/stacks/{name}")
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def reached(heard: Heard, op: str, status: str) -> None:
    """Until operation ``op`` reports the progress step ``status``."""
    async with asyncio.timeout(60):
        while True:
            event = await heard.get()
            if event.data.get("operationId") == op and event.data.get("status") == status:
                return


async def test_a_deploy_whose_daemon_dies_fails_and_frees_the_stack(
    gateway: ClientFactory, docker_host: str, tmp_path: Path, hand_projects: HandProjects
) -> None:
    name = project_name("nkzk")
    hand_projects.track(name)
    async with KillableEngine(docker_host.removeprefix("unix://"), tmp_path / "engine.sock") as engine:
        config = make_config(engine.host, stacks={"dir": str(tmp_path / "stacks")})
        client = await gateway(config)
        heard = Heard(client.app[EVENT_BUS])
        try:
            compose = compose_file({"web": SLOW, "worker": service()})
            resp = await client.post("/api/v1/stacks", json={"name": name, "compose": compose})
            assert resp.status == 201, await resp.text()
            op = await act(client, name, "deploy")
            # compose waits for web's healthcheck: the daemon dies under it.
            await reached(heard, op, "waiting")
            await engine.kill()
            run = await ended(heard, op)
            assert run.end.type == "stack.deploy.failed"
            assert run.end.data["error"] == "STACK_DEPLOY_FAILED"
            # Compose's own words about the lost daemon (which name its address, as the
            # gateway's RUNTIME_UNAVAILABLE does).
            message = run.end.data["message"]
            assert message.startswith("Failed to deploy stack: ")
            assert re.search(r"Docker daemon|connect|EOF", message), message
            resp = await client.get(f"/api/v1/operations/{op}")
            assert (await resp.json())["state"] == "failed"

            await engine.revive()
            # The stack is free again, and it is what compose left: both containers were created.
            stack = await _stack(client, name)
            assert stack["busy"] is None
            assert {s["name"]: len(s["containers"]) for s in stack["services"]} == {"web": 1, "worker": 1}
            op = await act(client, name, "down")
            run = await ended(heard, op)
            assert run.end.type == "stack.down.completed", run.end.data
            assert (await _stack(client, name))["status"] == "stopped"
        finally:
            heard.close()


async def test_an_engine_direct_stop_whose_daemon_dies_fails_naming_the_containers(
    gateway: ClientFactory, docker_host: str, tmp_path: Path, hand_projects: HandProjects
) -> None:
    # A project started by hand whose folder is gone afterwards: the gateway stops it through the
    # Engine, container by container. Its service ignores SIGTERM, so the Engine's stop call waits
    # out the grace period: the daemon dies while the call is open.
    name = project_name("nkzk")
    stubborn = service(command=["sh", "-c", "trap '' TERM; while :; do sleep 1; done"])
    folder = hand_projects.up(name, compose_file({"web": stubborn}))
    shutil.rmtree(folder)
    async with KillableEngine(docker_host.removeprefix("unix://"), tmp_path / "engine.sock") as engine:
        client = await gateway(make_config(engine.host))
        heard = Heard(client.app[EVENT_BUS])
        try:
            op = await act(client, name, "stop", {"timeout": 60})
            await reached(heard, op, "stopping")
            await engine.kill()
            run = await ended(heard, op)
            assert run.end.type == "stack.stop.failed"
            assert run.end.data["error"] == "STACK_STOP_FAILED"
            assert f"{name}-web-1" in run.end.data["message"]
            await engine.revive()
            stack = await _stack(client, name)
            assert stack["busy"] is None and stack["actions"] == [
                "start",
                "stop",
                "restart",
                "pause",
                "unpause",
            ]
        finally:
            heard.close()
