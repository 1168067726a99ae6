"""The one rule for request bodies: known fields only, two spellings that must agree, and a timeout
taken from the query or the body alike."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from nekzus.keys import EVENT_BUS
from runtimes import ContainerState
from tests.support.fakes import FakeRuntime, registry_of, summary
from tests.support.gateway import ClientFactory, Heard, make_config, next_event
from tests.unit.test_errors import expect


@pytest.fixture
def fake() -> FakeRuntime:
    return FakeRuntime([summary(1), summary(2, state=ContainerState.EXITED), summary(3, linked=False)])


@pytest.fixture
async def fclient(gateway: ClientFactory, docker_host: str, fake: FakeRuntime) -> TestClient[Any, Any]:
    return await gateway(make_config(docker_host), runtimes=registry_of(fake))


@pytest.mark.parametrize("action", ["stop-all", "restart-all"])
async def test_bulk_actions_take_the_timeout_from_the_body_or_the_query(
    fclient: TestClient[Any, Any], fake: FakeRuntime, action: str
) -> None:
    resp = await fclient.post(f"/api/v1/containers/{action}", json={"timeout": 1})
    assert resp.status == 200, await resp.text()
    assert ("fake-1", 1) in fake.timeouts and {t for _, t in fake.timeouts} == {1}
    fake.timeouts.clear()
    await fclient.post("/api/v1/containers/start-all")
    resp = await fclient.post(f"/api/v1/containers/{action}?timeout=7")
    assert resp.status == 200
    assert {t for _, t in fake.timeouts} == {7}
    fake.timeouts.clear()
    await fclient.post("/api/v1/containers/start-all")
    # Both, agreeing: fine. Disagreeing: refused before anything runs.
    resp = await fclient.post(f"/api/v1/containers/{action}?timeout=3", json={"timeout": 3})
    assert resp.status == 200 and {t for _, t in fake.timeouts} == {3}
    fake.timeouts.clear()
    await fclient.post("/api/v1/containers/start-all")
    body = await expect(
        await fclient.post(f"/api/v1/containers/{action}?timeout=3", json={"timeout": 5}),
        400,
        "INVALID_REQUEST",
    )
    assert "timeout" in body["message"]
    await expect(
        await fclient.post(f"/api/v1/containers/{action}", json={"timeout": "٣"}), 400, "INVALID_TIMEOUT"
    )
    assert fake.timeouts == []


async def test_single_and_batch_actions_take_the_timeout_from_either_place(
    fclient: TestClient[Any, Any], fake: FakeRuntime
) -> None:
    sub = Heard(fclient.app[EVENT_BUS])
    assert (await fclient.post("/api/v1/containers/fake-1/restart", json={"timeout": 4})).status == 202
    await next_event(sub, "container.restart.completed")
    assert fake.timeouts == [("fake-1", 4)]
    resp = await fclient.post(
        "/api/v1/containers/batch?timeout=6", json={"action": "stop", "containerIds": ["fake-1"]}
    )
    assert (await resp.json())["success"] == 1
    assert fake.timeouts[-1] == ("fake-1", 6)
    batch = {"action": "start", "containerIds": ["fake-1"], "timeout": 2}
    await expect(await fclient.post("/api/v1/containers/batch?timeout=9", json=batch), 400, "INVALID_REQUEST")
    await expect(
        await fclient.post("/api/v1/containers/fake-1/stop?timeout=9", json={"timeout": 2}),
        400,
        "INVALID_REQUEST",
    )


async def test_both_spellings_of_the_id_list_on_both_batch_routes(
    fclient: TestClient[Any, Any], fake: FakeRuntime
) -> None:
    for field in ("containerIds", "container_ids"):
        resp = await fclient.post("/api/v1/containers/batch", json={"action": "restart", field: ["fake-1"]})
        assert resp.status == 200 and (await resp.json())["success"] == 1, field
        resp = await fclient.post(
            "/api/v1/containers/batch/export/preview", json={field: ["fake-1", "fake-2"]}
        )
        assert resp.status == 200, (field, await resp.text())
        assert "fake-2" in (await resp.json())["content"]
    same = {"containerIds": ["fake-1"], "container_ids": ["fake-1"]}
    resp = await fclient.post("/api/v1/containers/batch", json={"action": "restart", **same})
    assert resp.status == 200
    assert (await fclient.post("/api/v1/containers/batch/export", json=same)).status == 200
    differ = {"containerIds": ["fake-1"], "container_ids": ["fake-2"]}
    for path, extra in (("batch", {"action": "stop"}), ("batch/export", {})):
        body = await expect(
            await fclient.post(f"/api/v1/containers/{path}", json={**extra, **differ}), 400, "INVALID_REQUEST"
        )
        assert "containerIds" in body["message"] and "container_ids" in body["message"]
    assert fake.containers[summary(1).full_id].state is ContainerState.RUNNING


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/containers/batch", {"action": "stop", "containerIds": ["fake-1"], "timout": 1}),
        ("/api/v1/containers/stop-all", {"timout": 1}),
        ("/api/v1/containers/restart-all", {"force": True}),
        ("/api/v1/containers/fake-1/stop", {"timout": 1}),
        ("/api/v1/containers/fake-1/export", {"sanitise_secrets": False}),
        ("/api/v1/containers/batch/export", {"container_ids": ["fake-1"], "stack": "x"}),
        ("/api/v1/auth/login", {"api_key": "nkz_x", "remember": True}),
    ],
)
async def test_every_body_refuses_unknown_fields_naming_them(
    fclient: TestClient[Any, Any], fake: FakeRuntime, path: str, body: dict[str, Any]
) -> None:
    unknown = next(k for k in body if k not in ("action", "containerIds", "container_ids", "api_key"))
    resp = await expect(await fclient.post(path, json=body), 400, "INVALID_REQUEST")
    assert repr(unknown) in resp["message"]
    assert fake.timeouts == [] and fake.containers[summary(1).full_id].state is ContainerState.RUNNING
