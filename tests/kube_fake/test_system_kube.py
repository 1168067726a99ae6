"""The host routes on Kubernetes against the fake apiserver: the cluster's version, nodes and pods
by phase, node metrics summed where metrics.k8s.io answers (and nulls where it does not), RBAC's
refusal of nodes; and the container list's filters and pages over pods."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.kube_fake.test_kube_fast import LINKED, NS, kube_config
from tests.support.fake_kube import FakeKube
from tests.support.gateway import ClientFactory
from tests.unit.test_errors import expect

GIB = 2**30


@pytest.fixture
async def cluster(gateway: ClientFactory, kube: FakeKube, kubeconfig: Path) -> TestClient[Any, Any]:
    kube.add_node("node-2", cpu="2", memory="4Gi")
    for name, phase in (("web", "Running"), ("queue", "Pending"), ("job", "Succeeded"), ("bad", "Failed")):
        kube.add_pod(NS, name, phase=phase, labels={**LINKED, "tier": "web" if name == "web" else "back"})
    kube.add_pod("elsewhere", "hidden")  # outside the managed namespace: not counted
    return await gateway(kube_config(kubeconfig, namespaces=[NS]))


async def test_system_reports_the_cluster_version_nodes_and_pods_by_phase(
    cluster: TestClient[Any, Any],
) -> None:
    resp = await cluster.get("/api/v1/system")
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {
        "runtime": "kubernetes",
        "engineVersion": "v1.20.2",
        "platform": "linux/amd64",
        "nodes": {"total": 2, "ready": 2},
        "cpus": 6,
        "memoryTotal": 12 * GIB,
        "containers": {"total": 4, "running": 1, "paused": 0, "stopped": 1, "pending": 1, "failed": 1},
    }
    assert (await cluster.get("/api/v1/system?runtime=kubernetes")).status == 200


async def test_stats_sum_node_metrics_against_node_capacity(
    cluster: TestClient[Any, Any], kube: FakeKube
) -> None:
    kube.set_node_metrics("node-1", cpu="1500m", memory="2Gi")
    kube.set_node_metrics("node-2", cpu="500m", memory="1Gi")
    body = await (await cluster.get("/api/v1/system/stats")).json()
    assert body["runtime"] == "kubernetes" and body["metrics"] == "available"
    assert body["cpu"] == {"percent": 33.3, "cores": 6}
    assert body["memory"] == {"used": 3 * GIB, "total": 12 * GIB, "percent": 25.0}
    assert body["load"] is None and body["disk"] is None and body["space"] is None
    assert isinstance(body["timestamp"], int)


@pytest.mark.parametrize("missing", ["served", "allowed"])
async def test_without_the_metrics_api_usage_is_null_and_totals_remain(
    cluster: TestClient[Any, Any], kube: FakeKube, missing: str
) -> None:
    kube.set_node_metrics("node-1", cpu="1", memory="1Gi")
    if missing == "served":
        kube.metrics_enabled = False
    else:
        kube.forbid("list", "nodes.metrics.k8s.io")
    resp = await cluster.get("/api/v1/system/stats")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["metrics"] == "unavailable"
    assert body["cpu"] == {"percent": None, "cores": 6}
    assert body["memory"] == {"used": None, "total": 12 * GIB, "percent": None}


@pytest.mark.parametrize("path", ["/api/v1/system", "/api/v1/system/stats"])
async def test_rbac_refusing_nodes_is_forbidden_naming_the_permission(
    cluster: TestClient[Any, Any], kube: FakeKube, path: str
) -> None:
    kube.forbid("list", "nodes")
    body = await expect(await cluster.get(path), 403, "FORBIDDEN")
    assert (
        body["message"] == 'Forbidden by the cluster\'s RBAC rules: cannot list "nodes" at the cluster scope'
    )
    assert "serviceaccount" not in body["message"]


async def test_an_apiserver_that_is_gone_is_runtime_unavailable(
    cluster: TestClient[Any, Any], kube: FakeKube
) -> None:
    await kube.stop_serving()
    for path in ("/api/v1/system", "/api/v1/system/stats"):
        await expect(await cluster.get(path), 503, "RUNTIME_UNAVAILABLE")


async def test_a_disabled_runtime_is_invalid_runtime(cluster: TestClient[Any, Any]) -> None:
    for path in ("/api/v1/system?runtime=docker", "/api/v1/system/stats?runtime=nope"):
        await expect(await cluster.get(path), 400, "INVALID_RUNTIME")


async def test_list_filters_sort_and_pages_cover_pods(cluster: TestClient[Any, Any]) -> None:
    async def names(query: str) -> tuple[list[str], str]:
        resp = await cluster.get(f"/api/v1/containers?{query}")
        assert resp.status == 200, await resp.text()
        return [c["name"] for c in await resp.json()], resp.headers["X-Total-Count"]

    assert await names("state=running") == (["web"], "1")
    assert await names("state=pending") == (["queue"], "1")
    # A finished pod is exited, a failed one failed: both are "stopped" to a user.
    assert await names("state=stopped&sort=name") == (["bad", "job"], "2")
    assert await names("label=tier=back&sort=-name") == (["queue", "job", "bad"], "3")
    assert await names("name=UE&namespace=shop") == (["queue"], "1")
    resp = await cluster.get("/api/v1/containers?sort=name&limit=2&offset=2")
    assert [c["name"] for c in await resp.json()] == ["queue", "web"]
    assert resp.headers["X-Total-Count"] == "4" and 'rel="prev"' in resp.headers["Link"]
    await expect(await cluster.get("/api/v1/containers?state=evicted"), 400, "INVALID_REQUEST")
