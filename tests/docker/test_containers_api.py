"""List, inspect, lifecycle and operations against a real Docker Engine."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient
from yarl import URL

from nekzus.keys import EVENT_BUS
from tests.support.docker_engine import Containers
from tests.support.gateway import LINKED, Heard, next_event, state_heard, watching

HEX12 = re.compile(r"^[0-9a-f]{12}$")


def ids(body: list[dict[str, Any]]) -> set[str]:
    return {c["id"] for c in body}


async def test_list_shows_linked_containers_with_contract_fields(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    linked = await containers.create(labels=LINKED)
    await containers.create(labels={"nekzus.http.app.id": "grafana"}, start=False)
    unlinked = await containers.create()

    resp = await client.get("/api/v1/containers")
    assert resp.status == 200
    body = await resp.json()
    mine = [c for c in body if c["labels"].get("nekzus.test.run") == containers.run_id]
    assert len(mine) == 2
    assert unlinked["Id"][:12] not in ids(body)
    row = next(c for c in mine if c["id"] == linked["Id"][:12])
    assert set(row) == {
        "id", "name", "image", "state", "status", "created", "ports", "labels", "runtime", "namespace",
        "updateAvailable",
    }  # fmt: skip
    assert row["updateAvailable"] is None  # the first update check runs seconds after the start
    assert HEX12.match(row["id"])
    assert row["name"] == linked["Name"].lstrip("/")
    assert row["image"] == "nekzus-test:busybox"
    assert row["state"] == "running"
    assert row["status"].startswith("Up")
    assert isinstance(row["created"], int) and row["created"] > 1_600_000_000
    assert row["ports"] == []
    assert row["runtime"] == "docker" and row["namespace"] == ""
    created_row = next(c for c in mine if c["id"] != linked["Id"][:12])
    assert created_row["state"] == "created"


async def test_list_all_true_shows_unlinked_containers(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    unlinked = await containers.create()
    resp = await client.get("/api/v1/containers?all=true")
    assert resp.status == 200
    assert unlinked["Id"][:12] in ids(await resp.json())


async def test_approved_app_filter(client: TestClient[Any, Any], containers: Containers) -> None:
    approved = await containers.create(labels={"nekzus.http.app.id": "prometheus"})
    unapproved = await containers.create(labels={"nekzus.http.app.id": "not-in-config"})
    disabled = await containers.create(labels={"nekzus.enable": "false"})
    body = await (await client.get("/api/v1/containers")).json()
    assert approved["Id"][:12] in ids(body)
    assert unapproved["Id"][:12] not in ids(body)
    assert disabled["Id"][:12] not in ids(body)


async def test_list_rejects_bad_all_value(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/v1/containers?all=maybe")
    assert resp.status == 400
    assert (await resp.json())["error"] == "INVALID_REQUEST"


async def test_exited_container_maps_to_exited(client: TestClient[Any, Any], containers: Containers) -> None:
    await watching(client)
    sub = Heard(client.app[EVENT_BUS])
    done = await containers.create(labels=LINKED, cmd=["true"])
    await containers.docker.containers.container(done["Id"]).wait()
    # The list follows the Engine's event stream: it shows the exit once the gateway announced it.
    await state_heard(sub, done["Id"], "exited")
    sub.close()
    body = await (await client.get("/api/v1/containers")).json()
    row = next(c for c in body if c["id"] == done["Id"][:12])
    assert row["state"] == "exited"
    assert row["status"].startswith("Exited (0)")


async def test_inspect_returns_raw_document_with_secrets_masked(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    made = await containers.create(
        labels=LINKED,
        env=[
            "DB_PASSWORD=hunter2",
            "GITHUB_TOKEN=abc",
            "my_api_key=k",
            "PLAIN=visible",
            "DATABASE_URL=postgres://u:s3cret@db/x",
            "CACHE=redis://:s3cret@cache:6379/0",
            "SENTRY_DSN=https://s3cret@sentry.example/1",
            "DB_CONN=Server=db;User Id=sa;Password=s3cret;",
        ],
    )
    for address in (made["Id"][:12], made["Id"], made["Name"].lstrip("/")):
        resp = await client.get(f"/api/v1/containers/{address}")
        assert resp.status == 200
        doc = await resp.json()
        assert doc["Id"] == made["Id"]
        assert doc["Name"] == made["Name"]
        assert doc["State"]["Running"] is True
        env = doc["Config"]["Env"]
        assert "DB_PASSWORD=***" in env
        assert "GITHUB_TOKEN=***" in env
        assert "my_api_key=***" in env
        assert "PLAIN=visible" in env
        assert "DATABASE_URL=postgres://u:***@db/x" in env
        assert "CACHE=redis://:***@cache:6379/0" in env
        assert "SENTRY_DSN=https://***@sentry.example/1" in env
        assert "DB_CONN=***" in env
        text = await resp.text()
        assert "hunter2" not in text and "s3cret" not in text


async def test_inspect_unknown_container_is_404(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/v1/containers/0123456789ab")
    assert resp.status == 404
    body = await resp.json()
    assert body["error"] == "CONTAINER_NOT_FOUND"
    assert body["message"]


async def expect_invalid_id(client: TestClient[Any, Any], url: str, action: str) -> None:
    """An inspect of ``url`` and an ``action`` on it are both 400 INVALID_CONTAINER_ID; the URL is
    sent as written (the client must not normalise the path before the server sees it)."""
    for method, target in (("GET", url), ("POST", f"{url}/{action}")):
        resp = await client.session.request(method, URL(target, encoded=True))
        assert resp.status == 400, (method, target)
        assert (await resp.json())["error"] == "INVALID_CONTAINER_ID"


async def test_malformed_container_id_is_rejected(client: TestClient[Any, Any]) -> None:
    base = str(client.make_url("/api/v1/containers/"))
    for bad in ("-rf", "%2e%2e", "..%2F..%2Fversion", "a%2Fb", "a%20b", "_x"):
        await expect_invalid_id(client, base + bad, "stop")


async def test_trailing_newline_after_an_id_is_refused(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    made = await containers.create(labels=LINKED, name=f"nekzus-test-nl-{containers.run_id}")
    base = str(client.make_url("/api/v1/containers/"))
    name, short = made["Name"].lstrip("/"), made["Id"][:12]
    for bad in (f"{name}%0a", f"{short}%0A", f"{name}%0d%0a", f"{short}%0a%0a"):
        await expect_invalid_id(client, base + bad, "restart")
    batch = {"action": "stop", "containerIds": [f"{name}\n"]}
    resp = await client.post("/api/v1/containers/batch", json=batch)
    assert resp.status == 400
    assert (await resp.json())["error"] == "INVALID_REQUEST"
    assert await containers.state(made["Id"]) == "running"
    assert (await client.get(f"/api/v1/containers/{name}")).status == 200


async def test_start_accepts_then_completes_with_event(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    made = await containers.create(labels=LINKED, start=False)
    sub = Heard(client.app[EVENT_BUS])
    resp = await client.post(f"/api/v1/containers/{made['Id'][:12]}/start")
    assert resp.status == 202
    body = await resp.json()
    assert set(body) == {"status", "containerId", "message", "timestamp", "operationId"}
    assert body["status"] == "accepted"
    assert body["containerId"] == made["Id"][:12]
    assert body["message"] == "Container start initiated"
    assert resp.headers["Location"] == f"/api/v1/operations/{body['operationId']}"

    event = await next_event(sub, "container.start.")
    assert event.type == "container.start.completed"
    assert event.data == {
        "containerId": made["Id"][:12],
        "status": "started",
        "message": "Container started successfully",
        "timestamp": event.data["timestamp"],
        "operationId": body["operationId"],
    }
    assert await containers.state(made["Id"]) == "running"

    op = await (await client.get(f"/api/v1/operations/{body['operationId']}")).json()
    assert op["state"] == "completed"
    assert op["action"] == "start" and op["containerId"] == made["Id"][:12]
    assert op["finishedAt"] >= op["startedAt"]
    assert "error" not in op


async def test_stop_and_restart_by_name(client: TestClient[Any, Any], containers: Containers) -> None:
    made = await containers.create(labels=LINKED)
    name = made["Name"].lstrip("/")
    sub = Heard(client.app[EVENT_BUS])

    resp = await client.post(f"/api/v1/containers/{name}/restart?timeout=2")
    assert resp.status == 202
    body = await resp.json()
    assert body["message"] == "Container restart initiated" and body["containerId"] == made["Id"][:12]
    event = await next_event(sub, "container.restart.")
    assert event.type == "container.restart.completed"
    assert event.data["status"] == "restarted"
    assert event.data["message"] == "Container restarted successfully"

    resp = await client.post(f"/api/v1/containers/{name}/stop?timeout=30")
    assert resp.status == 202
    body = await resp.json()
    assert body["timeout"] == 30
    assert body["message"] == "Container stop initiated"
    event = await next_event(sub, "container.stop.")
    assert event.type == "container.stop.completed"
    assert event.data["status"] == "stopped"
    assert event.data["operationId"] == body["operationId"]
    assert await containers.state(made["Id"]) == "exited"


async def test_start_of_running_and_stop_of_stopped_are_409(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    running = await containers.create(labels=LINKED)
    stopped = await containers.create(labels=LINKED, start=False)
    resp = await client.post(f"/api/v1/containers/{running['Id'][:12]}/start")
    assert resp.status == 409
    assert (await resp.json())["error"] == "CONTAINER_ALREADY_STARTED"
    resp = await client.post(f"/api/v1/containers/{stopped['Id'][:12]}/stop")
    assert resp.status == 409
    assert (await resp.json())["error"] == "CONTAINER_ALREADY_STOPPED"


async def test_start_of_paused_container_resumes_it(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    made = await containers.create(labels=LINKED)
    await containers.docker.containers.container(made["Id"]).pause()
    sub = Heard(client.app[EVENT_BUS])
    resp = await client.post(f"/api/v1/containers/{made['Id'][:12]}/start")
    assert resp.status == 202
    assert (await next_event(sub, "container.start.")).type == "container.start.completed"
    assert await containers.state(made["Id"]) == "running"


async def test_lifecycle_of_unknown_container_is_404(client: TestClient[Any, Any]) -> None:
    for action in ("start", "stop", "restart"):
        resp = await client.post(f"/api/v1/containers/nekzus-no-such-container/{action}")
        assert resp.status == 404
        assert (await resp.json())["error"] == "CONTAINER_NOT_FOUND"


async def test_invalid_timeouts_are_rejected(client: TestClient[Any, Any], containers: Containers) -> None:
    made = await containers.create(labels=LINKED)
    # Unicode digits (Arabic-Indic three, fullwidth five) and whitespace are not a number of seconds.
    for value in ("0", "301", "-5", "abc", "1.5", "", "10s", "٣", "５", "1٣", "5%0A", "%205"):
        for action in ("stop", "restart"):
            resp = await client.post(f"/api/v1/containers/{made['Id'][:12]}/{action}?timeout={value}")
            assert resp.status == 400, (action, value)
            body = await resp.json()
            assert body == {
                "error": "INVALID_TIMEOUT",
                "message": "Timeout must be between 1 and 300 seconds",
            }
    assert await containers.state(made["Id"]) == "running"


async def test_failed_start_publishes_failure_event(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    broken = await containers.create(labels=LINKED, cmd=["/no/such/binary"], start=False)
    sub = Heard(client.app[EVENT_BUS])
    resp = await client.post(f"/api/v1/containers/{broken['Id'][:12]}/start")
    assert resp.status == 202
    operation_id = (await resp.json())["operationId"]
    event = await next_event(sub, "container.start.")
    assert event.type == "container.start.failed"
    assert event.data == {
        "containerId": broken["Id"][:12],
        "error": "CONTAINER_START_FAILED",
        "message": "Failed to start container",
        "timestamp": event.data["timestamp"],
        "operationId": operation_id,
    }
    op = await (await client.get(f"/api/v1/operations/{operation_id}")).json()
    assert op["state"] == "failed" and op["error"] == "CONTAINER_START_FAILED"


async def test_events_reach_every_subscriber(client: TestClient[Any, Any], containers: Containers) -> None:
    made = await containers.create(labels=LINKED, start=False)
    bus = client.app[EVENT_BUS]
    first, second = Heard(bus), Heard(bus)
    await client.post(f"/api/v1/containers/{made['Id'][:12]}/start")
    a = await next_event(first, "container.start.")
    b = await next_event(second, "container.start.")
    assert a is b


async def test_unknown_operation_is_404(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/v1/operations/does-not-exist")
    assert resp.status == 404
    body = await resp.json()
    assert body["error"] == "OPERATION_NOT_FOUND"
    assert "kept for 10 minutes" in body["message"]  # the configured retention, 600 s by default
