"""Creating and updating containers against the real Engine and the local registry: the container
made as the spec says, a missing image pulled with progress, names in use, an update that
recreates a container with the same configuration, one that finds nothing new, and failures that
leave the Engine as it was; and ``updateAvailable`` from the registry check."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiodocker
import pytest
from aiohttp.test_utils import TestClient

from nekzus.keys import EVENT_BUS, OPERATIONS
from nekzus.operations.tracker import JobProgress, JobText
from nekzus.realtime.events import Event
from nekzus.realtime.updates import UPDATES
from tests.support.docker_engine import QUICK_STOP, RUN_LABEL, TEST_IMAGE, Containers
from tests.support.gateway import JSON, ClientFactory, Heard, make_config, watching
from tests.support.registry import LocalRegistry


class Made:
    """Containers, volumes and images a test made through the gateway, removed afterwards."""

    def __init__(self, docker: aiodocker.Docker) -> None:
        self.docker = docker
        self.names: list[str] = []
        self.volumes: list[str] = []
        self.images: list[str] = []

    def name(self) -> str:
        made = f"nekzus-create-{uuid.uuid4().hex[:10]}"
        self.names.append(made)
        return made

    def volume(self) -> str:
        """A volume name of this test's own, removed after it (the create makes the volume)."""
        volume = f"nekzus-create-vol-{uuid.uuid4().hex[:8]}"
        self.volumes.append(volume)
        return volume

    async def inspect(self, name: str) -> dict[str, Any]:
        return dict(await self.docker.containers.container(name).show())

    async def named(self, prefix: str) -> list[dict[str, Any]]:
        """Every container whose name starts with ``prefix`` (a recreate's aside copies too)."""
        rows = await self.docker.containers.list(all=True, filters={"name": [prefix]})
        return [dict(row._container) for row in rows]

    async def cleanup(self) -> None:
        for name in self.names:
            for row in await self.named(name):
                await self.docker.containers.container(row["Id"]).delete(force=True)
        volumes: Any = self.docker.volumes  # aiodocker's volume methods carry no annotations
        for volume in self.volumes:
            try:
                await (await volumes.get(volume)).delete()
            except aiodocker.DockerError as exc:
                if exc.status != 404:
                    raise
        for image in self.images:
            try:
                await self.docker.images.delete(image, force=True)
            except aiodocker.DockerError as exc:
                if exc.status != 404:
                    raise


@pytest.fixture
async def made(docker: aiodocker.Docker) -> AsyncIterator[Made]:
    tracked = Made(docker)
    try:
        yield tracked
    finally:
        await tracked.cleanup()


class Events:
    """Every event the gateway publishes during a test, kept, so a wait can find one that came
    while the test waited for another."""

    def __init__(self, heard: Heard) -> None:
        self.heard = heard
        self.seen: list[Event] = []

    async def until(self, match: Callable[[Event], bool], *, timeout: float = 60) -> Event:
        found = next((event for event in self.seen if match(event)), None)
        async with asyncio.timeout(timeout):
            while found is None:
                event = await self.heard.get()
                self.seen.append(event)
                found = event if match(event) else None
        return found


@pytest.fixture
async def heard(client: TestClient[Any, Any]) -> AsyncIterator[Events]:
    await watching(client)  # so the gateway hears of each container it makes
    listener = Heard(client.app[EVENT_BUS])
    try:
        yield Events(listener)
    finally:
        listener.close()


async def finished(heard: Events, operation_id: str) -> tuple[Event, list[Event]]:
    """The completion or failure event of one operation, and the progress events it had before."""
    done = await heard.until(
        lambda e: e.data.get("operationId") == operation_id and e.type.endswith((".completed", ".failed"))
    )
    progress = [e for e in heard.seen if e.data.get("operationId") == operation_id and e is not done]
    return done, progress


