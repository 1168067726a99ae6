"""The Kubernetes runtime through the gateway, against a small stateful fake apiserver.

Every branch of the backend that a real control plane cannot be made to take on demand (RBAC
refusals, a missing metrics API, an expired watch, a controller that never gets ready) is here;
tests/kube_real/test_kube_real.py runs the main paths against a real kube-apiserver.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient

from nekzus.config import Config
from tests.support.fake_kube import FakeKube
from tests.support.gateway import GENEROUS_LIMITS, ClientFactory, data_dir
from tests.support.wsclient import WS
from tests.unit.test_errors import expect

NS = "shop"
LINKED = {"nekzus/enable": "true"}
WEB = [{"name": "app", "image": "nginx:1.25", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]


def kube_config(kubeconfig: Path, **kubernetes: Any) -> Config:
    return Config(
        server={"data_dir": str(data_dir()), "tls": {"mode": "off"}},
        runtimes={
            "primary": "kubernetes",
            "docker": {"enabled": False},
            "kubernetes": {"enabled": True, "kubeconfig": str(kubeconfig), **kubernetes},
        },
        apps=[{"id": "shop", "name": "Shop"}],
        ratelimit=GENEROUS_LIMITS,
    )


@pytest.fixture
async def kclient(gateway: ClientFactory, kubeconfig: Path) -> TestClient[Any, Any]:
    return await gateway(kube_config(kubeconfig))


async def connect(client: TestClient[Any, Any]) -> WS:
    ws = WS(await client.ws_connect("/api/v1/ws"))
    await ws.until("hello")
    return ws


def pods_of(kube: FakeKube, name: str) -> list[dict[str, Any]]:
    return [p for p in kube.items("pods", NS) if p["metadata"]["name"].startswith(f"{name}-")]


async def accepted(resp: Any) -> str:
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["status"] == "accepted"
    return str(body["operationId"])


# -- list and inspect ---------------------------------------------------------------------------


async def test_list_maps_pod_states_fields_and_links(kclient: TestClient[Any, Any], kube: FakeKube) -> None:
    kube.add_deployment(NS, "web", 2, annotations=LINKED, containers=WEB)
    kube.add_pod(NS, "waiting", phase="Pending")
    kube.add_pod(NS, "done", phase="Succeeded")
    kube.add_pod(NS, "broken", phase="Failed")
    kube.add_pod("other", "elsewhere", labels={"nekzus.http.app.id": "shop"})
    kube.add_pod(NS, "leaving")
    # Terminating for its whole grace period: the list below must see it so, however late it runs.
    kube.delete_pod(NS, "leaving", grace=30, full_grace=True)

    resp = await kclient.get("/api/v1/containers?runtime=kubernetes&all=true")
    assert resp.status == 200
    rows = {c["name"]: c for c in await resp.json()}
    states = {name: row["state"] for name, row in rows.items() if not name.startswith("web-")}
    assert states == {
        "waiting": "pending",
        "done": "exited",
        "broken": "failed",
        "elsewhere": "running",
        "leaving": "stopped",
    }
    assert rows["leaving"]["status"] == "Terminating"
    web = [row for name, row in rows.items() if name.startswith("web-")]
    assert len(web) == 2
    assert web[0]["state"] == "running" and web[0]["namespace"] == NS and web[0]["runtime"] == "kubernetes"
    assert web[0]["id"] == web[0]["name"] and web[0]["image"] == "nginx:1.25"
    assert web[0]["ports"] == [{"ip": "", "privatePort": 80, "publicPort": None, "type": "tcp"}]
    assert isinstance(web[0]["created"], int) and web[0]["created"] > 1_600_000_000

    # Linked by default: the annotation on the web pods, the app label on the other one.
    linked = await (await kclient.get("/api/v1/containers")).json()
    assert sorted(c["name"] for c in linked) == sorted([*(r["name"] for r in web), "elsewhere"])
    only_shop = await (await kclient.get(f"/api/v1/containers?namespace={NS}&all=true")).json()
    assert {c["namespace"] for c in only_shop} == {NS} and "elsewhere" not in {c["name"] for c in only_shop}


async def test_namespaces_setting_limits_what_is_seen(
    gateway: ClientFactory, kube: FakeKube, kubeconfig: Path
) -> None:
    kube.add_pod(NS, "mine")
    kube.add_pod("other", "theirs")
    client = await gateway(kube_config(kubeconfig, namespaces=[NS, "third"]))
    rows = await (await client.get("/api/v1/containers?all=true")).json()
    assert [c["name"] for c in rows] == ["mine"]
    assert await (await client.get("/api/v1/containers?all=true&namespace=other")).json() == []
    await expect(await client.get("/api/v1/containers/other/theirs"), 404, "CONTAINER_NOT_FOUND")
    await expect(await client.post("/api/v1/containers/other/theirs/restart"), 404, "CONTAINER_NOT_FOUND")


async def test_inspect_in_query_and_path_form(kclient: TestClient[Any, Any], kube: FakeKube) -> None:
    containers: list[dict[str, Any]] = [
        {
            **WEB[0],
            "env": [
                {"name": "DB_PASSWORD", "value": "hunter2"},
                {"name": "MODE", "value": "prod"},
                {"name": "DATABASE_URL", "value": "postgres://u:s3cret@db/x"},
            ],
        },
        {"name": "sidecar", "image": "busybox:1"},
    ]
    kube.add_deployment(NS, "web", 1, annotations=LINKED, containers=containers)
    pod = pods_of(kube, "web")[0]["metadata"]["name"]

    by_query = await (await kclient.get(f"/api/v1/containers/{pod}?runtime=kubernetes&namespace={NS}")).json()
    by_path = await (await kclient.get(f"/api/v1/containers/{NS}/{pod}")).json()
    assert by_query == by_path
    assert set(by_path) == {
        "id", "name", "namespace", "runtime", "state", "status", "created", "node", "podIP",
        "labels", "annotations", "workload", "containers", "env",
    }  # fmt: skip
    assert by_path["workload"] == {"kind": "deployment", "name": "web"}
    assert by_path["node"] == "node-1" and by_path["state"] == "running"
    assert [c["name"] for c in by_path["containers"]] == ["app", "sidecar"]
    assert by_path["containers"][0]["ready"] is True and by_path["containers"][0]["state"] == "running"
    assert by_path["env"]["app"] == ["DB_PASSWORD=***", "MODE=prod", "DATABASE_URL=postgres://u:***@db/x"]
    assert "hunter2" not in str(by_path) and "s3cret" not in str(by_path)

    await expect(await kclient.get(f"/api/v1/containers/{NS}/nope"), 404, "CONTAINER_NOT_FOUND")
    await expect(await kclient.get(f"/api/v1/containers/nope?namespace={NS}"), 404, "CONTAINER_NOT_FOUND")
    await expect(await kclient.get(f"/api/v1/containers/{NS}/{pod}?runtime=docker"), 400, "INVALID_RUNTIME")
    await expect(await kclient.get("/api/v1/containers/Bad_NS/x"), 400, "INVALID_REQUEST")
    # A trailing newline is not part of a name, neither in the path nor in the query.
    await expect(await kclient.get(f"/api/v1/containers/{NS}%0A/{pod}"), 400, "INVALID_REQUEST")
    await expect(await kclient.get(f"/api/v1/containers/{NS}/{pod}%0A"), 400, "INVALID_CONTAINER_ID")
    await expect(await kclient.get(f"/api/v1/containers/{pod}?namespace={NS}%0A"), 400, "INVALID_REQUEST")
    await expect(await kclient.get(f"/api/v1/containers?namespace={NS}%0A"), 400, "INVALID_REQUEST")


async def test_path_form_does_not_shadow_stats_routes(kclient: TestClient[Any, Any], kube: FakeKube) -> None:
    kube.add_pod(NS, "stats", containers=WEB)
    kube.add_pod(NS, "web", containers=WEB)
    kube.set_metrics(NS, "web", {"app": {"cpu": "100m", "memory": "10Mi"}})
    # "{id}/stats": the stats of a pod called "shop" (there is none), not the pod "stats".
    await expect(await kclient.get(f"/api/v1/containers/{NS}/stats"), 404, "CONTAINER_NOT_FOUND")
    # The query form still reaches the pod called "stats".
    resp = await kclient.get(f"/api/v1/containers/stats?runtime=kubernetes&namespace={NS}")
    assert resp.status == 200
    resp = await kclient.get(f"/api/v1/containers/{NS}/web/stats")
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["containerId"] == "web"

    # Nor do the actions: GET on "{namespace}/restart" is the action's path, answered 405, and a
    # pod called "restart" is reached with the query form.
    kube.add_pod(NS, "restart", containers=WEB)
    resp = await kclient.get(f"/api/v1/containers/{NS}/restart")
    await expect(resp, 405, "METHOD_NOT_ALLOWED")
    assert resp.headers["Allow"] == "POST"
    resp = await kclient.get(f"/api/v1/containers/restart?namespace={NS}")
    assert resp.status == 200 and (await resp.json())["name"] == "restart"


# -- lifecycle ----------------------------------------------------------------------------------


async def test_stop_scales_to_zero_and_start_restores_the_count(
    kclient: TestClient[Any, Any], kube: FakeKube
) -> None:
    kube.add_deployment(NS, "web", 3, annotations=LINKED, containers=WEB)
    ws = await connect(kclient)
    pod = pods_of(kube, "web")[0]["metadata"]["name"]
    await watching(kube)

    op = await accepted(await kclient.post(f"/api/v1/containers/{NS}/{pod}/stop"))
    done = await ws.until("container.stop.completed", operationId=op)
    assert done["data"]["containerId"] == pod and done["data"]["namespace"] == NS
    deployment = kube.get("deployments", NS, "web")
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 0
    assert deployment["metadata"]["annotations"]["nekzus/stopped-replicas"] == "3"
    assert pods_of(kube, "web") == []
    states = [
        m["data"] for m in ws.seen if m["type"] == "container.state" and m["data"]["containerId"] == pod
    ]
    assert states and states[0]["state"] == "stopped" and states[0]["namespace"] == NS

    # The workload stays listed, so it can be started again.
    rows = await (await kclient.get(f"/api/v1/containers?namespace={NS}")).json()
    assert [(c["id"], c["state"]) for c in rows] == [("deployment/web", "stopped")]
    await expect(await kclient.post(f"/api/v1/containers/{NS}/{pod}/start"), 404, "CONTAINER_NOT_FOUND")

    op = await accepted(await kclient.post(f"/api/v1/containers/deployment%2Fweb/start?namespace={NS}"))
    done = await ws.until("container.start.completed", operationId=op)
    assert done["data"]["containerId"] == "deployment/web"
    deployment = kube.get("deployments", NS, "web")
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 3
    assert "nekzus/stopped-replicas" not in (deployment["metadata"].get("annotations") or {})
    assert "nekzus/stopped" not in (deployment["metadata"].get("labels") or {})
    assert len([p for p in pods_of(kube, "web") if p["status"]["phase"] == "Running"]) == 3
    rows = await (await kclient.get(f"/api/v1/containers?namespace={NS}")).json()
    assert len(rows) == 3 and all(c["id"].startswith("web-") for c in rows)
    await expect(
        await kclient.post(f"/api/v1/containers/{NS}/deployment%2Fweb/start"),
        409,
        "CONTAINER_ALREADY_STARTED",
    )


async def test_statefulset_stop_and_start(kclient: TestClient[Any, Any], kube: FakeKube) -> None:
    kube.add_statefulset(NS, "db", 2, annotations=LINKED, containers=WEB)
    ws = await connect(kclient)
    op = await accepted(await kclient.post(f"/api/v1/containers/db-1/stop?namespace={NS}&timeout=5"))
    await ws.until("container.stop.completed", operationId=op)
    assert kube.get("statefulsets", NS, "db")["spec"]["replicas"] == 0  # type: ignore[index]
    await expect(
        await kclient.post(f"/api/v1/containers/{NS}/statefulset%2Fdb/stop"), 409, "CONTAINER_ALREADY_STOPPED"
    )
    op = await accepted(await kclient.post(f"/api/v1/containers/{NS}/statefulset%2Fdb/start"))
    await ws.until("container.start.completed", operationId=op)
    assert sorted(p["metadata"]["name"] for p in pods_of(kube, "db")) == ["db-0", "db-1"]


async def test_restart_lets_the_controller_replace_the_pod(
    kclient: TestClient[Any, Any], kube: FakeKube
) -> None:
    kube.add_deployment(NS, "web", 2, annotations=LINKED, containers=WEB)
    ws = await connect(kclient)
    old = pods_of(kube, "web")[0]["metadata"]["name"]
    op = await accepted(await kclient.post(f"/api/v1/containers/{NS}/{old}/restart?timeout=3"))
    await ws.until("container.restart.completed", operationId=op)
    pods = pods_of(kube, "web")
    ready = [
        p for p in pods if p["status"]["phase"] == "Running" and not p["metadata"].get("deletionTimestamp")
    ]
    assert len(ready) == 2 and old not in {p["metadata"]["name"] for p in pods}


async def test_restart_of_a_workload_entry_rolls_its_pods(
    kclient: TestClient[Any, Any], kube: FakeKube
) -> None:
    kube.add_deployment(NS, "web", 2, annotations=LINKED, containers=WEB)
    before = {p["metadata"]["name"] for p in pods_of(kube, "web")}
    ws = await connect(kclient)
    op = await accepted(await kclient.post(f"/api/v1/containers/{NS}/deployment%2Fweb/restart"))
    await ws.until("container.restart.completed", operationId=op)
    deployment = kube.get("deployments", NS, "web")
    assert deployment is not None
    assert "kubectl.kubernetes.io/restartedAt" in deployment["spec"]["template"]["metadata"]["annotations"]
    running = {
        p["metadata"]["name"]
        for p in pods_of(kube, "web")
        if p["status"]["phase"] == "Running" and not p["metadata"].get("deletionTimestamp")
    }
    assert len(running) == 2 and not running & before


async def test_restart_fails_when_the_workload_is_not_ready_in_time(
    gateway: ClientFactory, kube: FakeKube, kubeconfig: Path
) -> None:
    client = await gateway(kube_config(kubeconfig, ready_timeout=0.5))
    kube.add_deployment(NS, "web", 1, annotations=LINKED, containers=WEB)
    kube.ready_delay = 30  # the replacement stays Pending
    ws = await connect(client)
    pod = pods_of(kube, "web")[0]["metadata"]["name"]
    op = await accepted(await client.post(f"/api/v1/containers/{NS}/{pod}/restart"))
    failed = await ws.until("container.restart.failed", operationId=op)
    assert failed["data"]["error"] == "CONTAINER_RESTART_FAILED"
    assert "Timed out" in failed["data"]["message"]


async def test_standalone_pods_are_not_deleted_without_force(
    kclient: TestClient[Any, Any], kube: FakeKube
) -> None:
    kube.add_pod(NS, "solo", annotations=LINKED, containers=WEB)
    kube.add_pod(NS, "again", annotations=LINKED, containers=WEB)
    ws = await connect(kclient)
    for action in ("stop", "restart"):
        body = await expect(
            await kclient.post(f"/api/v1/containers/{NS}/solo/{action}"), 409, "OPERATION_NOT_SUPPORTED"
        )
        assert "force=true" in body["message"]
    resp = await kclient.post(f"/api/v1/containers/stop-all?namespace={NS}")
    results = (await resp.json())["results"]
    assert {r["id"] for r in results} == {"solo", "again"} and not any(r["success"] for r in results)
    assert kube.get("pods", NS, "solo") is not None and kube.get("pods", NS, "again") is not None

    old_uid = kube.get("pods", NS, "again")["metadata"]["uid"]  # type: ignore[index]
    op = await accepted(await kclient.post(f"/api/v1/containers/{NS}/again/restart?force=true&timeout=1"))
    await ws.until("container.restart.completed", operationId=op)
    recreated = kube.get("pods", NS, "again")
    assert recreated is not None and recreated["metadata"]["uid"] != old_uid
    assert recreated["status"]["phase"] == "Running"

    op = await accepted(await kclient.post(f"/api/v1/containers/{NS}/solo/stop?force=true&timeout=1"))
    await ws.until("container.stop.completed", operationId=op)
    assert kube.get("pods", NS, "solo") is None


async def test_daemonset_pods_cannot_be_stopped(kclient: TestClient[Any, Any], kube: FakeKube) -> None:
    owner = {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "u-1", "controller": True}
    kube.add_pod(NS, "agent-x1", owner=owner)
    body = await expect(
        await kclient.post(f"/api/v1/containers/{NS}/agent-x1/stop?force=true"),
        409,
        "OPERATION_NOT_SUPPORTED",
    )
    assert "daemonset" in body["message"]


# -- stats --------------------------------------------------------------------------------------


async def test_stats_from_pod_metrics(kclient: TestClient[Any, Any], kube: FakeKube) -> None:
    limited = [{**WEB[0], "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}}}]
    kube.add_pod(NS, "limited", containers=limited, annotations=LINKED)
    kube.add_pod(NS, "unlimited", containers=WEB, annotations=LINKED)
    for pod in ("limited", "unlimited"):
        kube.set_metrics(NS, pod, {"app": {"cpu": "250m", "memory": "64Mi"}})

    stats = await (await kclient.get(f"/api/v1/containers/{NS}/limited/stats")).json()
    assert stats["containerId"] == "limited"
    assert stats["cpu"] == {"usage": 25.0, "coresUsed": 0.25, "totalCores": 0.5}
    assert stats["memory"] == {"usage": 50.0, "used": 64 << 20, "limit": 128 << 20, "available": 64 << 20}
    assert stats["network"] == {"rx": 0, "tx": 0}

    # No limits: the node's allocatable CPU and memory (the fake node has 4 CPUs and 8 GiB).
    stats = await (await kclient.get(f"/api/v1/containers/{NS}/unlimited/stats")).json()
    assert stats["cpu"] == {"usage": 25.0, "coresUsed": 0.25, "totalCores": 4.0}
    assert stats["memory"]["limit"] == 8 << 30

    batch = await (await kclient.get("/api/v1/containers/stats")).json()
    assert sorted(s["containerId"] for s in batch["containers"]) == ["limited", "unlimited"]


async def test_stats_without_a_metrics_api(kclient: TestClient[Any, Any], kube: FakeKube) -> None:
    kube.add_pod(NS, "web", containers=WEB)
    body = await expect(
        await kclient.get(f"/api/v1/containers/{NS}/web/stats"), 500, "CONTAINER_STATS_FAILED"
    )
    assert "has no metrics for this pod" in body["message"]
    kube.metrics_enabled = False
    body = await expect(
        await kclient.get(f"/api/v1/containers/{NS}/web/stats"), 500, "CONTAINER_STATS_FAILED"
    )
    assert "metrics.k8s.io" in body["message"] and "not served" in body["message"]
    await expect(await kclient.get(f"/api/v1/containers/{NS}/gone/stats"), 404, "CONTAINER_NOT_FOUND")


# -- errors -------------------------------------------------------------------------------------


async def test_rbac_refusals_are_403_without_the_callers_identity(
    kclient: TestClient[Any, Any], kube: FakeKube
) -> None:
    kube.add_deployment(NS, "web", 1, annotations=LINKED, containers=WEB)
    pod = pods_of(kube, "web")[0]["metadata"]["name"]
    kube.forbid("get", "pods", NS)
    body = await expect(await kclient.get(f"/api/v1/containers/{NS}/{pod}"), 403, "FORBIDDEN")
    assert body["message"] == 'Forbidden by the cluster\'s RBAC rules: cannot get "pods" in namespace "shop"'
    assert "serviceaccount" not in body["message"] and kube.user not in body["message"]
    kube.forbid("list", "pods")
    await expect(await kclient.get("/api/v1/containers"), 403, "FORBIDDEN")

    # Refused after the 202: the failure event says why, and the workload is left as it was.
    kube.allow("get", "pods", NS)
    kube.forbid("patch", "deployments/scale", NS)
    ws = await connect(kclient)
    op = await accepted(await kclient.post(f"/api/v1/containers/{NS}/{pod}/stop"))
    failed = await ws.until("container.stop.failed", operationId=op)
    assert failed["data"]["error"] == "CONTAINER_STOP_FAILED"
    assert 'cannot patch "deployments/scale"' in failed["data"]["message"]
    deployment = kube.get("deployments", NS, "web")
    assert deployment is not None and deployment["spec"]["replicas"] == 1
    assert "nekzus/stopped-replicas" not in (deployment["metadata"].get("annotations") or {})


async def test_unreachable_apiserver_is_503_until_it_is_back(
    kclient: TestClient[Any, Any], kube: FakeKube
) -> None:
    kube.add_pod(NS, "web")
    await kube.stop_serving()
    for path in ("/api/v1/containers", f"/api/v1/containers/{NS}/web", f"/api/v1/containers/{NS}/web/stats"):
        await expect(await kclient.get(path), 503, "RUNTIME_UNAVAILABLE")
    await expect(await kclient.post(f"/api/v1/containers/{NS}/web/restart"), 503, "RUNTIME_UNAVAILABLE")
    await kube.start_serving()
    # Known to be down until the monitor's next probe (every second while down) passes.
    async with asyncio.timeout(5):
        while (resp := await kclient.get(f"/api/v1/containers/{NS}/web")).status != 200:
            await expect(resp, 503, "RUNTIME_UNAVAILABLE")
            await asyncio.sleep(0.1)


# -- state events -------------------------------------------------------------------------------


async def watching(kube: FakeKube) -> None:
    """The gateway's pod watch is open on the fake apiserver."""
    async with asyncio.timeout(15):
        await kube.watch_opened.wait()


