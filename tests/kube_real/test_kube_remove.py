"""Removal of pods against a real control plane: a standalone pod is deleted for good, a
Deployment's pod is deleted and its ReplicaSet makes another. The other cases (refusals, pause,
workloads, RBAC) run against the fake apiserver in tests/kube_fake/test_kube_remove.py."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.kube_real.test_kube_real import (
    accepted,
    api,
    connect,
    create_deployment,
    create_pod,
    eventually,
    running_pods,
)
from tests.support.kube_plane import ControlPlane
from tests.unit.test_errors import expect


async def test_pods_are_removed_and_a_controller_makes_another(
    kclient: TestClient[Any, Any], kube_plane: ControlPlane, kube_namespace: str
) -> None:
    ns = kube_namespace
    await create_pod(kube_plane, ns, "solo")
    await create_deployment(kube_plane, ns, "web", 2)
    pods = await running_pods(kclient, "web", 2)

    async def solo_runs() -> bool:
        resp = await kclient.get(f"/api/v1/containers/{ns}/solo")
        return resp.status == 200 and (await resp.json())["state"] == "running"

    await eventually(solo_runs, what="the standalone pod to run")
    ws = await connect(kclient)

    await expect(await kclient.delete(f"/api/v1/containers/{ns}/solo"), 409, "CONTAINER_RUNNING")
    op = await accepted(await kclient.delete(f"/api/v1/containers/{ns}/solo?force=true"))
    done = await ws.until("container.remove.completed", operationId=op, timeout=60)
    assert "recreatedBy" not in done["data"] and done["data"]["namespace"] == ns
    await expect(await kclient.get(f"/api/v1/containers/{ns}/solo"), 404, "CONTAINER_NOT_FOUND")

    op = await accepted(await kclient.delete(f"/api/v1/containers/{ns}/{pods[0]}?force=true"))
    done = await ws.until("container.remove.completed", operationId=op, timeout=60)
    assert done["data"]["recreatedBy"] == "deployment/web"
    assert done["data"]["message"] == "Container removed; its controller deployment/web recreates it"
    # The replacement is the controller-manager's and the node agent's work, at their pace: after
    # the apiserver restarts earlier tests of this tier make, their watches may take a while back.
    after = await running_pods(kclient, "web", 2, timeout=120)
    assert pods[0] not in after and pods[1] in after
    deployment = await api(kube_plane, "GET", f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    assert deployment["spec"]["replicas"] == 2