async def listed(client: TestClient[Any, Any], heard: Events, container_id: str) -> list[dict[str, Any]]:
    """The container list once the gateway has heard of ``container_id``'s last change (a list
    is served from what its event stream told)."""
    await heard.until(lambda e: e.type == "container.state" and e.data["containerId"] == container_id[:12])
    body: list[dict[str, Any]] = await (await client.get("/api/v1/containers")).json()
    return body


async def accepted(client: TestClient[Any, Any], path: str, body: Any = None) -> str:
    resp = await client.post(path, json=body) if body is not None else await client.post(path)
    answer = await resp.json()
    assert resp.status == 202, answer
    assert resp.headers["Location"] == f"/api/v1/operations/{answer['operationId']}"
    assert answer["status"] == "accepted"
    return str(answer["operationId"])


async def expect_error(resp: Any, status: int, code: str) -> dict[str, Any]:
    body: dict[str, Any] = await resp.json()
    assert (resp.status, body["error"]) == (status, code), body
    assert body["message"]
    return body


def pushed(registry: LocalRegistry, made: Made) -> str:
    """A reference of this test's own on the registry, holding an image the Engine lacks."""
    reference = registry.reference(f"nekzus/create-{uuid.uuid4().hex[:10]}", "1")
    registry.push_changed(reference)
    made.images.append(reference)
    return reference


async def test_a_container_is_created_as_its_spec_says_linked_and_running(
    client: TestClient[Any, Any], heard: Events, made: Made, tmp_path: Path
) -> None:
    name, volume = made.name(), made.volume()
    spec = {
        "name": name,
        "image": TEST_IMAGE,
        "command": QUICK_STOP,
        "env": {"GREETING": "hello world", "EMPTY": ""},
        "ports": [{"containerPort": 8080}, {"containerPort": 53, "protocol": "udp", "hostIp": "127.0.0.1"}],
        "volumes": [
            {"source": volume, "target": "/data"},
            {"source": str(tmp_path), "target": "/host", "mode": "ro"},
        ],
        "labels": {"team": "blue"},
        "restartPolicy": "on-failure:3",
        "network": "none",
    }
    operation = await accepted(client, "/api/v1/containers", spec)
    done, _ = await finished(heard, operation)
    assert done.type == "container.create.completed", done.data
    assert done.data["name"] == name and done.data["status"] == "created"
    doc = await made.inspect(name)
    assert done.data["containerId"] == doc["Id"][:12]
    assert doc["State"]["Running"]
    config, host = doc["Config"], doc["HostConfig"]
    assert {"GREETING=hello world", "EMPTY="} <= set(config["Env"])
    assert config["Cmd"] == QUICK_STOP
    assert config["Labels"]["nekzus.enable"] == "true" and config["Labels"]["team"] == "blue"
    assert set(config["ExposedPorts"]) == {"8080/tcp", "53/udp"}
    assert host["PortBindings"]["53/udp"] == [{"HostIp": "127.0.0.1", "HostPort": ""}]
    assert host["Binds"] == [f"{volume}:/data:rw", f"{tmp_path}:/host:ro"]
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert host["NetworkMode"] == "none"
    # The record says the same, and the list shows the new container (it is linked).
    record = await (await client.get(f"/api/v1/operations/{operation}")).json()
    assert record["state"] == "completed" and record["containerId"] == doc["Id"][:12]
    assert any(
        c["name"] == name and c["updateAvailable"] is None for c in await listed(client, heard, doc["Id"])
    )


async def test_a_missing_image_is_pulled_with_progress_under_the_creates_operation(
    client: TestClient[Any, Any], heard: Events, made: Made, registry: LocalRegistry
) -> None:
    reference = pushed(registry, made)
    name = made.name()
    body = {"name": name, "image": reference, "start": False, "labels": {"nekzus.enable": "false"}}
    operation = await accepted(client, "/api/v1/containers", body)
    done, progress = await finished(heard, operation)
    assert done.type == "container.create.completed", done.data
    pulls = [e for e in progress if e.type == "image.pull.progress"]
    assert pulls and pulls[-1].data["status"] == "complete" and pulls[-1].data["image"] == reference
    doc = await made.inspect(name)
    assert doc["State"]["Status"] == "created" and doc["Config"]["Image"] == reference
    assert doc["Config"]["Labels"]["nekzus.enable"] == "false"
    assert all(c["name"] != name for c in await listed(client, heard, doc["Id"]))  # told not to be linked


