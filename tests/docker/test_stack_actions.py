"""Stack actions and deletion on the private Docker Engine with the real compose binary: every
action end to end with its progress events, a services subset, a failing healthcheck, a broken
compose file, a concurrent action, projects started by hand (readable: compose; unreadable: the
Engine), down with and without volumes, the deletion rules, and bad input that changes nothing.
The event mapping alone is tests/unit/test_stack_actions.py."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiodocker
import pytest
from aiohttp.test_utils import TestClient

from nekzus.jsoninput import MAX_DEPTH
from nekzus.keys import EVENT_BUS
from nekzus.realtime.events import Event
from nekzus.stacks.files import StackFiles
from nekzus.stacks.service import STACKS
from tests.support.gateway import JSON, ClientFactory, Heard, make_config
from tests.support.registry import LocalRegistry
from tests.support.stacks import HandProjects, compose_file, project_name, service
from tests.unit.test_errors import expect
from tests.unit.test_security import bearer, security_config, token

pytestmark = pytest.mark.timeout(300)
PREFIX = "nkza"
PROJECT = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"
# Healthy about 3 s after it starts: a deploy that waits for it is still busy a while.
SLOW = service(
    command=["sh", "-c", "trap 'exit 0' TERM; sleep 3; touch /tmp/ok; while :; do sleep 1; done"],
    healthcheck={"test": ["CMD", "test", "-f", "/tmp/ok"], "interval": "1s", "retries": 30},
)


@dataclass
class Run:
    """What one operation told: its progress events in order, then its end."""

    progress: list[Event]
    end: Event


class Managed:
    """Managed stacks written straight into the gateway's stacks directory, taken down (by
    ``hand_projects``) and deleted afterwards."""

    def __init__(self, files: StackFiles, projects: HandProjects) -> None:
        self.files = files
        self.projects = projects
        self.names: list[str] = []

    def make(self, compose: str, name: str | None = None) -> str:
        name = name or project_name(PREFIX)
        self.files.write(name, compose, None)
        self.names.append(name)
        self.projects.track(name)
        return name

    def cleanup(self) -> None:
        for name in self.names:
            self.files.delete(name)


@pytest.fixture
def managed(client: TestClient[Any, Any], hand_projects: HandProjects) -> Iterator[Managed]:
    made = Managed(client.app[STACKS].files, hand_projects)
    try:
        yield made
    finally:
        made.cleanup()


async def act(client: TestClient[Any, Any], name: str, action: str, body: Any = None) -> str:
    resp = await client.post(f"/api/v1/stacks/{name}/{action}", json=body)
    assert resp.status == 202, await resp.text()
    answer = await resp.json()
    assert (answer["stack"], answer["action"], answer["status"]) == (name, action, "accepted")
    assert resp.headers["Location"] == f"/api/v1/operations/{answer['operationId']}"
    return str(answer["operationId"])


async def ended(heard: Heard, op: str, *, timeout: float = 120) -> Run:
    """The events of operation ``op`` up to its end, which must come after every progress event."""
    progress: list[Event] = []
    async with asyncio.timeout(timeout):
        while True:
            event = await heard.get()
            if event.data.get("operationId") != op:
                continue
            if event.type != "stack.progress":
                return Run(progress, event)
            progress.append(event)


async def done(client: TestClient[Any, Any], heard: Heard, name: str, action: str, body: Any = None) -> Run:
    """``action`` run to its end, which must be a success."""
    run = await ended(heard, await act(client, name, action, body))
    assert run.end.type == f"stack.{action}.completed", run.end.data
    assert run.end.data["target"] == name and run.end.data["stack"] == name
    return run


async def states(docker: aiodocker.Docker, name: str) -> dict[str, str]:
    """Each service's container state as the Engine says it."""
    found = await docker.containers.list(all=True, filters={"label": [f"{PROJECT}={name}"]})
    return {c["Labels"][SERVICE]: c["State"] for c in found}


async def started_at(docker: aiodocker.Docker, name: str) -> dict[str, str]:
    found = await docker.containers.list(all=True, filters={"label": [f"{PROJECT}={name}"]})
    shown = [await docker.containers.container(c["Id"]).show() for c in found]
    return {s["Config"]["Labels"][SERVICE]: s["State"]["StartedAt"] for s in shown}


