"""The Kubernetes runtime against a real control plane: kube-apiserver, kube-controller-manager and
etcd, with tests/support/kube_node.py playing the kubelet (see tests/support/kube_fixtures.py).

Real controllers scale, replace and delete the pods; logs go through the apiserver's own log
proxy; PodMetrics are served by the metrics.k8s.io group. Each test has a namespace of its own
and a gateway limited to it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp.test_utils import TestClient

from nekzus.realtime.logrequest import parse_since
from tests.support.gateway import ClientFactory
from tests.support.kube_fixtures import install_metrics_api, real_config, remove_metrics_api
from tests.support.kube_plane import ControlPlane
from tests.support.wsclient import WS
from tests.unit.test_errors import expect

T = TypeVar("T")
LINKED = {"nekzus/enable": "true"}


async def api(plane: ControlPlane, method: str, path: str, body: Any = None) -> Any:
    """One call to the apiserver as admin, off the event loop the gateway runs on."""
    _, doc = await asyncio.to_thread(plane.request, method, path, body)
    return doc


async def eventually(check: Callable[[], Awaitable[T | None]], *, timeout: float = 30, what: str) -> T:
    """Re-check until ``check`` answers something (the apiserver's state has no event the test
    could wait on through the gateway), pausing briefly between tries; fail after ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = await check()
                if result:
                    return result
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}") from None


def container(env: dict[str, str] | None = None, name: str = "app") -> dict[str, Any]:
    return {
        "name": name,
        "image": "busybox:1.36",
        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
        "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
    }


async def create_deployment(
    plane: ControlPlane,
    ns: str,
    name: str,
    replicas: int,
    env: dict[str, str] | None = None,
    *,
    finalizers: tuple[str, ...] = (),
) -> None:
    """A Deployment of linked busybox pods; ``finalizers`` go on each pod (a test releases them)."""
    template_meta: dict[str, Any] = {"labels": {"app": name}, "annotations": LINKED}
    if finalizers:
        template_meta["finalizers"] = list(finalizers)
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": template_meta,
                "spec": {"containers": [container(env)], "terminationGracePeriodSeconds": 1},
            },
        },
    }
    await api(plane, "POST", f"/apis/apps/v1/namespaces/{ns}/deployments", body)


async def create_pod(plane: ControlPlane, ns: str, name: str, env: dict[str, str] | None = None) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "annotations": LINKED},
        "spec": {"containers": [container(env)], "terminationGracePeriodSeconds": 1},
    }
    await api(plane, "POST", f"/api/v1/namespaces/{ns}/pods", body)


async def running_pods(
    client: TestClient[Any, Any], prefix: str, count: int, *, timeout: float = 30
) -> list[str]:
    async def check() -> list[str] | None:
        resp = await client.get("/api/v1/containers?all=true")
        if resp.status != 200:  # 503 until the gateway's probe sees a restarted apiserver ready
            return None
        rows = await resp.json()
        names = [c["id"] for c in rows if c["id"].startswith(f"{prefix}-") and c["state"] == "running"]
        return sorted(names) if len(names) == count else None

    return await eventually(check, timeout=timeout, what=f"{count} running pods of {prefix}")


async def connect(client: TestClient[Any, Any]) -> WS:
    ws = WS(await client.ws_connect("/api/v1/ws"))
    await ws.until("hello")
    return ws


async def accepted(resp: Any) -> str:
    assert resp.status == 202, await resp.text()
    return str((await resp.json())["operationId"])