async def test_pod_watch_feeds_state_and_health(kclient: TestClient[Any, Any], kube: FakeKube) -> None:
    kube.add_pod(NS, "web", containers=WEB, labels={"nekzus.http.app.id": "shop"})
    await watching(kube)
    ws = await connect(kclient)
    kube.set_ready(NS, "web", False)
    kube.set_phase(NS, "web", "Failed")
    state = await ws.until("container.state", containerId="web")
    assert state["data"]["state"] == "failed" and state["data"]["previousState"] == "running"
    health = await ws.until("health_change", appId="shop")
    assert health["data"]["status"] == "unhealthy" and health["data"]["appName"] == "Shop"
    kube.add_pod(NS, "late", containers=WEB, phase="Pending")
    added = await ws.until("container.state", containerId="late")
    assert added["data"]["state"] == "pending"


async def test_watch_lists_again_after_410_gone(kclient: TestClient[Any, Any], kube: FakeKube) -> None:
    kube.add_pod(NS, "web", containers=WEB)
    await watching(kube)
    ws = await connect(kclient)
    lists_before = sum(1 for m, p in kube.request_log if m == "GET" and p == "/api/v1/pods")
    # A change the pod watch does not see moves the resourceVersion on; then the history is
    # compacted and the watch cut, so resuming from the watch's last version gets 410.
    kube.add_deployment("other", "noise", 0)
    kube.compact()
    kube.cut_watches()
    kube.set_phase(NS, "web", "Succeeded")
    state = await ws.until("container.state", containerId="web")
    assert state["data"]["state"] == "exited"
    lists_after = sum(1 for m, p in kube.request_log if m == "GET" and p == "/api/v1/pods")
    assert lists_after > lists_before
    assert any("resourceVersion" in p and "watch" in p for _, p in kube.request_log)