async def volume_names(docker: aiodocker.Docker, name: str) -> set[str]:
    listed = await docker.volumes.list(filters={"label": f"{PROJECT}={name}"})  # type: ignore[no-untyped-call]
    return {v["Name"] for v in listed["Volumes"] or []}


def steps(run: Run) -> list[tuple[str | None, str]]:
    return [(e.data["service"], e.data["status"]) for e in run.progress]


async def test_every_action_runs_with_progress_then_its_end(
    client: TestClient[Any, Any], heard: Heard, managed: Managed, docker: aiodocker.Docker
) -> None:
    name = managed.make(compose_file())
    run = await done(client, heard, name, "deploy")
    assert {("web", "created"), ("web", "started"), ("worker", "started")} <= set(steps(run))
    first = run.progress[0].data
    assert first["stack"] == name and first["action"] == "deploy"
    assert first["container"] == f"{name}-{first['service']}-1" and first["text"]
    assert run.end.data["message"] == "Stack deployed successfully" and run.end.data["via"] == "compose"
    assert run.end.data["services"] == ["web", "worker"]
    assert await states(docker, name) == {"web": "running", "worker": "running"}

    expected = {
        "stop": ({"timeout": 1}, "exited", "stopped"),
        "start": (None, "running", "started"),
        "restart": ({}, "running", "started"),
        "pause": ({"services": ["web", "worker"]}, "paused", "paused"),
        "unpause": (None, "running", "unpaused"),
    }
    for action, (body, state, step) in expected.items():
        run = await done(client, heard, name, action, body)
        assert ("web", step) in steps(run) and ("worker", step) in steps(run), (action, steps(run))
        assert await states(docker, name) == {"web": state, "worker": state}, action
    record = await (await client.get(f"/api/v1/operations/{run.end.data['operationId']}")).json()
    assert (record["resource"], record["target"], record["action"], record["state"]) == (
        "stack",
        name,
        "unpause",
        "completed",
    )
    run = await done(client, heard, name, "down")
    assert ("web", "removed") in steps(run)
    assert run.end.data["message"] == "Stack taken down successfully"
    assert await states(docker, name) == {}
    assert client.app[STACKS].files.get(name) is not None  # down keeps the files


async def test_the_stack_reads_as_each_action_left_it_as_soon_as_it_ends(
    client: TestClient[Any, Any], heard: Heard, managed: Managed, docker: aiodocker.Docker
) -> None:
    # A phone refreshes the moment it hears an action ended: what it reads must be the Engine's
    # state after the action, never the gateway's memory of before.
    name = managed.make(compose_file({"web": service(), "worker": service()}))
    for _ in range(3):
        for action, expected in (("deploy", "running"), ("stop", "exited"), ("down", None)):
            await done(client, heard, name, action)
            resp = await client.get(f"/api/v1/stacks/{name}")
            shown = {c["name"]: c["state"] for s in (await resp.json())["services"] for c in s["containers"]}
            truth = await states(docker, name)
            assert set(truth.values()) == ({expected} if expected else set()), truth
            assert sorted(shown.values()) == sorted(truth.values()), (action, shown)


async def test_down_keeps_volumes_unless_asked(
    client: TestClient[Any, Any], heard: Heard, managed: Managed, docker: aiodocker.Docker
) -> None:
    stored = service(volumes=["data:/data"])
    name = managed.make(compose_file({"web": stored, "worker": service()}, volumes={"data": {}}))
    await done(client, heard, name, "deploy")
    assert await volume_names(docker, name) == {f"{name}_data"}
    await done(client, heard, name, "down", {"removeOrphans": True})
    assert await states(docker, name) == {}
    assert await volume_names(docker, name) == {f"{name}_data"}
    await done(client, heard, name, "deploy", {"removeOrphans": True})
    await done(client, heard, name, "down", {"volumes": True})
    assert await states(docker, name) == {}
    assert await volume_names(docker, name) == set()


