"""Every error path of the contract that the core can produce, each triggered for real."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from nekzus.errors import from_runtime
from nekzus.keys import EVENT_BUS
from runtimes import ContainerState, InUse, NotFound, OperationFailed, Unavailable, Unsupported
from runtimes.docker.session import without_userinfo
from tests.support.fakes import FakeRuntime, registry_of, summary
from tests.support.gateway import ClientFactory, Heard, make_config, next_event
from tests.support.wsclient import WS


async def expect(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body: dict[str, Any] = await resp.json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    return body


@pytest.fixture
def dead_socket(tmp_path: Path) -> str:
    return f"unix://{tmp_path}/nothing-listens-here.sock"


async def test_unreachable_runtime_is_503(gateway: ClientFactory, dead_socket: str) -> None:
    client = await gateway(make_config(dead_socket, runtimes={"docker": {"host": dead_socket}}))
    for method, path in [
        ("GET", "/api/v1/containers"),
        ("GET", "/api/v1/containers/stats"),
        ("GET", "/api/v1/containers/abc"),
        ("GET", "/api/v1/containers/abc/stats"),
        ("POST", "/api/v1/containers/abc/start"),
        ("POST", "/api/v1/containers/abc/stop"),
        ("POST", "/api/v1/containers/start-all"),
        ("POST", "/api/v1/containers/stop-all"),
        ("POST", "/api/v1/containers/restart-all"),
    ]:
        await expect(await client.request(method, path), 503, "RUNTIME_UNAVAILABLE")
    resp = await client.post("/api/v1/containers/batch", json={"action": "start", "containerIds": ["abc"]})
    await expect(resp, 503, "RUNTIME_UNAVAILABLE")
    body = await expect(await client.get("/readyz"), 503, "RUNTIME_UNAVAILABLE")
    # A LAN caller also learns why: the runtime's own sentence, as the 503s above carry it.
    reason = f"the Docker Engine at {dead_socket} does not answer"
    assert body["runtimes"]["docker"]["status"] == "unavailable"
    assert body["runtimes"]["docker"]["reason"].startswith(reason)
    health = await (await client.get("/api/v1/health")).json()
    assert health["status"] == "unhealthy"
    assert health["runtimes"]["docker"]["reason"].startswith(reason)
    assert (await client.get("/healthz")).status == 200


async def test_no_runtime_configured_is_500(gateway: ClientFactory, docker_host: str) -> None:
    client = await gateway(make_config(docker_host, runtimes={"docker": {"enabled": False}}))
    for method, path in [
        ("GET", "/api/v1/containers"),
        ("GET", "/api/v1/containers/abc"),
        ("POST", "/api/v1/containers/abc/restart"),
        ("GET", "/api/v1/containers/stats"),
        ("POST", "/api/v1/containers/stop-all"),
    ]:
        body = await expect(await client.request(method, path), 500, "NO_RUNTIME")
        assert body["message"] == "No container runtime configured"
    await expect(await client.get("/readyz"), 503, "RUNTIME_UNAVAILABLE")


# Every route with one concrete path, and the methods it takes (GET routes take HEAD as well).
_GET, _POST = {"GET", "HEAD"}, {"POST"}
ROUTES = [
    ("/healthz", _GET),
    ("/readyz", _GET),
    ("/api/v1/health", _GET),
    ("/api/v1/containers", _GET | _POST),
    ("/api/v1/containers/stats", _GET),
    ("/api/v1/containers/web", _GET | {"DELETE"}),
    ("/api/v1/containers/web/stats", _GET),
    ("/api/v1/containers/shop/web", _GET | {"DELETE"}),
    ("/api/v1/containers/shop/web/stats", _GET),
    ("/api/v1/containers/web/logs", _GET),
    ("/api/v1/containers/shop/web/logs", _GET),
    ("/api/v1/operations/abc", _GET),
    ("/api/v1/images", _GET),
    ("/api/v1/images/busybox", {"DELETE"}),
    ("/api/v1/volumes", _GET | _POST),
    ("/api/v1/volumes/data", {"DELETE"}),
    ("/api/v1/networks", _GET | _POST),
    ("/api/v1/networks/backend", {"DELETE"}),
    ("/api/v1/networks/backend/connect", _POST),
    ("/api/v1/networks/backend/disconnect", _POST),
    ("/api/v1/system", _GET),
    ("/api/v1/system/stats", _GET),
    # An image, volume or network may be called "pull" or "prune": DELETE names it there.
    ("/api/v1/images/pull", _POST | {"DELETE"}),
    ("/api/v1/images/prune", _POST | {"DELETE"}),
    ("/api/v1/volumes/prune", _POST | {"DELETE"}),
    ("/api/v1/networks/prune", _POST | {"DELETE"}),
    ("/api/v1/auth/status", _GET),
    ("/api/v1/auth/validate", _GET),
    ("/api/v1/ws", _GET),
    ("/api/v1/auth/login", _POST),
    *(
        (f"/api/v1/containers/{fixed}", _POST)
        for fixed in ("start-all", "stop-all", "restart-all", "pause-all", "unpause-all", "batch")
    ),
    ("/api/v1/containers/batch/export", _POST),
    ("/api/v1/containers/batch/export/preview", _POST),
    *(
        (f"/api/v1/containers/grafana-1/{action}", _POST)
        for action in ("start", "stop", "restart", "pause", "unpause", "export")
    ),
    ("/api/v1/containers/grafana-1/export/preview", _POST),
    ("/api/v1/containers/grafana-1/update", _POST),
    *(
        (f"/api/v1/containers/shop/web/{action}", _POST)
        for action in ("start", "stop", "restart", "pause", "unpause")
    ),
]


@pytest.mark.parametrize(("path", "methods"), ROUTES)
async def test_a_wrong_method_is_405_with_allow_on_every_route(
    gateway: ClientFactory, docker_host: str, path: str, methods: set[str]
) -> None:
    # No route may take another route's path for a different method (GET on an action path was
    # read as the Kubernetes path form and answered 400 INVALID_RUNTIME).
    client = await gateway(make_config(docker_host), runtimes=registry_of(FakeRuntime([summary(1)])))
    for method in {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"} - methods:
        resp = await client.request(method, path)
        assert resp.status == 405, (method, path, resp.status)
        assert set(resp.headers["Allow"].split(",")) == methods, (method, path)
        if method != "HEAD":
            await expect(resp, 405, "METHOD_NOT_ALLOWED")


async def test_a_namespace_without_kubernetes_is_invalid_runtime(
    gateway: ClientFactory, docker_host: str
) -> None:
    client = await gateway(make_config(docker_host), runtimes=registry_of(FakeRuntime([summary(1)])))
    for method, path in [
        ("GET", "/api/v1/containers?namespace=default"),
        ("GET", "/api/v1/containers/stats?namespace=default"),
        ("POST", "/api/v1/containers/stop-all?namespace=default"),
        ("GET", "/api/v1/containers/web?namespace=default"),
        ("GET", "/api/v1/containers/default/web"),
        ("GET", "/api/v1/containers?runtime=docker&namespace=default"),
        ("POST", "/api/v1/containers/web/stop?runtime=docker&namespace=default"),
    ]:
        await expect(await client.request(method, path), 400, "INVALID_RUNTIME")
    assert (await client.get("/api/v1/containers")).status == 200


async def test_runtime_failures_map_to_endpoint_codes(gateway: ClientFactory, docker_host: str) -> None:
    fake = FakeRuntime([summary(1)])
    client = await gateway(make_config(docker_host), runtimes=registry_of(fake))
    fake.fail["list_containers"] = OperationFailed("daemon says: secret upstream detail")
    body = await expect(await client.get("/api/v1/containers"), 500, "CONTAINER_LIST_FAILED")
    assert "secret upstream detail" not in body["message"]
    fake.fail["inspect"] = OperationFailed("secret upstream detail")
    await expect(await client.get(f"/api/v1/containers/{summary(1).id}"), 500, "CONTAINER_INSPECT_FAILED")
    fake.fail["stats"] = OperationFailed("secret upstream detail")
    await expect(await client.get(f"/api/v1/containers/{summary(1).id}/stats"), 500, "CONTAINER_STATS_FAILED")
    fake.fail["get"] = OperationFailed("secret upstream detail")
    await expect(await client.post(f"/api/v1/containers/{summary(1).id}/stop"), 500, "CONTAINER_STOP_FAILED")
    fake.fail["get"] = Unavailable("gone")
    await expect(await client.post(f"/api/v1/containers/{summary(1).id}/stop"), 503, "RUNTIME_UNAVAILABLE")
    fake.fail["get"] = Unsupported("a standalone pod has no controller")
    body = await expect(
        await client.post(f"/api/v1/containers/{summary(1).id}/stop"), 409, "OPERATION_NOT_SUPPORTED"
    )
    assert "controller" not in body["message"]


async def test_unexpected_error_is_generic_500(gateway: ClientFactory, docker_host: str) -> None:
    fake = FakeRuntime([summary(1)])
    client = await gateway(make_config(docker_host), runtimes=registry_of(fake))
    fake.fail["inspect"] = ValueError("Traceback: internal detail /etc/secret")
    resp = await client.get(f"/api/v1/containers/{summary(1).id}")
    body = await expect(resp, 500, "INTERNAL_ERROR")
    assert body == {"error": "INTERNAL_ERROR", "message": "An unexpected error occurred"}


async def test_bulk_starts_are_bounded_and_stops_are_not(gateway: ClientFactory, docker_host: str) -> None:
    fake = FakeRuntime([summary(n, state=ContainerState.EXITED) for n in range(1, 13)])
    fake.hold_actions = True
    client = await gateway(make_config(docker_host), runtimes=registry_of(fake))
    request = asyncio.ensure_future(client.post("/api/v1/containers/start-all"))
    async with asyncio.timeout(10), fake.changed:
        await fake.changed.wait_for(lambda: fake.active >= 5)
    assert fake.active == 5  # operations.concurrency, by default 5
    fake.release.set()
    body = await (await request).json()
    assert (body["total"], body["success"]) == (12, 12)
    assert fake.max_active == 5

    fake.release.clear()
    request = asyncio.ensure_future(client.post("/api/v1/containers/stop-all"))
    async with asyncio.timeout(10), fake.changed:
        await fake.changed.wait_for(lambda: fake.active == 12)  # every stop at once
    fake.release.set()
    body = await (await request).json()
    assert (body["total"], body["success"]) == (12, 12)


async def test_merged_list_skips_a_runtime_that_is_down(gateway: ClientFactory, docker_host: str) -> None:
    up, down = FakeRuntime([summary(1)]), FakeRuntime([summary(2)], name="kubernetes")
    down.fail["list_containers"] = Unavailable("gone")
    registry = registry_of(up, down)
    client = await gateway(make_config(docker_host), runtimes=registry)
    body = await (await client.get("/api/v1/containers")).json()
    assert [c["id"] for c in body] == [summary(1).id]
    await expect(await client.get("/api/v1/containers?runtime=kubernetes"), 503, "RUNTIME_UNAVAILABLE")
    up.fail["list_containers"] = Unavailable("gone too")
    await expect(await client.get("/api/v1/containers"), 503, "RUNTIME_UNAVAILABLE")


async def test_failed_stop_and_restart_publish_failure_events(
    gateway: ClientFactory, docker_host: str
) -> None:
    fake = FakeRuntime([summary(1)])
    client = await gateway(make_config(docker_host), runtimes=registry_of(fake))
    fake.fail["action"] = OperationFailed("daemon detail")
    sub = Heard(client.app[EVENT_BUS])
    for action in ("stop", "restart"):
        resp = await client.post(f"/api/v1/containers/{summary(1).id}/{action}")
        assert resp.status == 202
        operation_id = (await resp.json())["operationId"]
        event = await next_event(sub, f"container.{action}.")
        assert event.type == f"container.{action}.failed"
        assert event.data["error"] == f"CONTAINER_{action.upper()}_FAILED"
        assert event.data["message"] == f"Failed to {action} container"
        assert event.data["operationId"] == operation_id
        assert "daemon detail" not in str(event.data)


async def test_unreachable_docker_says_which_address_and_how_to_change_it(
    gateway: ClientFactory, dead_socket: str
) -> None:
    client = await gateway(make_config(dead_socket, runtimes={"docker": {"host": dead_socket}}))
    wanted = (
        f"Container runtime not available: the Docker Engine at {dead_socket} does not answer "
        "(set DOCKER_HOST or runtimes.docker.host to use another)"
    )
    for resp in (
        await client.get("/api/v1/containers"),
        await client.post("/api/v1/containers/abc/restart"),
        await client.post("/api/v1/containers/batch", json={"action": "stop", "containerIds": ["abc"]}),
        await client.post("/api/v1/containers/batch/export", json={"container_ids": ["abc"]}),
    ):
        body = await expect(resp, 503, "RUNTIME_UNAVAILABLE")
        assert body["message"] == wanted
    ws = WS(await client.ws_connect("/api/v1/ws"))
    await ws.until("hello")
    await ws.send("container.logs.subscribe", containerId="abc")
    error = await ws.until("container.logs.error", containerId="abc")
    assert error["data"]["error"] == "RUNTIME_UNAVAILABLE" and error["data"]["message"] == wanted
    await ws.ws.close()


def test_the_unreachable_message_leaves_out_a_login_name() -> None:
    assert without_userinfo("ssh://admin@docker.lan:22") == "ssh://docker.lan:22"
    assert without_userinfo("tcp://u:secret@10.0.0.5:2376") == "tcp://10.0.0.5:2376"
    assert without_userinfo("unix:///var/run/docker.sock") == "unix:///var/run/docker.sock"


def test_engine_objects_have_their_own_not_found_and_in_use_codes() -> None:
    gone = from_runtime(NotFound("no such volume", resource="volume", name="data"))
    assert (gone.status, gone.code, gone.message) == (404, "VOLUME_NOT_FOUND", "Volume 'data' does not exist")
    busy = from_runtime(InUse("used", detail="Used by web, db", resource="image"))
    assert (busy.status, busy.code, busy.message) == (409, "IMAGE_IN_USE", "Used by web, db")
    named = from_runtime(InUse("taken", resource="container_name"))
    assert (named.code, named.message) == ("CONTAINER_NAME_IN_USE", "Container name is in use")