async def test_deployment_stopped_and_started_keeps_its_replica_count(
    kclient: TestClient[Any, Any], kube_plane: ControlPlane, kube_namespace: str
) -> None:
    ns = kube_namespace
    await create_deployment(kube_plane, ns, "web", 3)
    pods = await running_pods(kclient, "web", 3)
    ws = await connect(kclient)

    op = await accepted(await kclient.post(f"/api/v1/containers/{ns}/{pods[0]}/stop?timeout=5"))
    await ws.until("container.stop.completed", operationId=op, timeout=60)
    deployment = await api(kube_plane, "GET", f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    assert deployment["spec"]["replicas"] == 0
    assert deployment["metadata"]["annotations"]["nekzus/stopped-replicas"] == "3"
    rows = await (await kclient.get("/api/v1/containers")).json()
    assert [(c["id"], c["state"], c["namespace"]) for c in rows] == [("deployment/web", "stopped", ns)]

    op = await accepted(await kclient.post(f"/api/v1/containers/{ns}/deployment%2Fweb/start"))
    await ws.until("container.start.completed", operationId=op, timeout=60)
    deployment = await api(kube_plane, "GET", f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    assert deployment["spec"]["replicas"] == 3 and deployment["status"]["readyReplicas"] == 3
    assert "nekzus/stopped-replicas" not in deployment["metadata"].get("annotations", {})
    fresh = await running_pods(kclient, "web", 3)
    assert not set(fresh) & set(pods)


async def test_restart_replaces_the_pod_through_its_controller(
    kclient: TestClient[Any, Any], kube_plane: ControlPlane, kube_namespace: str
) -> None:
    ns = kube_namespace
    await create_deployment(kube_plane, ns, "api", 2)
    pods = await running_pods(kclient, "api", 2)
    ws = await connect(kclient)
    op = await accepted(await kclient.post(f"/api/v1/containers/{pods[0]}/restart?namespace={ns}&timeout=1"))
    await ws.until("container.restart.completed", operationId=op, timeout=60)
    deployment = await api(kube_plane, "GET", f"/apis/apps/v1/namespaces/{ns}/deployments/api")
    assert deployment["status"]["readyReplicas"] == 2
    after = await running_pods(kclient, "api", 2)
    assert pods[0] not in after and pods[1] in after


async def test_standalone_pod_is_refused_without_force(
    kclient: TestClient[Any, Any], kube_plane: ControlPlane, kube_namespace: str
) -> None:
    ns = kube_namespace
    await create_pod(kube_plane, ns, "solo")
    await eventually(lambda: _state(kclient, ns, "solo", "running"), what="the standalone pod to run")
    await expect(await kclient.post(f"/api/v1/containers/{ns}/solo/stop"), 409, "OPERATION_NOT_SUPPORTED")
    pod = await api(kube_plane, "GET", f"/api/v1/namespaces/{ns}/pods/solo")
    assert pod["metadata"].get("deletionTimestamp") is None

    ws = await connect(kclient)
    op = await accepted(await kclient.post(f"/api/v1/containers/{ns}/solo/stop?force=true&timeout=1"))
    await ws.until("container.stop.completed", operationId=op, timeout=60)
    await expect(await kclient.get(f"/api/v1/containers/{ns}/solo"), 404, "CONTAINER_NOT_FOUND")


async def _state(client: TestClient[Any, Any], ns: str, pod: str, state: str) -> bool:
    resp = await client.get(f"/api/v1/containers/{ns}/{pod}")
    return resp.status == 200 and (await resp.json())["state"] == state


async def test_logs_through_the_apiservers_log_proxy_resume_without_loss(
    kclient: TestClient[Any, Any], kube_plane: ControlPlane, kube_namespace: str
) -> None:
    ns = kube_namespace
    # The node cuts every follow stream after 1 s while the pod runs, as the apiserver does
    # after ~4 h: the gateway must carry on from the last line, with nothing lost or repeated.
    await create_pod(
        kube_plane, ns, "talker", {"LOG_LINES": "5", "LOG_INTERVAL": "0.1", "LOG_FOLLOW_MAX": "1"}
    )
    await eventually(lambda: _state(kclient, ns, "talker", "running"), what="the pod to run")
    ws = await connect(kclient)
    await ws.send("container.logs.subscribe", containerId="talker", namespace=ns, tail=3, timestamps=True)
    await ws.until("container.logs.started", containerId="talker")
    numbers: list[int] = []
    stamps: list[str] = []
    async with asyncio.timeout(30):
        while len(numbers) < 40:  # about 3.5 s of lines: at least three cut streams
            message = await ws.until("container.logs", containerId="talker")
            stamp, _, text = message["data"]["message"].partition(" ")
            match = re.fullmatch(r"line (\d+)", text)
            assert match, message
            numbers.append(int(match.group(1)))
            stamps.append(stamp)
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
    assert numbers[0] >= 3  # tail 3: the first lines (more come every 0.1 s) are not sent
    times = [parse_since(stamp) for stamp in stamps]  # RFC3339Nano drops trailing zeros: compare times
    assert times == sorted(times) and len(set(times)) == len(times)

    await api(kube_plane, "DELETE", f"/api/v1/namespaces/{ns}/pods/talker")
    ended = await ws.until("container.logs.ended", containerId="talker", timeout=30)
    assert ended["data"]["reason"] == "container_stopped"
    assert not any(m["type"] == "container.logs.error" for m in ws.seen)


async def test_stats_from_the_metrics_api_and_without_it(
    kclient: TestClient[Any, Any], kube_plane: ControlPlane, kube_namespace: str
) -> None:
    ns = kube_namespace
    await create_pod(kube_plane, ns, "busy", {"CPU_USAGE": "250m", "MEM_USAGE": "64Mi"})
    await eventually(lambda: _state(kclient, ns, "busy", "running"), what="the pod to run")
    body = await expect(
        await kclient.get(f"/api/v1/containers/{ns}/busy/stats"), 500, "CONTAINER_STATS_FAILED"
    )
    assert "not served" in body["message"]

    await asyncio.to_thread(install_metrics_api, kube_plane)
    try:

        async def sample() -> dict[str, Any] | None:
            resp = await kclient.get(f"/api/v1/containers/{ns}/busy/stats")
            return await resp.json() if resp.status == 200 else None

        stats = await eventually(sample, what="PodMetrics for the pod")
        # No limits: the node's allocatable resources (the node agent's node has 2 CPUs, 4 GiB).
        assert stats["cpu"] == {"usage": 25.0, "coresUsed": 0.25, "totalCores": 2.0}
        assert stats["memory"]["used"] == 64 << 20 and stats["memory"]["limit"] == 4 << 30
        assert stats["network"] == {"rx": 0, "tx": 0}
        batch = await (await kclient.get("/api/v1/containers/stats")).json()
        assert [s["containerId"] for s in batch["containers"]] == ["busy"]
    finally:
        await asyncio.to_thread(remove_metrics_api, kube_plane)


async def test_watch_survives_the_apiserver_going_away(
    kclient: TestClient[Any, Any], kube_plane: ControlPlane, kube_namespace: str
) -> None:
    ns = kube_namespace
    await create_deployment(kube_plane, ns, "steady", 1)
    [pod] = await running_pods(kclient, "steady", 1)
    ws = await connect(kclient)
    await asyncio.to_thread(kube_plane.stop_apiserver)
    try:
        await expect(await kclient.get("/api/v1/containers"), 503, "RUNTIME_UNAVAILABLE")
        await expect(await kclient.get(f"/api/v1/containers/{ns}/{pod}"), 503, "RUNTIME_UNAVAILABLE")
    finally:
        await asyncio.to_thread(kube_plane.start_apiserver)
    await running_pods(kclient, "steady", 1)
    # A change made after the restart reaches clients: the watch is back. The watch may reopen
    # only after the pod is gone (it waits for a probe to pass): then the relist says "removed".
    await api(kube_plane, "DELETE", f"/api/v1/namespaces/{ns}/pods/{pod}")
    async with asyncio.timeout(60):
        state = await ws.until("container.state", containerId=pod, timeout=60)
        while state["data"]["state"] not in ("stopped", "removed"):
            state = await ws.until("container.state", containerId=pod, timeout=60)
    assert state["data"]["namespace"] == ns and state["data"]["runtime"] == "kubernetes"


async def test_rbac_refusal_is_403(
    gateway: ClientFactory, kube_plane: ControlPlane, kube_namespace: str
) -> None:
    """A user with no permission at all: tests/kube_real/test_kube_rbac.py takes them away one at a time."""
    client = await gateway(real_config(kube_plane.restricted_kubeconfig, kube_namespace))
    body = await expect(await client.get("/api/v1/containers"), 403, "FORBIDDEN")
    # The list reads pods, deployments and statefulsets at once, and reports the first in that order.
    assert body["message"] == (
        f'Forbidden by the cluster\'s RBAC rules: cannot list "pods" in namespace "{kube_namespace}"'
    )
    assert "restricted" not in body["message"]