async def test_a_subset_of_services_is_all_that_is_touched(
    client: TestClient[Any, Any], heard: Heard, managed: Managed, docker: aiodocker.Docker
) -> None:
    name = managed.make(compose_file({"web": service(), "worker": service(), "cache": service()}))
    await done(client, heard, name, "deploy")
    before = await started_at(docker, name)
    run = await done(client, heard, name, "restart", {"services": ["web", "web"], "timeout": 1})
    assert {e.data["service"] for e in run.progress} == {"web"}
    assert run.end.data["services"] == ["web"]
    after = await started_at(docker, name)
    assert after["web"] != before["web"]
    assert (after["worker"], after["cache"]) == (before["worker"], before["cache"])
    await done(client, heard, name, "stop", {"services": ["cache"]})
    assert await states(docker, name) == {"web": "running", "worker": "running", "cache": "exited"}


async def test_a_failing_healthcheck_fails_the_deploy_with_composes_words(
    client: TestClient[Any, Any], heard: Heard, managed: Managed
) -> None:
    sick = service(healthcheck={"test": ["CMD", "false"], "interval": "1s", "retries": 1})
    name = managed.make(compose_file({"web": sick, "worker": service()}))
    run = await ended(heard, await act(client, name, "deploy"))
    assert run.end.type == "stack.deploy.failed"
    assert run.end.data["error"] == "STACK_DEPLOY_FAILED"
    assert run.end.data["message"] == f"Failed to deploy stack: container {name}-web-1 is unhealthy"
    assert client.app[STACKS].busy(name) is None


async def test_a_broken_compose_file_fails_with_composes_words_and_no_server_path(
    client: TestClient[Any, Any], heard: Heard, managed: Managed
) -> None:
    name = managed.make(compose_file())
    files = client.app[STACKS].files
    (files.directory(name) / "compose.yaml").write_text("services: [\n", encoding="utf-8")
    run = await ended(heard, await act(client, name, "deploy"))
    assert run.end.data["error"] == "STACK_DEPLOY_FAILED"
    message = run.end.data["message"]
    assert message.startswith("Failed to deploy stack: failed to parse compose.yaml: yaml:"), message
    assert str(files.root) not in message


async def test_a_second_action_while_one_runs_is_refused(
    client: TestClient[Any, Any], heard: Heard, managed: Managed
) -> None:
    name = managed.make(compose_file({"web": SLOW, "worker": service()}))
    op = await act(client, name, "deploy")
    for action, body in (("stop", None), ("deploy", {}), ("down", {"volumes": True})):
        busy = await expect(
            await client.post(f"/api/v1/stacks/{name}/{action}", json=body), 409, "STACK_BUSY"
        )
        assert busy["busy"] == "deploy"
    await expect(await client.delete(f"/api/v1/stacks/{name}?down=true"), 409, "STACK_BUSY")
    run = await ended(heard, op)
    assert run.end.type == "stack.deploy.completed"
    assert ("web", "healthy") in steps(run)
    await done(client, heard, name, "stop")


async def test_a_project_started_by_hand_is_controlled_through_its_files(
    client: TestClient[Any, Any], heard: Heard, hand_projects: HandProjects, docker: aiodocker.Docker
) -> None:
    name = project_name(PREFIX)
    hand_projects.up(name, compose_file())
    run = await done(client, heard, name, "stop", {"timeout": 1})
    assert run.end.data["via"] == "compose"
    assert await states(docker, name) == {"web": "exited", "worker": "exited"}
    await done(client, heard, name, "deploy")
    assert await states(docker, name) == {"web": "running", "worker": "running"}
    await expect(await client.delete(f"/api/v1/stacks/{name}"), 409, "STACK_NOT_MANAGED")


async def test_a_project_whose_files_are_gone_is_controlled_through_the_engine(
    client: TestClient[Any, Any], heard: Heard, hand_projects: HandProjects, docker: aiodocker.Docker
) -> None:
    name = project_name(PREFIX)
    shutil.rmtree(hand_projects.up(name, compose_file()))
    for action, body in (("deploy", None), ("pull", {}), ("down", {"volumes": False})):
        refused = await expect(
            await client.post(f"/api/v1/stacks/{name}/{action}", json=body), 409, "STACK_NOT_MANAGED"
        )
        assert "not readable by the gateway" in refused["message"]
    run = await done(client, heard, name, "stop", {"timeout": 1, "services": ["worker"]})
    assert run.end.data["via"] == "engine"
    assert [(e.data["service"], e.data["status"]) for e in run.progress] == [
        ("worker", "stopping"),
        ("worker", "stopped"),
    ]
    assert await states(docker, name) == {"web": "running", "worker": "exited"}
    run = await done(client, heard, name, "stop", {"timeout": 1})  # the stopped one is no failure
    assert await states(docker, name) == {"web": "exited", "worker": "exited"}
    await done(client, heard, name, "start")
    assert await states(docker, name) == {"web": "running", "worker": "running"}
    await done(client, heard, name, "pause")
    await done(client, heard, name, "restart", {"timeout": 1})
    assert await states(docker, name) == {"web": "running", "worker": "running"}
    await done(client, heard, name, "unpause")  # nothing paused: nothing to do, no failure