async def test_watch_reconnects_when_the_apiserver_comes_back(
    kclient: TestClient[Any, Any], kube: FakeKube
) -> None:
    kube.add_pod(NS, "web", containers=WEB)
    await watching(kube)
    ws = await connect(kclient)
    await kube.stop_serving()
    kube.set_phase(NS, "web", "Failed")  # happens while the gateway cannot see it
    await kube.start_serving()
    state = await ws.until("container.state", containerId="web", timeout=20)
    assert state["data"]["state"] == "failed"


# -- logs ---------------------------------------------------------------------------------------


async def log_lines(ws: WS, pod: str, count: int) -> list[str]:
    lines: list[str] = []
    while len(lines) < count:
        message = await ws.until("container.logs", containerId=pod)
        assert message["data"]["stream"] == "stdout" and message["data"]["namespace"] == NS
        lines.append(message["data"]["message"])
    return lines


async def test_logs_follow_resume_and_end_when_the_pod_goes(
    kclient: TestClient[Any, Any], kube: FakeKube
) -> None:
    kube.add_pod(NS, "web", containers=[*WEB, {"name": "sidecar", "image": "busybox:1"}])
    for i in range(5):
        kube.append_log(NS, "web", "app", f"app {i}")
    kube.append_log(NS, "web", "sidecar", "side 0")
    ws = await connect(kclient)
    await ws.send("container.logs.subscribe", containerId="web", namespace=NS, tail=3)
    await ws.until("container.logs.started", containerId="web")
    assert await log_lines(ws, "web", 3) == ["app 2", "app 3", "app 4"]

    # The server cuts the follow stream while the pod runs: the gateway resumes, no duplicates.
    kube.end_follow_streams(NS, "web")
    kube.append_log(NS, "web", "app", "app 5")
    assert await log_lines(ws, "web", 1) == ["app 5"]
    kube.end_follow_streams(NS, "web")
    kube.append_log(NS, "web", "app", "app 6\napp 7")
    assert await log_lines(ws, "web", 2) == ["app 6", "app 7"]

    # Another container of the same pod is a stream of its own.
    await ws.send(
        "container.logs.subscribe", containerId="web", namespace=NS, container="sidecar", follow=False
    )
    assert await log_lines(ws, "web", 1) == ["side 0"]
    ended = await ws.until("container.logs.ended", containerId="web")
    assert ended["data"]["reason"] == "stopped"

    kube.delete_pod(NS, "web", grace=0)
    ended = await ws.until("container.logs.ended", containerId="web")
    assert ended["data"]["reason"] == "container_stopped"
    assert not any(m["type"] == "container.logs.error" for m in ws.seen)
    assert [m["data"]["message"] for m in ws.seen if m["type"] == "container.logs"] == [
        "app 2", "app 3", "app 4", "app 5", "app 6", "app 7", "side 0",
    ]  # fmt: skip


