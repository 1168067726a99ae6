"""Pause, unpause and removal through the gateway on a fake runtime: the refusal rules and their
codes, the order of a removal behind an action accepted before it, the gateway's own container,
linking and the scope ``all=true`` needs. The real Engine's side is tests/docker/test_pause_remove.py."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from nekzus.errors import from_runtime
from nekzus.keys import EVENT_BUS, OPERATIONS
from runtimes import (
    AlreadyPaused,
    ContainerRef,
    ContainerState,
    ContainerSummary,
    NotFound,
    NotPaused,
    NotRunning,
    RemoveOutcome,
    StillRunning,
    Unsupported,
    removal_refusal,
)
from runtimes import kubeobjects as ko
from tests.support.fakes import FakeRuntime, registry_of, summary
from tests.support.gateway import ClientFactory, Heard, make_config, next_event
from tests.unit.test_errors import expect
from tests.unit.test_guard import EVIL
from tests.unit.test_runtime_policy import _kube_runtime
from tests.unit.test_security import bearer, security_config, token

RUNNING, PAUSED, EXITED = ContainerState.RUNNING, ContainerState.PAUSED, ContainerState.EXITED


def box(n: int, state: ContainerState = RUNNING, *, linked: bool = True) -> ContainerSummary:
    """A fake container with a short id of its own (``summary`` ids share their first 12 digits)."""
    return dataclasses.replace(summary(n, state=state, linked=linked), id=f"c{n:011d}", name=f"box-{n}")


async def gateway_on(gateway: ClientFactory, docker_host: str, fake: FakeRuntime) -> TestClient[Any, Any]:
    return await gateway(make_config(docker_host), runtimes=registry_of(fake))


async def accepted(resp: Any) -> dict[str, Any]:
    assert resp.status == 202, await resp.text()
    body: dict[str, Any] = await resp.json()
    assert resp.headers["Location"] == f"/api/v1/operations/{body['operationId']}"
    return body


# -- the rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(ContainerState))
@pytest.mark.parametrize("force", [False, True])
def test_a_live_container_is_removed_only_when_forced(state: ContainerState, force: bool) -> None:
    refused = removal_refusal(box(1, state), force=force)
    if state in (RUNNING, PAUSED, ContainerState.RESTARTING) and not force:
        assert isinstance(refused, StillRunning) and "force=true" in refused.detail
    else:
        assert refused is None


def test_kubernetes_refuses_every_pause_and_every_workload_removal() -> None:
    kube = _kube_runtime()
    for state in ContainerState:
        pod = dataclasses.replace(box(1, state), runtime="kubernetes", namespace="shop", controller="")
        for action in ("pause", "unpause"):
            refused = kube.refusal(pod, action, force=True)
            assert isinstance(refused, Unsupported) and "no pause" in refused.detail
        live = state in (RUNNING, PAUSED, ContainerState.RESTARTING, ContainerState.PENDING)
        assert isinstance(kube.removal_refusal(pod, force=False), StillRunning) is live
        assert kube.removal_refusal(pod, force=True) is None
    workload = dataclasses.replace(
        box(1, ContainerState.STOPPED), id="deployment/web", controller="deployment/web"
    )
    refused = kube.removal_refusal(workload, force=True)
    assert isinstance(refused, Unsupported) and "never workloads" in refused.detail
    owned = dataclasses.replace(box(1), runtime="kubernetes", controller="deployment/web")
    refused = kube.removal_refusal(owned, force=False)
    assert isinstance(refused, StillRunning) and "deployment/web will create a replacement" in refused.detail
    # A Job's pod that has finished its work is not replaced; one that runs is.
    assert ko.recreated_by(dataclasses.replace(owned, controller="job/nightly", state=EXITED)) == ""
    assert ko.recreated_by(dataclasses.replace(owned, controller="job/nightly")) == "job/nightly"
    assert ko.recreated_by(dataclasses.replace(owned, controller="")) == ""


def test_the_new_refusals_have_their_own_codes_and_phrases() -> None:
    cases = [
        (AlreadyPaused("x"), 409, "CONTAINER_ALREADY_PAUSED", "container already paused"),
        (NotPaused("x"), 409, "CONTAINER_NOT_PAUSED", "container not paused"),
        (NotRunning("x", detail="Nothing runs"), 409, "CONTAINER_NOT_RUNNING", "container not running"),
        (StillRunning("x", detail="Container web is running"), 409, "CONTAINER_RUNNING", ""),
    ]
    for exc, status, code, phrase in cases:
        error = from_runtime(exc, fallback="CONTAINER_PAUSE_FAILED", container_id="web")
        assert (error.status, error.code) == (status, code)
        assert error.phrase == (phrase or error.message)
    assert from_runtime(StillRunning("x", detail="Container web is running")).message == (
        "Container web is running"
    )


# -- pause and unpause --------------------------------------------------------------------------


async def test_pause_and_unpause_are_operations_with_their_own_refusals(
    gateway: ClientFactory, docker_host: str
) -> None:
    fake = FakeRuntime([box(1), box(2, EXITED)])
    client = await gateway_on(gateway, docker_host, fake)
    sub = Heard(client.app[EVENT_BUS])

    await expect(await client.post("/api/v1/containers/box-1/unpause"), 409, "CONTAINER_NOT_PAUSED")
    body = await accepted(await client.post("/api/v1/containers/box-1/pause"))
    assert set(body) == {"status", "containerId", "message", "timestamp", "operationId"}
    assert (body["containerId"], body["message"]) == ("c00000000001", "Container pause initiated")
    event = await next_event(sub, "container.pause.")
    assert event.type == "container.pause.completed"
    assert (event.data["status"], event.data["message"]) == ("paused", "Container paused successfully")
    assert event.data["operationId"] == body["operationId"]
    assert fake.containers[box(1).full_id].state is PAUSED

    await expect(await client.post("/api/v1/containers/box-1/pause"), 409, "CONTAINER_ALREADY_PAUSED")
    body = await accepted(await client.post("/api/v1/containers/box-1/unpause"))
    assert body["message"] == "Container unpause initiated"
    event = await next_event(sub, "container.unpause.")
    assert event.type == "container.unpause.completed"
    assert (event.data["status"], event.data["message"]) == ("unpaused", "Container unpaused successfully")
    assert fake.containers[box(1).full_id].state is RUNNING

    refused = await expect(await client.post("/api/v1/containers/box-2/pause"), 409, "CONTAINER_NOT_RUNNING")
    assert "box-2 is exited" in refused["message"]
    await expect(await client.post("/api/v1/containers/box-2/unpause"), 409, "CONTAINER_NOT_PAUSED")
    await expect(await client.post("/api/v1/containers/nope/pause"), 404, "CONTAINER_NOT_FOUND")
    op = await (await client.get(f"/api/v1/operations/{body['operationId']}")).json()
    assert (op["action"], op["state"]) == ("unpause", "completed")


async def test_a_pause_that_finds_the_container_paused_already_completes(
    gateway: ClientFactory, docker_host: str
) -> None:
    fake = FakeRuntime([box(1)])
    client = await gateway_on(gateway, docker_host, fake)
    sub = Heard(client.app[EVENT_BUS])
    fake.fail["action"] = AlreadyPaused("paused by someone else")
    await accepted(await client.post("/api/v1/containers/box-1/pause"))
    assert (await next_event(sub, "container.pause.")).type == "container.pause.completed"
    fake.fail["action"] = NotRunning("stopped meanwhile", detail="The container is not running")
    await accepted(await client.post("/api/v1/containers/box-1/pause"))
    failed = await next_event(sub, "container.pause.")
    assert failed.type == "container.pause.failed"
    assert failed.data["error"] == "CONTAINER_PAUSE_FAILED"
    assert failed.data["message"] == "Failed to pause container: The container is not running"


async def test_bulk_and_batch_pause_and_unpause(gateway: ClientFactory, docker_host: str) -> None:
    fake = FakeRuntime([box(1), box(2), box(3, EXITED), box(4, PAUSED), box(5, linked=False)])
    client = await gateway_on(gateway, docker_host, fake)

    body = await (await client.post("/api/v1/containers/pause-all")).json()
    # Only what the action changes: the stopped and the paused ones are left out, as is the unlinked.
    assert body["message"] == "Pause all operation completed"
    assert sorted(r["name"] for r in body["results"]) == ["box-1", "box-2"]
    assert (body["total"], body["success"], body["failed"]) == (2, 2, 0)
    assert {n: c.state for n, c in ((c.name, c) for c in fake.containers.values())} == {
        "box-1": PAUSED,
        "box-2": PAUSED,
        "box-3": EXITED,
        "box-4": PAUSED,
        "box-5": RUNNING,
    }

    body = await (await client.post("/api/v1/containers/unpause-all", json={"timeout": 5})).json()
    assert body["message"] == "Unpause all operation completed"
    assert sorted(r["name"] for r in body["results"]) == ["box-1", "box-2", "box-4"]

    resp = await client.post(
        "/api/v1/containers/batch",
        json={"action": "pause", "containerIds": ["box-1", "box-3", "box-5", "nope"]},
    )
    results = {r["id"]: r for r in (await resp.json())["results"]}
    assert results["c00000000001"]["success"] is True
    assert results["c00000000003"]["error"] == "container not running"
    assert results["c00000000005"]["error"] == "container is not linked to an approved app"
    assert results["nope"]["error"] == "container not found"
    resp = await client.post(
        "/api/v1/containers/batch", json={"action": "unpause", "containerIds": ["box-1", "box-2"]}
    )
    results = {r["id"]: r for r in (await resp.json())["results"]}
    assert results["c00000000001"]["success"] is True
    assert results["c00000000002"]["error"] == "container not paused"
    resp = await client.post("/api/v1/containers/batch", json={"action": "freeze", "containerIds": ["x"]})
    body = await expect(resp, 400, "INVALID_ACTION")
    assert "pause, unpause" in body["message"]


# -- removal ------------------------------------------------------------------------------------


async def test_removal_is_a_job_and_the_container_is_gone(gateway: ClientFactory, docker_host: str) -> None:
    fake = FakeRuntime([box(1, EXITED)])
    client = await gateway_on(gateway, docker_host, fake)
    sub = Heard(client.app[EVENT_BUS])
    body = await accepted(await client.delete("/api/v1/containers/box-1?volumes=true"))
    assert body == {
        "status": "accepted",
        "containerId": "c00000000001",
        "message": "Container removal initiated",
        "timestamp": body["timestamp"],
        "operationId": body["operationId"],
    }
    event = await next_event(sub, "container.remove.")
    assert event.type == "container.remove.completed"
    assert event.data == {
        "containerId": "c00000000001",
        "status": "removed",
        "message": "Container removed successfully",
        "timestamp": event.data["timestamp"],
        "operationId": body["operationId"],
    }
    assert fake.removed == [("box-1", False, True)] and not fake.containers
    op = await (await client.get(f"/api/v1/operations/{body['operationId']}")).json()
    assert (op["action"], op["state"], op["containerId"]) == ("remove", "completed", "c00000000001")


async def test_removal_refusals_before_the_202(gateway: ClientFactory, docker_host: str) -> None:
    own = dataclasses.replace(summary(0), name="gateway")  # make_config's self_id is 0 * 64
    fake = FakeRuntime([box(1), box(2, PAUSED), box(3, EXITED, linked=False), own])
    client = await gateway_on(gateway, docker_host, fake)
    sub = Heard(client.app[EVENT_BUS])
    for name in ("box-1", "box-2"):
        body = await expect(await client.delete(f"/api/v1/containers/{name}"), 409, "CONTAINER_RUNNING")
        assert "force=true" in body["message"]
    body = await expect(await client.delete("/api/v1/containers/box-3"), 409, "CONTAINER_NOT_LINKED")
    assert "all=true" in body["message"] and "write:engine" in body["message"]
    for query in ("", "?force=true", "?force=true&all=true&volumes=true"):
        body = await expect(await client.delete(f"/api/v1/containers/gateway{query}"), 403, "FORBIDDEN")
        assert body["message"] == "The gateway does not remove its own container"
    await expect(await client.delete("/api/v1/containers/nope"), 404, "CONTAINER_NOT_FOUND")
    assert fake.removed == [] and len(fake.containers) == 4

    await accepted(await client.delete("/api/v1/containers/box-3?all=true"))
    await accepted(await client.delete("/api/v1/containers/box-2?force=1"))
    for _ in range(2):
        assert (await next_event(sub, "container.remove.")).type == "container.remove.completed"
    assert sorted(fake.removed) == [("box-2", True, False), ("box-3", False, False)]


async def test_bad_removal_requests_are_400_and_change_nothing(
    gateway: ClientFactory, docker_host: str
) -> None:
    fake = FakeRuntime([box(1, EXITED)])
    client = await gateway_on(gateway, docker_host, fake)
    for query in ("force=maybe", "volumes=2", "all=yes%20please", "force=NaN", "force=Infinity"):
        body = await expect(await client.delete(f"/api/v1/containers/box-1?{query}"), 400, "INVALID_REQUEST")
        assert query.split("=")[0] in body["message"]
    # ".." folds the path away before it is sent: nothing matches what is left.
    await expect(await client.delete("/api/v1/containers/box-1/.."), 404, "NOT_FOUND")
    for bad in ("%2E%2E", "box-1%2F..", "box-1%2Fx", "box-1%0A", "box%201", "x" * 300, "-box"):
        resp = await client.delete(URL(f"/api/v1/containers/{bad}", encoded=True))
        await expect(resp, 400, "INVALID_CONTAINER_ID")
    resp = await client.delete("/api/v1/containers/box-1", json={"force": True})
    body = await expect(resp, 400, "INVALID_REQUEST")
    assert "query parameters" in body["message"]
    assert fake.removed == [] and len(fake.containers) == 1


async def test_a_removal_waits_for_a_stop_accepted_before_it(
    gateway: ClientFactory, docker_host: str
) -> None:
    fake = FakeRuntime([box(1)])
    fake.hold_actions = True
    client = await gateway_on(gateway, docker_host, fake)
    sub = Heard(client.app[EVENT_BUS])
    await accepted(await client.post("/api/v1/containers/box-1/stop"))
    async with asyncio.timeout(5), fake.changed:
        await fake.changed.wait_for(lambda: fake.active == 1)
    # The stop named it by name, the removal by short id: both are keyed by the full id.
    removal = await accepted(await client.delete("/api/v1/containers/c00000000001?force=true"))
    op = client.app[OPERATIONS].get(removal["operationId"])
    assert fake.removed == [] and op is not None and op.state == "pending"
    fake.release.set()
    first = await next_event(sub, "container.")
    second = await next_event(sub, "container.")
    assert (first.type, second.type) == ("container.stop.completed", "container.remove.completed")
    assert fake.removed == [("box-1", True, False)]


async def test_a_container_gone_before_its_removal_runs_fails_as_not_found(
    gateway: ClientFactory, docker_host: str
) -> None:
    fake = FakeRuntime([box(1, EXITED)])
    fake.fail["remove"] = NotFound("no such container")
    client = await gateway_on(gateway, docker_host, fake)
    sub = Heard(client.app[EVENT_BUS])
    body = await accepted(await client.delete("/api/v1/containers/box-1"))
    failed = await next_event(sub, "container.remove.")
    assert failed.type == "container.remove.failed"
    assert failed.data["error"] == "CONTAINER_NOT_FOUND" and failed.data["operationId"] == body["operationId"]
    op = await (await client.get(f"/api/v1/operations/{body['operationId']}")).json()
    assert (op["state"], op["error"]) == ("failed", "CONTAINER_NOT_FOUND")


class ControlledFake(FakeRuntime):
    """A runtime whose removals are made good by a controller, as a Deployment's pods are."""

    async def remove(self, ref: ContainerRef, *, force: bool, volumes: bool) -> RemoveOutcome | None:
        await super().remove(ref, force=force, volumes=volumes)
        return RemoveOutcome(recreated_by="deployment/web")