async def test_pull_reports_bytes_per_layer(
    client: TestClient[Any, Any],
    heard: Heard,
    managed: Managed,
    registry: LocalRegistry,
    docker: aiodocker.Docker,
) -> None:
    name = project_name(PREFIX)
    image = registry.reference(f"nkza/{name}", "1")
    registry.push_changed(image)
    try:
        managed.make(compose_file({"web": service(image=image), "worker": service(image=image)}), name)
        run = await done(client, heard, name, "pull")
        # One service pulls the image both use, the other waits for it (compose picks which).
        skipped = {service for service, status in steps(run) if status == "skipped"}
        assert len(skipped) == 1
        puller = ({"web", "worker"} - skipped).pop()
        assert (puller, "pulled") in steps(run)
        layers = [e.data for e in run.progress if "layer" in e.data]
        assert layers and {d["service"] for d in layers} == {puller}
        sized = [d for d in layers if "total" in d]
        assert sized and all(0 < d["current"] <= d["total"] for d in sized)
        assert await docker.images.inspect(image)
    finally:
        registry.remove_local(image)


async def test_the_gateways_own_container_is_never_stopped(
    gateway: ClientFactory, docker_host: str, hand_projects: HandProjects, docker: aiodocker.Docker
) -> None:
    name = project_name(PREFIX)
    hand_projects.up(name, compose_file())
    web = (await docker.containers.list(filters={"label": [f"{PROJECT}={name}", f"{SERVICE}=web"]}))[0]
    client = await gateway(
        make_config(docker_host, runtimes={"docker": {"host": docker_host, "self_id": web["Id"]}})
    )
    for action in ("stop", "restart", "pause", "down", "deploy"):
        refused = await expect(await client.post(f"/api/v1/stacks/{name}/{action}"), 403, "FORBIDDEN")
        assert "the gateway's own container" in refused["message"]
    heard = Heard(client.app[EVENT_BUS])
    try:
        await done(client, heard, name, "stop", {"services": ["worker"], "timeout": 1})
        await done(client, heard, name, "start")
    finally:
        heard.close()
    assert await states(docker, name) == {"web": "running", "worker": "running"}


async def test_delete_rules(
    client: TestClient[Any, Any], heard: Heard, managed: Managed, docker: aiodocker.Docker
) -> None:
    files = client.app[STACKS].files
    await expect(await client.delete(f"/api/v1/stacks/{project_name(PREFIX)}"), 404, "STACK_NOT_FOUND")
    await expect(await client.delete("/api/v1/stacks/Upper"), 400, "INVALID_STACK_NAME")
    idle = managed.make(compose_file())
    resp = await client.delete(f"/api/v1/stacks/{idle}")
    assert resp.status == 204 and files.get(idle) is None

    name = managed.make(compose_file({"web": service(volumes=["data:/data"])}, volumes={"data": {}}))
    await done(client, heard, name, "deploy")
    in_use = await expect(await client.delete(f"/api/v1/stacks/{name}"), 409, "STACK_IN_USE")
    assert "?down=true" in in_use["message"]
    await expect(await client.delete(f"/api/v1/stacks/{name}?down=maybe"), 400, "INVALID_REQUEST")
    assert files.get(name) is not None and await states(docker, name) == {"web": "running"}

    resp = await client.delete(f"/api/v1/stacks/{name}?down=true&volumes=true")
    assert resp.status == 202, await resp.text()
    run = await ended(heard, (await resp.json())["operationId"])
    assert (
        run.end.type == "stack.delete.completed" and run.end.data["message"] == "Stack deleted successfully"
    )
    assert ("web", "removed") in steps(run)
    assert files.get(name) is None
    assert await states(docker, name) == {} and await volume_names(docker, name) == set()
    await expect(await client.delete(f"/api/v1/stacks/{name}"), 404, "STACK_NOT_FOUND")


