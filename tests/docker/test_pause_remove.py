"""Pause, unpause and removal against the private Docker Engine: every route and code, the state
model and the WebSocket following them, bulk and batch, ordering behind a stop, and the checks on
who may and what may not be asked. The rules alone are tests/unit/test_pause_remove.py."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiodocker
import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from nekzus.keys import EVENT_BUS
from runtimes import AlreadyPaused, ContainerRef, NotPaused, NotRunning, RuntimeFailure, StillRunning
from runtimes.docker import DockerRuntime
from tests.docker.test_websocket import connect
from tests.support.docker_engine import RUN_LABEL, TEST_IMAGE, Containers
from tests.support.gateway import LINKED, ClientFactory, Heard, make_config, next_event, watching
from tests.support.wsclient import WS
from tests.unit.test_errors import expect
from tests.unit.test_guard import EVIL
from tests.unit.test_security import bearer, security_config, token

# PID 1 ignores SIGTERM: a stop waits out its whole grace period.
SLOW_STOP = ["sleep", "300"]


async def accepted(resp: Any) -> str:
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["status"] == "accepted"
    assert resp.headers["Location"] == f"/api/v1/operations/{body['operationId']}"
    return str(body["operationId"])


async def listed(client: TestClient[Any, Any], cid: str) -> str | None:
    """The container's state in the list (every container), None when the list lacks it."""
    rows = await (await client.get("/api/v1/containers?all=true")).json()
    return next((c["state"] for c in rows if c["id"] == cid[:12]), None)


async def exists(docker: aiodocker.Docker, cid: str) -> bool:
    try:
        await docker.containers.container(cid).show()
    except aiodocker.DockerError as exc:
        assert exc.status == 404
        return False
    return True


async def volume_exists(docker: aiodocker.Docker, name: str) -> bool:
    try:
        await docker.volumes.get(name)  # type: ignore[no-untyped-call]  # aiodocker: unannotated
    except aiodocker.DockerError as exc:
        assert exc.status == 404
        return False
    return True


async def heard(ws: WS, message_type: str, **match: Any) -> dict[str, Any]:
    """A message of ``message_type`` with the given data, received already or yet to come: the
    runtime's state event and the operation's completion may arrive in either order."""
    for message in ws.seen:
        if message["type"] == message_type and all(message["data"].get(k) == v for k, v in match.items()):
            return message
    return await ws.until(message_type, **match)


async def ws_ready(client: TestClient[Any, Any]) -> WS:
    await watching(client)
    ws = await connect(client)
    await ws.until("hello")
    return ws