async def test_a_name_in_use_is_409_at_once_or_fails_the_job_when_taken_in_between(
    client: TestClient[Any, Any], heard: Events, made: Made, containers: Containers
) -> None:
    existing = await containers.create(start=False)
    taken = existing["Name"].lstrip("/")
    resp = await client.post("/api/v1/containers", json={"name": taken, "image": TEST_IMAGE})
    await expect_error(resp, 409, "CONTAINER_NAME_IN_USE")
    assert len(await made.named(taken)) == 1

    # Taken after the 202: a job on the same name holds the create back until the name is gone.
    name = made.name()
    release = made.docker  # the test's own Engine client takes the name meanwhile

    async def hold(progress: JobProgress) -> None:
        await release.containers.create(
            {"Image": TEST_IMAGE, "Cmd": QUICK_STOP, "HostConfig": {"NetworkMode": "none"}}, name=name
        )

    client.app[OPERATIONS].submit_job(
        runtime="docker",
        resource="container",
        action="hold",
        target=name,
        work=hold,
        text=JobText("held", "held", "hold"),
    )
    operation = await accepted(client, "/api/v1/containers", {"name": name, "image": TEST_IMAGE})
    done, _ = await finished(heard, operation)
    assert done.type == "container.create.failed"
    assert done.data["error"] == "CONTAINER_NAME_IN_USE" and name in done.data["message"]


async def test_a_missing_image_or_network_fails_the_job_with_its_code(
    client: TestClient[Any, Any], heard: Events, made: Made, registry: LocalRegistry
) -> None:
    missing = registry.reference(f"nekzus/none-{uuid.uuid4().hex[:10]}", "1")
    name = made.name()
    operation = await accepted(client, "/api/v1/containers", {"name": name, "image": missing})
    done, _ = await finished(heard, operation)
    assert done.type == "container.create.failed" and done.data["error"] == "IMAGE_NOT_FOUND"
    body = {"name": name, "image": TEST_IMAGE, "network": f"nekzus-none-{uuid.uuid4().hex[:8]}"}
    operation = await accepted(client, "/api/v1/containers", body)
    done, _ = await finished(heard, operation)
    assert done.data["error"] == "NETWORK_NOT_FOUND", done.data
    assert await made.named(name) == []


async def test_a_container_that_does_not_start_is_kept_and_the_failure_says_so(
    client: TestClient[Any, Any], heard: Events, made: Made
) -> None:
    name = made.name()
    body = {"name": name, "image": TEST_IMAGE, "command": ["/no/such/program"], "network": "none"}
    operation = await accepted(client, "/api/v1/containers", body)
    done, _ = await finished(heard, operation)
    assert done.type == "container.create.failed" and done.data["error"] == "CONTAINER_CREATE_FAILED"
    assert "was created but did not start" in done.data["message"] and name in done.data["message"]
    assert "no/such" not in done.data["message"]  # the Engine's words stay in the log
    assert (await made.inspect(name))["State"]["Status"] in ("created", "exited")


