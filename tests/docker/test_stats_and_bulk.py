"""Stats and bulk actions against a real Docker Engine."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from nekzus.keys import EVENT_BUS
from runtimes import ContainerRef
from runtimes.docker import DockerRuntime
from tests.support.docker_engine import Containers
from tests.support.gateway import LINKED, ClientFactory, Heard, make_config, next_event

BUSY = ["sh", "-c", "trap 'exit 0' TERM; while :; do :; done"]


def assert_stats_shape(body: dict[str, Any]) -> None:
    assert set(body) == {"containerId", "cpu", "memory", "network", "timestamp"}
    assert set(body["cpu"]) == {"usage", "coresUsed", "totalCores"}
    assert set(body["memory"]) == {"usage", "used", "limit", "available"}
    assert set(body["network"]) == {"rx", "tx"}
    assert isinstance(body["timestamp"], int)


async def test_single_stats_of_a_busy_container(client: TestClient[Any, Any], containers: Containers) -> None:
    made = await containers.create(labels=LINKED, cmd=BUSY)
    resp = await client.get(f"/api/v1/containers/{made['Id'][:12]}/stats")
    assert resp.status == 200
    body = await resp.json()
    assert_stats_shape(body)
    assert body["containerId"] == made["Id"][:12]
    # A busy loop keeps about one core busy (an idle container shows about 0): a real rate, not a
    # lifetime average. The floor leaves room for a machine whose other work takes its share.
    assert 20 <= body["cpu"]["usage"] <= 100 * body["cpu"]["totalCores"]
    assert abs(body["cpu"]["coresUsed"] * 100 - body["cpu"]["usage"]) < 0.01
    assert body["cpu"]["totalCores"] >= 1
    assert 0 < body["memory"]["used"] < body["memory"]["limit"]
    assert body["memory"]["available"] == body["memory"]["limit"] - body["memory"]["used"]
    assert body["network"] == {"rx": 0, "tx": 0}  # network none: no interface but lo


async def test_single_stats_answer_well_within_a_second_with_a_real_rate(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    made = await containers.create(labels=LINKED, cmd=BUSY)
    path = f"/api/v1/containers/{made['Id'][:12]}/stats"
    took = []
    for _ in range(4):
        begin = time.perf_counter()
        resp = await client.get(path)
        body = await resp.json()
        took.append(time.perf_counter() - begin)
        assert resp.status == 200, body
        assert body["cpu"]["usage"] > 0  # a rate over the last samples, never an empty first one
    # The Engine's own two-sample answer took 1-2 s a call. The first call for a container takes
    # two one-shot samples, one or two passes of the Engine's once-a-second collector depending on
    # where it is in its second; later ones answer against the gateway's previous sample, or
    # repeat one younger than the collector's pass.
    assert took[0] < 2.5, took
    assert max(took[1:]) < 0.5, took


async def test_never_started_container_reports_total_cores_like_the_others(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    idle = await containers.create(start=False)
    running = await containers.create()
    info = await containers.docker.system.info()
    cores = []
    for made in (idle, running):
        resp = await client.get(f"/api/v1/containers/{made['Id'][:12]}/stats")
        assert resp.status == 200
        cores.append((await resp.json())["cpu"]["totalCores"])
    assert cores == [float(info["NCPU"]), float(info["NCPU"])]


async def test_stats_of_unknown_container_is_404(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/api/v1/containers/0123456789ab/stats")
    assert resp.status == 404
    assert (await resp.json())["error"] == "CONTAINER_NOT_FOUND"


async def test_batch_stats_cover_linked_running_containers(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    running = [await containers.create(labels=LINKED) for _ in range(3)]
    stopped = await containers.create(labels=LINKED, start=False)
    unlinked = await containers.create()
    resp = await client.get("/api/v1/containers/stats")
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == {"containers", "timestamp"}
    seen = {row["containerId"] for row in body["containers"]}
    assert {c["Id"][:12] for c in running} <= seen
    assert stopped["Id"][:12] not in seen
    assert unlinked["Id"][:12] not in seen
    for row in body["containers"]:
        assert_stats_shape(row)


async def test_bulk_actions_touch_only_linked_containers(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    linked_running = await containers.create(labels=LINKED)
    linked_stopped = await containers.create(labels={"nekzus.http.app.id": "grafana"}, start=False)
    unlinked = await containers.create()

    resp = await client.post("/api/v1/containers/stop-all")
    assert resp.status == 200
    body = await resp.json()
    assert body["message"] == "Stop all operation completed"
    mine = {r["id"]: r for r in body["results"] if r["id"] in {linked_running["Id"][:12]}}
    assert mine[linked_running["Id"][:12]] == {
        "id": linked_running["Id"][:12],
        "name": linked_running["Name"].lstrip("/"),
        "success": True,
    }
    assert unlinked["Id"][:12] not in {r["id"] for r in body["results"]}
    assert linked_stopped["Id"][:12] not in {r["id"] for r in body["results"]}
    assert body["total"] == len(body["results"]) == body["success"] + body["failed"]
    assert await containers.state(linked_running["Id"]) == "exited"
    assert await containers.state(unlinked["Id"]) == "running"

    resp = await client.post("/api/v1/containers/start-all")
    body = await resp.json()
    assert body["message"] == "Start all operation completed"
    started = {r["id"] for r in body["results"] if r["success"]}
    assert {linked_running["Id"][:12], linked_stopped["Id"][:12]} <= started
    assert await containers.state(linked_stopped["Id"]) == "running"

    sub = Heard(client.app[EVENT_BUS])
    resp = await client.post("/api/v1/containers/restart-all?timeout=2")
    body = await resp.json()
    assert body["message"] == "Restart all operation completed"
    assert {linked_running["Id"][:12], linked_stopped["Id"][:12]} <= {r["id"] for r in body["results"]}
    assert body["failed"] == 0
    # Bulk actions announce each result like single ones do.
    assert (await next_event(sub, "container.restart.")).type == "container.restart.completed"
    assert await containers.state(unlinked["Id"]) == "running"


async def test_bulk_never_touches_the_gateways_own_container(
    gateway: ClientFactory, docker_host: str, containers: Containers
) -> None:
    me = await containers.create(labels=LINKED)
    other = await containers.create(labels=LINKED)
    client = await gateway(
        make_config(docker_host, runtimes={"docker": {"host": docker_host, "self_id": me["Id"]}})
    )
    body = await (await client.post("/api/v1/containers/stop-all")).json()
    acted = {r["id"] for r in body["results"]}
    assert other["Id"][:12] in acted
    assert me["Id"][:12] not in acted
    assert await containers.state(me["Id"]) == "running"

    body = await (
        await client.post(
            "/api/v1/containers/batch", json={"action": "restart", "containerIds": [me["Id"][:12]]}
        )
    ).json()
    assert body["results"] == [
        {
            "id": me["Id"][:12],
            "name": me["Name"].lstrip("/"),
            "success": False,
            "error": "refusing to act on the gateway's own container",
        }
    ]


async def test_batch_reports_each_container(client: TestClient[Any, Any], containers: Containers) -> None:
    a = await containers.create(labels=LINKED)
    b = await containers.create(labels=LINKED, start=False)
    unlinked = await containers.create()
    resp = await client.post(
        "/api/v1/containers/batch",
        json={
            "action": "stop",
            "containerIds": [a["Id"][:12], b["Id"][:12], unlinked["Id"][:12], "nekzus-missing", a["Id"][:12]],
            "timeout": 5,
        },
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["message"] == "Batch operation completed"
    assert (body["total"], body["success"], body["failed"]) == (4, 1, 3)
    results = {r["id"]: r for r in body["results"]}
    assert results[a["Id"][:12]]["success"] is True
    assert results[b["Id"][:12]] == {
        "id": b["Id"][:12],
        "name": b["Name"].lstrip("/"),
        "success": False,
        "error": "container already stopped",
    }
    assert results[unlinked["Id"][:12]]["error"] == "container is not linked to an approved app"
    assert results["nekzus-missing"] == {
        "id": "nekzus-missing",
        "name": "",
        "success": False,
        "error": "container not found",
    }
    assert await containers.state(a["Id"]) == "exited"
    assert await containers.state(unlinked["Id"]) == "running"


async def test_batch_start_of_running_container_fails_that_item(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    a = await containers.create(labels=LINKED)
    body = await (
        await client.post("/api/v1/containers/batch", json={"action": "start", "containerIds": [a["Id"]]})
    ).json()
    assert body["results"] == [
        {
            "id": a["Id"][:12],
            "name": a["Name"].lstrip("/"),
            "success": False,
            "error": "container already running",
        }
    ]


async def test_batch_validation_errors(client: TestClient[Any, Any]) -> None:
    cases: list[tuple[Any, int, str]] = [
        ({"action": "explode", "containerIds": ["a"]}, 400, "INVALID_ACTION"),
        ({"containerIds": ["a"]}, 400, "INVALID_ACTION"),
        ({"action": "start", "containerIds": []}, 400, "EMPTY_CONTAINER_LIST"),
        ({"action": "start"}, 400, "EMPTY_CONTAINER_LIST"),
        ({"action": "start", "containerIds": "abc"}, 400, "INVALID_REQUEST"),
        ({"action": "start", "containerIds": [1, 2]}, 400, "INVALID_REQUEST"),
        ({"action": "start", "containerIds": ["../x"]}, 400, "INVALID_REQUEST"),
        ({"action": "stop", "containerIds": ["a"], "timeout": 0}, 400, "INVALID_TIMEOUT"),
        ({"action": "stop", "containerIds": ["a"], "timeout": "ten"}, 400, "INVALID_TIMEOUT"),
        ({"action": "stop", "containerIds": ["a"], "timeout": 2.5}, 400, "INVALID_TIMEOUT"),
        ({"action": "stop", "containerIds": ["a"], "timeout": True}, 400, "INVALID_TIMEOUT"),
        (["start"], 400, "INVALID_REQUEST"),
    ]
    for payload, status, code in cases:
        resp = await client.post("/api/v1/containers/batch", json=payload)
        assert resp.status == status, payload
        body = await resp.json()
        assert body["error"] == code, payload
        assert body["message"]
    for raw in (b"{not json", b"", b"\xff\xfe"):
        resp = await client.post(
            "/api/v1/containers/batch", data=raw, headers={"Content-Type": "application/json"}
        )
        assert resp.status == 400
        assert (await resp.json())["error"] == "INVALID_REQUEST"


async def test_bulk_results_after_concurrent_restarts(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    made = await asyncio.gather(*(containers.create(labels=LINKED) for _ in range(7)))
    body = await (
        await client.post(
            "/api/v1/containers/batch",
            json={"action": "restart", "containerIds": [m["Id"][:12] for m in made], "timeout": 2},
        )
    ).json()
    assert (body["total"], body["success"], body["failed"]) == (7, 7, 0)
    assert [r["id"] for r in body["results"]] == [m["Id"][:12] for m in made]


async def test_a_recent_sample_answers_while_the_engines_next_pass_is_away(
    docker_host: str, containers: Containers, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = await containers.create(cmd=BUSY)
    runtime = DockerRuntime(docker_host)
    try:
        ref = ContainerRef(made["Id"][:12])
        first = await runtime.stats(ref)
        # As if that sample were 1.5 s old and the collector's next pass a long way off.
        taken, sample = runtime._stats._fresh[ref.id]
        runtime._stats._fresh[ref.id] = (taken - 1.5, sample)
        release = asyncio.Event()
        real = runtime._stats._sample

        async def far_pass(ref: ContainerRef) -> dict[str, Any]:
            await release.wait()
            return await real(ref)

        monkeypatch.setattr(runtime._stats, "_sample", far_pass)
        begin = time.perf_counter()
        again = await runtime.stats(ref)
        assert again is first and time.perf_counter() - begin < 0.5
        in_flight = runtime._stats._sampling[ref.id]
        release.set()
        newer = await asyncio.wait_for(asyncio.shield(in_flight), 15)
        assert newer is not first and runtime._stats._fresh[ref.id][1] is newer
        assert newer.cpu_percent > 0
    finally:
        await runtime.close()
