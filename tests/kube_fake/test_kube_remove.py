"""Pause and removal on Kubernetes, against the fake apiserver: no pause at all, a pod deleted only
when forced while it runs, a controller's pod deleted with the controller named as the one that
brings it back, workloads never deleted. tests/kube_real/test_kube_remove.py runs the main paths
against a real control plane."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.docker.test_pause_remove import heard
from tests.kube_fake.test_kube_fast import LINKED, NS, WEB, accepted, connect, kube_config, pods_of
from tests.support.fake_kube import FakeKube
from tests.support.gateway import ClientFactory
from tests.unit.test_errors import expect


@pytest.fixture
async def kclient(gateway: ClientFactory, kubeconfig: Path) -> TestClient[Any, Any]:
    return await gateway(kube_config(kubeconfig))


async def test_kubernetes_has_no_pause(kclient: TestClient[Any, Any], kube: FakeKube) -> None:
    kube.add_pod(NS, "solo", annotations=LINKED, containers=WEB)
    for action in ("pause", "unpause"):
        for path in (
            f"/api/v1/containers/{NS}/solo/{action}",
            f"/api/v1/containers/solo/{action}?namespace={NS}",
        ):
            body = await expect(await kclient.post(path), 409, "OPERATION_NOT_SUPPORTED")
            assert "Kubernetes has no pause" in body["message"]
        resp = await kclient.post(f"/api/v1/containers/{action}-all?namespace={NS}")
        results = (await resp.json())["results"]
        assert [(r["id"], r["success"]) for r in results] == [("solo", False)]
        assert "Kubernetes has no pause" in results[0]["error"]
        resp = await kclient.post(
            f"/api/v1/containers/batch?namespace={NS}", json={"action": action, "containerIds": ["solo"]}
        )
        assert "Kubernetes has no pause" in (await resp.json())["results"][0]["error"]
    assert kube.get("pods", NS, "solo")["status"]["phase"] == "Running"  # type: ignore[index]


async def test_a_standalone_pod_is_removed_only_when_forced(
    kclient: TestClient[Any, Any], kube: FakeKube
) -> None:
    kube.add_pod(NS, "solo", annotations=LINKED, containers=WEB)
    ws = await connect(kclient)
    body = await expect(await kclient.delete(f"/api/v1/containers/{NS}/solo"), 409, "CONTAINER_RUNNING")
    assert "force=true" in body["message"] and "controller" not in body["message"]
    assert kube.get("pods", NS, "solo") is not None

    op = await accepted(await kclient.delete(f"/api/v1/containers/{NS}/solo?force=true"))
    done = await ws.until("container.remove.completed", operationId=op)
    assert done["data"]["containerId"] == "solo" and done["data"]["namespace"] == NS
    assert done["data"]["message"] == "Container removed successfully" and "recreatedBy" not in done["data"]
    assert kube.get("pods", NS, "solo") is None
    await heard(ws, "container.state", containerId="solo", state="removed")
    await expect(await kclient.get(f"/api/v1/containers/{NS}/solo"), 404, "CONTAINER_NOT_FOUND")
    await expect(await kclient.delete(f"/api/v1/containers/{NS}/solo?force=true"), 404, "CONTAINER_NOT_FOUND")


async def test_a_finished_pod_needs_no_force(kclient: TestClient[Any, Any], kube: FakeKube) -> None:
    kube.add_pod(NS, "batch-run", annotations=LINKED, containers=WEB, phase="Succeeded")
    ws = await connect(kclient)
    op = await accepted(await kclient.delete(f"/api/v1/containers/batch-run?namespace={NS}"))
    await ws.until("container.remove.completed", operationId=op)
    assert kube.get("pods", NS, "batch-run") is None


async def test_a_controllers_pod_is_removed_and_its_controller_named(
    kclient: TestClient[Any, Any], kube: FakeKube
) -> None:
    kube.add_deployment(NS, "web", 2, annotations=LINKED, containers=WEB)
    before = {p["metadata"]["name"] for p in pods_of(kube, "web")}
    victim = sorted(before)[0]
    ws = await connect(kclient)
    body = await expect(await kclient.delete(f"/api/v1/containers/{NS}/{victim}"), 409, "CONTAINER_RUNNING")
    assert "its controller deployment/web will create a replacement" in body["message"]

    op = await accepted(await kclient.delete(f"/api/v1/containers/{NS}/{victim}?force=true"))
    done = await ws.until("container.remove.completed", operationId=op)
    assert done["data"]["recreatedBy"] == "deployment/web"
    assert done["data"]["message"] == "Container removed; its controller deployment/web recreates it"
    record = await (await kclient.get(f"/api/v1/operations/{op}")).json()
    assert (record["state"], record["recreatedBy"]) == ("completed", "deployment/web")
    assert "deployment/web recreates it" in record["message"]
    assert kube.get("pods", NS, victim) is None
    await kube.wait_for(lambda: len(pods_of(kube, "web")) == 2)
    assert victim not in {p["metadata"]["name"] for p in pods_of(kube, "web")}


async def test_a_statefulsets_pod_is_waited_for_by_uid(kclient: TestClient[Any, Any], kube: FakeKube) -> None:
    """The StatefulSet recreates its pod under the same name: the removal ends when the old pod
    (its uid) is gone, not when the name is free, which it may never be."""
    kube.add_statefulset(NS, "db", 1, annotations=LINKED, containers=WEB)
    old = kube.get("pods", NS, "db-0")
    assert old is not None
    ws = await connect(kclient)
    op = await accepted(await kclient.delete(f"/api/v1/containers/{NS}/db-0?force=true"))
    done = await ws.until("container.remove.completed", operationId=op)
    assert done["data"]["recreatedBy"] == "statefulset/db"
    await kube.wait_for(
        lambda: (kube.get("pods", NS, "db-0") or old)["metadata"]["uid"] != old["metadata"]["uid"]
    )


async def test_workloads_are_never_removed(kclient: TestClient[Any, Any], kube: FakeKube) -> None:
    kube.add_deployment(NS, "web", 1, annotations=LINKED, containers=WEB)
    ws = await connect(kclient)
    op = await accepted(await kclient.post(f"/api/v1/containers/{NS}/deployment%2Fweb/stop"))
    await ws.until("container.stop.completed", operationId=op)
    for query in ("", "?force=true", "?force=true&all=true"):
        body = await expect(
            await kclient.delete(f"/api/v1/containers/{NS}/deployment%2Fweb{query}"),
            409,
            "OPERATION_NOT_SUPPORTED",
        )
        assert "never workloads" in body["message"]
    assert kube.get("deployments", NS, "web") is not None


async def test_unlinked_pods_rbac_and_bad_input(kclient: TestClient[Any, Any], kube: FakeKube) -> None:
    kube.add_pod(NS, "other", containers=WEB)
    kube.add_pod(NS, "solo", annotations=LINKED, containers=WEB)
    await expect(
        await kclient.delete(f"/api/v1/containers/{NS}/other?force=true"), 409, "CONTAINER_NOT_LINKED"
    )
    for bad in ("Solo", "solo%2F..", "a" * 254):
        await expect(await kclient.delete(f"/api/v1/containers/{NS}/{bad}"), 400, "INVALID_CONTAINER_ID")
    await expect(await kclient.delete("/api/v1/containers/Bad_NS/solo"), 400, "INVALID_REQUEST")
    await expect(await kclient.delete(f"/api/v1/containers/{NS}/solo?force=maybe"), 400, "INVALID_REQUEST")
    assert kube.get("pods", NS, "other") is not None and kube.get("pods", NS, "solo") is not None

    kube.forbid("delete", "pods", NS)
    ws = await connect(kclient)
    op = await accepted(await kclient.delete(f"/api/v1/containers/{NS}/solo?force=true"))
    failed = await ws.until("container.remove.failed", operationId=op)
    assert failed["data"]["error"] == "FORBIDDEN"
    assert 'cannot delete "pods" in namespace "shop"' in failed["data"]["message"]
    assert kube.get("pods", NS, "solo") is not None