async def test_pause_and_unpause_reach_the_list_and_websocket_readers(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    made = await containers.create(labels=LINKED)
    cid = made["Id"][:12]
    ws = await ws_ready(client)

    op = await accepted(await client.post(f"/api/v1/containers/{cid}/pause"))
    done = await ws.until("container.pause.completed", operationId=op)
    assert done["data"]["containerId"] == cid and done["data"]["status"] == "paused"
    assert done["data"]["message"] == "Container paused successfully"
    state = await heard(ws, "container.state", containerId=cid, state="paused")
    assert state["data"]["previousState"] == "running"
    assert await containers.state(made["Id"]) == "paused"
    assert await listed(client, cid) == "paused"
    await expect(await client.post(f"/api/v1/containers/{cid}/pause"), 409, "CONTAINER_ALREADY_PAUSED")

    name = made["Name"].lstrip("/")
    op = await accepted(await client.post(f"/api/v1/containers/{name}/unpause", json={}))
    done = await ws.until("container.unpause.completed", operationId=op)
    assert done["data"]["message"] == "Container unpaused successfully"
    await heard(ws, "container.state", containerId=cid, state="running")
    assert await containers.state(made["Id"]) == "running"
    assert await listed(client, cid) == "running"
    await expect(await client.post(f"/api/v1/containers/{cid}/unpause"), 409, "CONTAINER_NOT_PAUSED")
    record = await (await client.get(f"/api/v1/operations/{op}")).json()
    assert (record["action"], record["state"]) == ("unpause", "completed")


async def test_pause_and_unpause_of_a_stopped_container_are_refused(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    made = await containers.create(labels=LINKED, start=False)
    cid = made["Id"][:12]
    body = await expect(await client.post(f"/api/v1/containers/{cid}/pause"), 409, "CONTAINER_NOT_RUNNING")
    assert "nothing runs" in body["message"]
    await expect(await client.post(f"/api/v1/containers/{cid}/unpause"), 409, "CONTAINER_NOT_PAUSED")
    for action in ("pause", "unpause"):
        await expect(
            await client.post(f"/api/v1/containers/nekzus-no-such/{action}"), 404, "CONTAINER_NOT_FOUND"
        )
    assert await containers.state(made["Id"]) == "created"


async def test_the_engines_own_refusals_keep_their_classes(docker_host: str, containers: Containers) -> None:
    """Reached past the pre-check (as when another client acts first), the Engine's conflicts are
    told apart, each with the backend's own sentence rather than the Engine's words."""
    made = await containers.create(labels=LINKED)
    stopped = ContainerRef((await containers.create(labels=LINKED, start=False))["Id"])
    runtime = DockerRuntime(docker_host)
    ref = ContainerRef(made["Id"])
    calls: list[tuple[Callable[[], Awaitable[object]], type[RuntimeFailure]]] = [
        (lambda: runtime.pause(ref), AlreadyPaused),
        (lambda: runtime.pause(stopped), NotRunning),
        (lambda: runtime.unpause(stopped), NotPaused),
        (lambda: runtime.remove(ref, force=False, volumes=False), StillRunning),
    ]
    try:
        await runtime.pause(ref)
        for call, error in calls:
            with pytest.raises(error) as raised:
                await call()
            assert made["Id"] not in raised.value.detail and stopped.id not in raised.value.detail
        await runtime.unpause(ref)
        assert await containers.state(made["Id"]) == "running"
    finally:
        await runtime.close()


async def test_bulk_and_batch_pause_and_unpause(client: TestClient[Any, Any], containers: Containers) -> None:
    running = [await containers.create(labels=LINKED) for _ in range(2)]
    stopped = await containers.create(labels=LINKED, start=False)
    unlinked = await containers.create()
    ids = [c["Id"][:12] for c in (*running, stopped, unlinked)]

    # Bulk actions act on every linked container of the Engine: unpause-all follows at once, so
    # the containers of other tests are frozen for as short a time as can be.
    paused = await (await client.post("/api/v1/containers/pause-all")).json()
    unpaused = await (await client.post("/api/v1/containers/unpause-all")).json()
    assert paused["message"] == "Pause all operation completed"
    assert unpaused["message"] == "Unpause all operation completed"
    for body in (paused, unpaused):
        # Only what the action changes: the stopped container is left out, as is the unlinked one.
        mine = {r["id"]: r for r in body["results"] if r["id"] in ids}
        assert set(mine) == set(ids[:2]) and all(r["success"] for r in mine.values())
    for c in (*running, unlinked):
        assert await containers.state(c["Id"]) == "running"
    assert await containers.state(stopped["Id"]) == "created"

    async def batch(action: str, *targets: str) -> dict[str, Any]:
        resp = await client.post("/api/v1/containers/batch", json={"action": action, "containerIds": targets})
        return {r["id"]: r for r in (await resp.json())["results"]}

    results = await batch("pause", ids[0], ids[2], ids[3])
    assert results[ids[0]]["success"] is True
    assert results[ids[2]]["error"] == "container not running"
    assert results[ids[3]]["error"] == "container is not linked to an approved app"
    assert await containers.state(running[0]["Id"]) == "paused"
    results = await batch("pause", ids[0])
    assert results[ids[0]]["error"] == "container already paused"
    results = await batch("unpause", ids[0], ids[1])
    assert results[ids[0]]["success"] is True
    assert results[ids[1]]["error"] == "container not paused"
    for c in (*running, unlinked):
        assert await containers.state(c["Id"]) == "running"


async def test_removal_of_a_stopped_container(client: TestClient[Any, Any], containers: Containers) -> None:
    made = await containers.create(labels=LINKED, start=False)
    cid = made["Id"][:12]
    ws = await ws_ready(client)
    resp = await client.delete(f"/api/v1/containers/{cid}")
    op = await accepted(resp)
    assert (await resp.json())["message"] == "Container removal initiated"
    done = await ws.until("container.remove.completed", operationId=op)
    assert done["data"]["containerId"] == cid and done["data"]["status"] == "removed"
    assert done["data"]["message"] == "Container removed successfully"
    removed = await heard(ws, "container.state", containerId=cid, state="removed")
    assert removed["data"]["previousState"] == "created"
    assert not await exists(containers.docker, made["Id"])
    assert await listed(client, cid) is None
    record = await (await client.get(f"/api/v1/operations/{op}")).json()
    assert (record["action"], record["state"], record["containerId"]) == ("remove", "completed", cid)
    await expect(await client.delete(f"/api/v1/containers/{cid}"), 404, "CONTAINER_NOT_FOUND")


async def test_a_live_container_needs_force(client: TestClient[Any, Any], containers: Containers) -> None:
    running = await containers.create(labels=LINKED)
    paused = await containers.create(labels=LINKED)
    await containers.docker.containers.container(paused["Id"]).pause()
    sub = Heard(client.app[EVENT_BUS])
    for made, state in ((running, "running"), (paused, "paused")):
        body = await expect(
            await client.delete(f"/api/v1/containers/{made['Id'][:12]}"), 409, "CONTAINER_RUNNING"
        )
        assert f"is {state}" in body["message"] and "force=true" in body["message"]
        assert await containers.state(made["Id"]) == state
    for made in (running, paused):
        await accepted(await client.delete(f"/api/v1/containers/{made['Id'][:12]}?force=true"))
        assert (await next_event(sub, "container.remove.")).type == "container.remove.completed"
        assert not await exists(containers.docker, made["Id"])


async def test_volumes_true_removes_the_anonymous_volumes(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    async def with_volume() -> tuple[str, str]:
        config: dict[str, Any] = {
            "Image": TEST_IMAGE,
            "Cmd": ["true"],
            "Labels": {RUN_LABEL: containers.run_id, **LINKED},
            "Volumes": {"/data": {}},
            "HostConfig": {"NetworkMode": "none"},
        }
        made = await containers.docker.containers.create(config, name=f"nekzus-test-{uuid.uuid4().hex[:10]}")
        containers.created.append(made.id)
        info = await made.show()
        return made.id, str(info["Mounts"][0]["Name"])

    sub = Heard(client.app[EVENT_BUS])
    kept, kept_volume = await with_volume()
    gone, gone_volume = await with_volume()
    try:
        await accepted(await client.delete(f"/api/v1/containers/{kept[:12]}"))
        await accepted(await client.delete(f"/api/v1/containers/{gone[:12]}?volumes=true"))
        for _ in range(2):
            assert (await next_event(sub, "container.remove.")).type == "container.remove.completed"
        assert await volume_exists(containers.docker, kept_volume)
        assert not await volume_exists(containers.docker, gone_volume)
    finally:
        for volume in (kept_volume, gone_volume):
            if await volume_exists(containers.docker, volume):
                await (await containers.docker.volumes.get(volume)).delete()  # type: ignore[no-untyped-call]  # aiodocker: unannotated


async def test_a_removal_runs_after_a_stop_accepted_before_it(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    made = await containers.create(labels=LINKED, cmd=SLOW_STOP)
    cid = made["Id"][:12]
    sub = Heard(client.app[EVENT_BUS])
    stop = await accepted(await client.post(f"/api/v1/containers/{cid}/stop?timeout=1"))
    remove = await accepted(await client.delete(f"/api/v1/containers/{cid}?force=true"))
    ended: list[tuple[str, str]] = []
    while len(ended) < 2:
        event = await next_event(sub, "container.")
        if event.type.endswith((".completed", ".failed")):
            ended.append((event.type, event.data["operationId"]))
    # Had the removal overtaken it, the stop would have failed on a container that is gone.
    assert ended == [("container.stop.completed", stop), ("container.remove.completed", remove)]
    assert not await exists(containers.docker, made["Id"])


async def test_unlinked_and_own_containers(
    gateway: ClientFactory, docker_host: str, containers: Containers
) -> None:
    own = await containers.create(labels=LINKED, start=False)
    unlinked = await containers.create(start=False)
    client = await gateway(
        make_config(docker_host, runtimes={"docker": {"host": docker_host, "self_id": own["Id"]}})
    )
    for query in ("", "?force=true", "?force=true&all=true&volumes=true"):
        body = await expect(
            await client.delete(f"/api/v1/containers/{own['Id'][:12]}{query}"), 403, "FORBIDDEN"
        )
        assert body["message"] == "The gateway does not remove its own container"
    body = await expect(
        await client.delete(f"/api/v1/containers/{unlinked['Id'][:12]}"), 409, "CONTAINER_NOT_LINKED"
    )
    assert "all=true" in body["message"]
    assert await exists(containers.docker, own["Id"]) and await exists(containers.docker, unlinked["Id"])
    sub = Heard(client.app[EVENT_BUS])
    await accepted(await client.delete(f"/api/v1/containers/{unlinked['Id'][:12]}?all=true"))
    assert (await next_event(sub, "container.remove.")).type == "container.remove.completed"
    assert not await exists(containers.docker, unlinked["Id"])


async def test_bad_input_is_400_and_changes_nothing(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    made = await containers.create(labels=LINKED)
    cid = made["Id"][:12]
    for query in ("force=maybe", "volumes=2", "all=NaN", "force=Infinity", "force=1e999"):
        body = await expect(await client.delete(f"/api/v1/containers/{cid}?{query}"), 400, "INVALID_REQUEST")
        assert query.split("=")[0] in body["message"]
    for bad in ("%2E%2E", f"{cid}%2F..", f"..%2F{cid}", f"{cid}%0A", "a" * 254, "-x", "%00"):
        path = URL(f"/api/v1/containers/{bad}", encoded=True)
        await expect(await client.delete(path), 400, "INVALID_CONTAINER_ID")
        await expect(
            await client.post(URL(f"/api/v1/containers/{bad}/pause", encoded=True)),
            400,
            "INVALID_CONTAINER_ID",
        )
    body = await expect(
        await client.delete(f"/api/v1/containers/{cid}", json={"force": True}), 400, "INVALID_REQUEST"
    )
    assert "query parameters" in body["message"]
    for payload in ({"timeout": "soon"}, {"timeout": float("inf")}, {"force": True}):
        resp = await client.post(f"/api/v1/containers/{cid}/pause", json=payload)
        assert resp.status == 400, (payload, await resp.text())
    await expect(await client.post(f"/api/v1/containers/{cid}/pause?force=maybe"), 400, "INVALID_REQUEST")
    for verb in ("pause-all", "unpause-all"):
        await expect(
            await client.post(f"/api/v1/containers/{verb}", json={"force": True}), 400, "INVALID_REQUEST"
        )
        assert (await client.get(f"/api/v1/containers/{verb}")).status == 405
    assert (await client.get(f"/api/v1/containers/{cid}/pause")).status == 405
    assert await containers.state(made["Id"]) == "running"


async def test_remote_clients_need_the_scopes(
    gateway: ClientFactory, docker_host: str, containers: Containers
) -> None:
    client = await gateway(security_config(docker_host))
    made = await containers.create(labels=LINKED)
    stopped = await containers.create(labels=LINKED, start=False)
    unlinked = await containers.create(start=False)
    reader = bearer(token(scopes=["read:containers"]))
    writer = bearer(token(scopes=["read:containers", "write:containers"]))
    cid = made["Id"][:12]
    for method, path in [
        ("POST", f"/api/v1/containers/{cid}/pause"),
        ("POST", f"/api/v1/containers/{cid}/unpause"),
        ("POST", "/api/v1/containers/pause-all"),
        ("POST", "/api/v1/containers/unpause-all"),
        ("DELETE", f"/api/v1/containers/{stopped['Id'][:12]}"),
    ]:
        body = await expect(await client.request(method, path, headers=reader), 403, "FORBIDDEN")
        assert "write:containers" in body["message"]
        # A page on another site may not use even a good token.
        foreign = {**writer, "Origin": EVIL}
        await expect(await client.request(method, path, headers=foreign), 403, "ORIGIN_NOT_ALLOWED")
    resp = await client.post(
        "/api/v1/containers/batch", json={"action": "pause", "containerIds": [cid]}, headers=reader
    )
    await expect(resp, 403, "FORBIDDEN")
    body = await expect(
        await client.delete(f"/api/v1/containers/{unlinked['Id'][:12]}?all=true", headers=writer),
        403,
        "FORBIDDEN",
    )
    assert "write:engine" in body["message"]
    assert await containers.state(made["Id"]) == "running"
    assert await exists(containers.docker, stopped["Id"]) and await exists(containers.docker, unlinked["Id"])

    sub = Heard(client.app[EVENT_BUS])
    await accepted(await client.post(f"/api/v1/containers/{cid}/pause", headers=writer))
    assert (await next_event(sub, "container.pause.")).type == "container.pause.completed"
    await accepted(await client.delete(f"/api/v1/containers/{stopped['Id'][:12]}", headers=writer))
    assert (await next_event(sub, "container.remove.")).type == "container.remove.completed"
    engine = bearer(token(scopes=["write:containers", "write:engine"]))
    await accepted(await client.delete(f"/api/v1/containers/{unlinked['Id'][:12]}?all=true", headers=engine))
    assert (await next_event(sub, "container.remove.")).type == "container.remove.completed"