async def test_log_errors(kclient: TestClient[Any, Any], kube: FakeKube) -> None:
    kube.add_pod(NS, "web", containers=WEB)
    ws = await connect(kclient)
    await ws.send("container.logs.subscribe", containerId="nope", namespace=NS)
    error = await ws.until("container.logs.error", containerId="nope")
    assert error["data"]["error"] == "CONTAINER_NOT_FOUND"
    await ws.send("container.logs.subscribe", containerId="web", namespace=NS, container="ghost")
    error = await ws.until("container.logs.error", containerId="web")
    assert error["data"]["error"] == "LOG_STREAM_FAILED"
    await ws.send("container.logs.subscribe", containerId="web", namespace=NS, container="../x")
    invalid = await ws.until("error")
    assert invalid["data"]["error"] == "INVALID_MESSAGE"
    # The namespace is checked like the REST one: not "../x", not a trailing newline.
    for namespace in ("../x", f"{NS}\n", "Bad_NS"):
        await ws.send("container.logs.subscribe", containerId="web", namespace=namespace)
        invalid = await ws.until("error")
        assert invalid["data"]["error"] == "INVALID_MESSAGE", namespace
        assert "namespace" in invalid["data"]["message"]


# -- export -------------------------------------------------------------------------------------


async def test_pods_export_to_compose(kclient: TestClient[Any, Any], kube: FakeKube) -> None:
    env = [{"name": "API_TOKEN", "value": "t0k"}, {"name": "CACHE_URL", "value": "redis://:s3cret@cache/0"}]
    containers = [{**WEB[0], "env": env, "args": ["--port", "80"]}]
    kube.add_deployment(NS, "web", 1, annotations=LINKED, containers=containers)
    pod = pods_of(kube, "web")[0]["metadata"]["name"]
    resp = await kclient.post(f"/api/v1/containers/{pod}/export/preview?namespace={NS}")
    assert resp.status == 200, await resp.text()
    result = await resp.json()
    service = yaml.safe_load(result["content"])["services"][pod]
    assert service["image"] == "nginx:1.25" and service["command"] == ["--port", "80"]
    assert service["environment"] == [
        "API_TOKEN=${API_TOKEN}",
        "CACHE_URL=redis://:${CACHE_URL_PASSWORD}@cache/0",
    ]
    assert service["ports"] == ["80"] and "s3cret" not in result["content"]
    assert any(f"converted from pod '{pod}'" in w for w in result["warnings"])
    assert result["filename"] == f"{pod}-compose.yaml"

    # A stopped Deployment still exports, from its pod template.
    kube.scale("deployments", NS, "web", 0)
    await kube.wait_for(lambda: not pods_of(kube, "web"))
    resp = await kclient.post(
        f"/api/v1/containers/batch/export?namespace={NS}",
        json={"container_ids": ["deployment/web", pod], "stack_name": "shop"},
    )
    assert resp.status == 206
    partial = await resp.json()
    assert list(yaml.safe_load(partial["content"])["services"]) == ["web"]
    assert f"Container '{pod}' was not found and was left out" in partial["warnings"]