VOLUME = {"source": "v1", "target": "/b"}
BAD_BODIES: list[tuple[Any, str]] = [
    ({"image": TEST_IMAGE}, "name"),
    ({"name": "x", "image": "Upper/Case"}, "image"),
    ({"name": "../etc", "image": TEST_IMAGE}, "name"),
    ({"name": "a%2Fb", "image": TEST_IMAGE}, "name"),
    ({"name": "a" * 129, "image": TEST_IMAGE}, "name"),
    ({"name": "x", "image": TEST_IMAGE, "command": "sleep 1"}, "command"),
    ({"name": "x", "image": TEST_IMAGE, "command": ["ok", 1]}, "command[1]"),
    ({"name": "x", "image": TEST_IMAGE, "command": ["x"] * 257}, "command"),
    ({"name": "x", "image": TEST_IMAGE, "env": {"A=B": "1"}}, "env.A=B"),
    ({"name": "x", "image": TEST_IMAGE, "env": ["NOEQUALS"]}, "env[0]"),
    ({"name": "x", "image": TEST_IMAGE, "ports": [{"containerPort": 0}]}, "ports[0].containerPort"),
    ({"name": "x", "image": TEST_IMAGE, "ports": [{"containerPort": True}]}, "ports[0].containerPort"),
    ({"name": "x", "image": TEST_IMAGE, "ports": [{"containerPort": 80.0}]}, "ports[0].containerPort"),
    ({"name": "x", "image": TEST_IMAGE, "ports": [{"containerPort": 10**30}]}, "ports[0].containerPort"),
    ({"name": "x", "image": TEST_IMAGE, "ports": [{"containerPort": 80, "hostIp": "x"}]}, "ports[0].hostIp"),
    ({"name": "x", "image": TEST_IMAGE, "volumes": [{**VOLUME, "source": "/a/../b"}]}, "volumes[0].source"),
    ({"name": "x", "image": TEST_IMAGE, "volumes": [{**VOLUME, "target": "rel"}]}, "volumes[0].target"),
    ({"name": "x", "image": TEST_IMAGE, "labels": {"nekzus.app.id": "grafana"}}, "labels.nekzus.app.id"),
    ({"name": "x", "image": TEST_IMAGE, "restartPolicy": "sometimes"}, "restartPolicy"),
    ({"name": "x", "image": TEST_IMAGE, "start": "yes"}, "start"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
async def test_a_bad_spec_is_400_naming_the_field_and_nothing_is_created(
    client: TestClient[Any, Any], made: Made, body: Any, field: str
) -> None:
    body = {**body, "name": made.name()} if body.get("name") == "x" else body
    body = await expect_error(await client.post("/api/v1/containers", json=body), 400, "VALIDATION_ERROR")
    assert body["field"] == field and body["message"].startswith(field)
    for name in made.names:
        assert await made.named(name) == []


async def test_numbers_json_does_not_have_and_unknown_fields_are_400(
    client: TestClient[Any, Any], made: Made
) -> None:
    name = made.name()
    for number in ("NaN", "Infinity", "-Infinity", "1e400"):
        raw = f'{{"name": "{name}", "image": "{TEST_IMAGE}", "ports": [{{"containerPort": {number}}}]}}'
        resp = await client.post("/api/v1/containers", data=raw, headers=JSON)
        body = await expect_error(resp, 400, "VALIDATION_ERROR")
        assert body["field"] == "ports[0].containerPort"
    base = {"name": name, "image": TEST_IMAGE}
    resp = await client.post("/api/v1/containers", json={**base, "privileged": True})
    body = await expect_error(resp, 400, "INVALID_REQUEST")
    assert "privileged" in body["message"]
    resp = await client.post("/api/v1/containers", json={**base, "ports": [{"x": 1}]})
    assert (await expect_error(resp, 400, "VALIDATION_ERROR"))["field"] == "ports[0].x"
    assert await made.named(name) == []


# -- Update -------------------------------------------------------------------------------------


async def create_from(
    client: TestClient[Any, Any], heard: Events, made: Made, reference: str
) -> dict[str, Any]:
    """A linked, running container made through the gateway from ``reference``; its inspect document."""
    name, volume = made.name(), made.volume()
    body = {
        "name": name,
        "image": reference,
        "command": QUICK_STOP,
        "env": {"MODE": "blue"},
        "labels": {"team": "blue"},
        "restartPolicy": "unless-stopped",
        "volumes": [{"source": volume, "target": "/data"}],
        "network": "none",
    }
    done, _ = await finished(heard, await accepted(client, "/api/v1/containers", body))
    assert done.type == "container.create.completed", done.data
    doc = await made.inspect(name)
    made.images.append(doc["Image"])
    return doc


async def update_available(client: TestClient[Any, Any], heard: Events, container: dict[str, Any]) -> Any:
    """The verdict after a check, as the list and the inspect show it (they must agree)."""
    await client.app[UPDATES].check()
    rows = await listed(client, heard, container["Id"])
    in_list = next(c["updateAvailable"] for c in rows if c["id"] == container["Id"][:12])
    inspected = await (await client.get(f"/api/v1/containers/{container['Id'][:12]}")).json()
    assert inspected["updateAvailable"] == in_list
    return in_list


async def test_an_update_recreates_the_container_on_the_new_image_with_its_configuration(
    client: TestClient[Any, Any], heard: Events, made: Made, registry: LocalRegistry
) -> None:
    reference = pushed(registry, made)
    old = await create_from(client, heard, made, reference)
    name = old["Name"].lstrip("/")
    assert await update_available(client, heard, old) is False
    registry.push_changed(reference)
    assert await update_available(client, heard, old) is True

    operation = await accepted(client, f"/api/v1/containers/{old['Id'][:12]}/update")
    done, progress = await finished(heard, operation)
    assert done.type == "container.update.completed", done.data
    assert done.data["updated"] is True and done.data["previousContainerId"] == old["Id"][:12]
    assert any(e.type == "image.pull.progress" for e in progress)
    new = await made.inspect(name)
    made.images.append(new["Image"])
    assert done.data["containerId"] == new["Id"][:12] != old["Id"][:12]
    assert new["Image"] != old["Image"] and new["Config"]["Image"] == reference
    assert new["State"]["Running"]
    for key in ("Env", "Cmd", "Labels"):
        assert new["Config"][key] == old["Config"][key], key
    for key in ("Binds", "RestartPolicy", "NetworkMode"):
        assert new["HostConfig"][key] == old["HostConfig"][key], key
    assert [row["Id"] for row in await made.named(name)] == [new["Id"]]  # the old one is gone
    assert await update_available(client, heard, new) is False

    operation = await accepted(client, f"/api/v1/containers/{name}/update")
    done, _ = await finished(heard, operation)
    assert done.type == "container.update.completed"
    assert done.data["updated"] is False and done.data["containerId"] == new["Id"][:12]
    assert (await made.inspect(name))["Id"] == new["Id"]


async def test_an_update_runs_after_a_stop_accepted_before_it_and_leaves_the_container_stopped(
    client: TestClient[Any, Any], heard: Events, made: Made, registry: LocalRegistry
) -> None:
    reference = pushed(registry, made)
    old = await create_from(client, heard, made, reference)
    registry.push_changed(reference)
    stop = await accepted(client, f"/api/v1/containers/{old['Id'][:12]}/stop")
    update = await accepted(client, f"/api/v1/containers/{old['Id'][:12]}/update")
    stopped, _ = await finished(heard, stop)
    done, _ = await finished(heard, update)
    assert stopped.type == "container.stop.completed"
    assert done.type == "container.update.completed" and done.data["updated"] is True
    assert heard.seen.index(stopped) < heard.seen.index(done)
    new = await made.inspect(old["Name"].lstrip("/"))
    made.images.append(new["Image"])
    assert new["Id"] != old["Id"] and new["State"]["Status"] == "created"  # it did not run: nor does this


def without_shell(registry: LocalRegistry, reference: str) -> None:
    """Push under ``reference`` an image with one file and no shell: a container that runs ``sh``
    is created from it, and fails to start."""
    tree = io.BytesIO()
    with tarfile.open(fileobj=tree, mode="w") as archive:
        marker = uuid.uuid4().hex.encode()
        info = tarfile.TarInfo("nekzus-empty")
        info.size = len(marker)
        archive.addfile(info, io.BytesIO(marker))
    scratch = registry.reference("nekzus/scratch", uuid.uuid4().hex[:12])
    registry.docker("import", "-", scratch, stdin=tree.getvalue())
    try:
        registry.push(scratch, reference)
    finally:
        registry.remove_local(scratch)


async def test_an_update_whose_new_container_fails_rolls_back_to_the_old_one(
    client: TestClient[Any, Any], heard: Events, made: Made, registry: LocalRegistry
) -> None:
    reference = pushed(registry, made)
    old = await create_from(client, heard, made, reference)
    name = old["Name"].lstrip("/")
    without_shell(registry, reference)
    operation = await accepted(client, f"/api/v1/containers/{name}/update")
    done, _ = await finished(heard, operation)
    assert done.type == "container.update.failed" and done.data["error"] == "CONTAINER_UPDATE_FAILED"
    assert "starting the new container failed" in done.data["message"]
    assert "rolled back" in done.data["message"]
    made.images.append(reference)
    back = await made.inspect(name)
    assert back["Id"] == old["Id"] and back["State"]["Running"] and back["Name"] == old["Name"]
    assert [row["Id"] for row in await made.named(name)] == [old["Id"]]


async def test_an_unreachable_registry_fails_the_update_and_makes_the_verdict_unknown(
    client: TestClient[Any, Any],
    heard: Events,
    made: Made,
    docker_host: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    own = LocalRegistry(tmp_path_factory.mktemp("registry"), docker_host)
    own.start()
    try:
        reference = pushed(own, made)
        old = await create_from(client, heard, made, reference)
        assert await update_available(client, heard, old) is False
    finally:
        own.stop()
    assert await update_available(client, heard, old) is None
    operation = await accepted(client, f"/api/v1/containers/{old['Id'][:12]}/update")
    done, _ = await finished(heard, operation)
    assert done.type == "container.update.failed" and done.data["error"] == "CONTAINER_UPDATE_FAILED"
    assert "not reachable" in done.data["message"]
    current = await made.inspect(old["Id"])
    assert current["State"]["Running"] and current["Name"] == old["Name"]


async def test_update_refusals(
    gateway: ClientFactory, docker_host: str, containers: Containers, docker: aiodocker.Docker
) -> None:
    plain = await containers.create(start=False)
    own = await containers.create(start=False)
    by_id = await docker.containers.create(
        {"Image": plain["Image"], "Cmd": QUICK_STOP, "Labels": {RUN_LABEL: containers.run_id}},
        name=f"nekzus-test-{uuid.uuid4().hex[:10]}",
    )
    containers.created.append(by_id.id)
    config = make_config(docker_host, runtimes={"docker": {"host": docker_host, "self_id": own["Id"]}})
    client = await gateway(config)
    resp = await client.post("/api/v1/containers/nekzus-no-such/update")
    await expect_error(resp, 404, "CONTAINER_NOT_FOUND")
    await expect_error(await client.post(f"/api/v1/containers/{own['Id'][:12]}/update"), 403, "FORBIDDEN")
    body = await expect_error(
        await client.post(f"/api/v1/containers/{by_id.id[:12]}/update"), 409, "OPERATION_NOT_SUPPORTED"
    )
    assert "image id" in body["message"]
    await expect_error(
        await client.post(f"/api/v1/containers/{plain['Id'][:12]}/update", json={"force": True}),
        400,
        "INVALID_REQUEST",
    )
    for bad in ("..", "a%2Fb", "x" * 300, "%2E%2E"):
        resp = await client.post(f"/api/v1/containers/{bad}/update")
        assert resp.status in (400, 404), bad
        assert (await resp.json())["error"] in ("INVALID_CONTAINER_ID", "NOT_FOUND"), bad
    inspected = await docker.containers.container(plain["Id"]).show()
    assert inspected["State"]["Status"] == "created"
    assert json.dumps(inspected["Config"]) == json.dumps(plain["Config"])
