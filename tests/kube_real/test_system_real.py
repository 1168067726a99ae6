"""``GET /api/v1/system?runtime=kubernetes`` on the real control plane, as the gateway's own
ServiceAccount: refused (naming the permission) with deploy/kubernetes/rbac.yaml alone, answered
once the optional deploy/kubernetes/rbac-system.yaml is applied."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tests.kube_real.test_kube_real import api, create_pod, eventually
from tests.support import ROOT
from tests.support.gateway import ClientFactory
from tests.support.kube_fixtures import real_config
from tests.support.kube_plane import ControlPlane, load_manifest
from tests.unit.test_errors import expect

SYSTEM_RBAC = ROOT / "deploy" / "kubernetes" / "rbac-system.yaml"


@pytest.fixture
def system_rbac(kube_plane: ControlPlane) -> Iterator[list[dict[str, Any]]]:
    manifest = load_manifest(SYSTEM_RBAC)
    try:
        yield manifest
    finally:
        kube_plane.delete(manifest)


async def test_system_reports_the_cluster_with_the_optional_role(
    gateway: ClientFactory, kube_plane: ControlPlane, kube_namespace: str, system_rbac: list[dict[str, Any]]
) -> None:
    await create_pod(kube_plane, kube_namespace, "solo")
    client = await gateway(real_config(kube_plane.gateway_kubeconfig, kube_namespace))
    refused = await expect(await client.get("/api/v1/system?runtime=kubernetes"), 403, "FORBIDDEN")
    assert refused["message"] == (
        'Forbidden by the cluster\'s RBAC rules: cannot list "nodes" at the cluster scope'
    )
    await asyncio.to_thread(kube_plane.apply, system_rbac)
    version = await api(kube_plane, "GET", "/version")

    async def answered() -> dict[str, Any] | None:
        # RBAC caches its bindings for a moment after a change.
        resp = await client.get("/api/v1/system?runtime=kubernetes")
        return await resp.json() if resp.status == 200 else None

    body = await eventually(answered, what="the system route after the role was bound")
    assert body["runtime"] == "kubernetes"
    assert body["engineVersion"] == version["gitVersion"] and body["platform"] == version["platform"]
    assert body["nodes"]["total"] >= 1 and 0 <= body["nodes"]["ready"] <= body["nodes"]["total"]
    assert body["cpus"] >= 1 and body["memoryTotal"] > 0
    counts = body["containers"]
    assert counts["total"] == 1  # the one pod of this test's namespace
    assert counts["total"] == counts["running"] + counts["pending"] + counts["stopped"] + counts["failed"]
    assert "storageDriver" not in body and "images" not in body