async def test_bad_bodies_and_names_change_nothing(
    client: TestClient[Any, Any], heard: Heard, managed: Managed, docker: aiodocker.Docker
) -> None:
    name = managed.make(compose_file())
    await done(client, heard, name, "deploy")
    before = await started_at(docker, name)
    path = f"/api/v1/stacks/{name}"
    deep = b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)
    await expect(await client.post(f"{path}/stop", data=deep, headers=JSON), 400, "INVALID_REQUEST")
    huge = b'{"services": ["' + b"a" * (2 << 20) + b'"]}'
    await expect(await client.post(f"{path}/stop", data=huge, headers=JSON), 413, "PAYLOAD_TOO_LARGE")
    await expect(await client.post(f"{path}/stop", data=b"[]", headers=JSON), 400, "INVALID_REQUEST")
    nan = b'{"timeout": NaN}'
    await expect(await client.post(f"{path}/stop", data=nan, headers=JSON), 400, "INVALID_TIMEOUT")
    for body, code, field in (
        ({"timeout": 0}, "INVALID_TIMEOUT", None),
        ({"timeout": 10**12}, "INVALID_TIMEOUT", None),
        ({"timeout": 1.5}, "INVALID_TIMEOUT", None),
        ({"timout": 1}, "INVALID_REQUEST", None),
        ({"volumes": True}, "INVALID_REQUEST", None),
        ({"services": ["web", "nope"]}, "VALIDATION_ERROR", "services[1]"),
        ({"services": ["web", 3]}, "VALIDATION_ERROR", "services[1]"),
        ({"services": ["../web"]}, "VALIDATION_ERROR", "services[0]"),
        ({"services": "web"}, "VALIDATION_ERROR", "services"),
        ({"services": []}, "VALIDATION_ERROR", "services"),
    ):
        found = await expect(await client.post(f"{path}/stop", json=body), 400, code)
        assert found.get("field") == field, body
    bad_flag = await expect(
        await client.post(f"{path}/down", json={"removeOrphans": "yes"}), 400, "VALIDATION_ERROR"
    )
    assert bad_flag["field"] == "removeOrphans"
    for bad in ("UPPER", "a..b", "-dash", "x" * 64):
        await expect(await client.post(f"/api/v1/stacks/{bad}/stop"), 400, "INVALID_STACK_NAME")
    for bad in ("a%2Fb", "..", "a/b"):
        assert (await client.post(f"/api/v1/stacks/{bad}/stop")).status in (400, 404)
    await expect(await client.post(f"/api/v1/stacks/{project_name(PREFIX)}/stop"), 404, "STACK_NOT_FOUND")
    assert client.app[STACKS].busy(name) is None
    assert not [e for e in _drain(heard) if e.type.startswith("stack.")]
    assert await started_at(docker, name) == before
    assert await states(docker, name) == {"web": "running", "worker": "running"}


def _drain(heard: Heard) -> list[Event]:
    drained: list[Event] = []
    while not heard.queue.empty():
        drained.append(heard.queue.get_nowait())
    return drained


async def test_remote_clients_need_write_stacks(
    gateway: ClientFactory, docker_host: str, hand_projects: HandProjects, docker: aiodocker.Docker
) -> None:
    name = project_name(PREFIX)
    hand_projects.up(name, compose_file())
    remote = await gateway(security_config(docker_host))
    others = bearer(token(scopes=["read:stacks", "write:containers"]))
    for method, path in (
        ("POST", f"/api/v1/stacks/{name}/stop"),
        ("DELETE", f"/api/v1/stacks/{name}?down=true"),
    ):
        await expect(await remote.request(method, path), 401, "UNAUTHORIZED")
        refused = await expect(await remote.request(method, path, headers=others), 403, "FORBIDDEN")
        assert "write:stacks" in refused["message"]
    allowed = bearer(token(scopes=["write:stacks"]))
    heard = Heard(remote.app[EVENT_BUS])
    try:
        resp = await remote.post(f"/api/v1/stacks/{name}/pause", headers=allowed)
        assert resp.status == 202, await resp.text()
        run = await ended(heard, (await resp.json())["operationId"])
    finally:
        heard.close()
    assert run.end.type == "stack.pause.completed"
    assert await states(docker, name) == {"web": "paused", "worker": "paused"}