async def test_a_removal_says_which_controller_recreates_the_container(
    gateway: ClientFactory, docker_host: str
) -> None:
    fake = ControlledFake([box(1, EXITED)])
    client = await gateway_on(gateway, docker_host, fake)
    sub = Heard(client.app[EVENT_BUS])
    body = await accepted(await client.delete("/api/v1/containers/box-1"))
    event = await next_event(sub, "container.remove.")
    assert event.data["recreatedBy"] == "deployment/web"
    assert event.data["message"] == "Container removed; its controller deployment/web recreates it"
    op = await (await client.get(f"/api/v1/operations/{body['operationId']}")).json()
    assert op["recreatedBy"] == "deployment/web" and "deployment/web recreates it" in op["message"]


# -- who may ------------------------------------------------------------------------------------


async def test_scopes_and_browsers(gateway: ClientFactory, docker_host: str) -> None:
    fake = FakeRuntime([box(1), box(2, EXITED), box(3, EXITED, linked=False)])
    client = await gateway(security_config(docker_host), runtimes=registry_of(fake))
    reader = bearer(token(scopes=["read:containers"]))
    for method, path in [
        ("POST", "/api/v1/containers/box-1/pause"),
        ("POST", "/api/v1/containers/box-1/unpause"),
        ("POST", "/api/v1/containers/pause-all"),
        ("POST", "/api/v1/containers/unpause-all"),
        ("DELETE", "/api/v1/containers/box-2"),
    ]:
        body = await expect(await client.request(method, path, headers=reader), 403, "FORBIDDEN")
        assert "write:containers" in body["message"]
        await expect(await client.request(method, path), 401, "UNAUTHORIZED")
    writer = bearer(token(scopes=["read:containers", "write:containers"]))
    body = await expect(
        await client.delete("/api/v1/containers/box-3?all=true", headers=writer), 403, "FORBIDDEN"
    )
    assert "write:engine" in body["message"]
    await expect(await client.delete("/api/v1/containers/box-3", headers=writer), 409, "CONTAINER_NOT_LINKED")
    foreign = {**bearer(token()), "Origin": EVIL}
    for method, path in [
        ("POST", "/api/v1/containers/box-1/pause"),
        ("DELETE", "/api/v1/containers/box-2"),
        ("POST", "/api/v1/containers/pause-all"),
    ]:
        await expect(await client.request(method, path, headers=foreign), 403, "ORIGIN_NOT_ALLOWED")
    assert fake.removed == [] and fake.containers[box(1).full_id].state is RUNNING

    engine = bearer(token(scopes=["write:containers", "write:engine"]))
    await accepted(await client.delete("/api/v1/containers/box-3?all=true", headers=engine))
    await accepted(await client.delete("/api/v1/containers/box-2", headers=writer))
