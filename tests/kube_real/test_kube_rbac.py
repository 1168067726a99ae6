"""Least privilege on the real control plane: deploy/kubernetes/rbac.yaml grants exactly what the
gateway uses, and a permission it lacks is named in the gateway's answer.

Every real-tier gateway runs as the manifest's ServiceAccount (tests/support/kube_fixtures.py). Here a
second ServiceAccount gets the manifest's roles minus one permission at a time, generated from the
file itself, and a probe of the feature that needs that permission must see the refusal name the
verb, the resource and the namespace. Each permission of the manifest has its probe: a grant that no
feature needs fails ``test_each_permission_of_the_manifest_has_a_probe``, and a grant the code needs
but the manifest lacks fails the real tier as a whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient

from tests.kube_real.test_kube_real import (
    LINKED,
    _state,
    accepted,
    api,
    connect,
    container,
    create_deployment,
    create_pod,
    eventually,
)
from tests.support import ROOT
from tests.support.gateway import ClientFactory
from tests.support.kube_fixtures import (
    Grant,
    bind_in_namespace,
    gateway_rbac,
    grants,
    install_metrics_api,
    namespaced_roles,
    real_config,
    remove_metrics_api,
)
from tests.support.kube_plane import (
    GATEWAY_ACCOUNT,
    GATEWAY_NAMESPACE,
    ControlPlane,
    load_manifest,
    wait_until,
)
from tests.unit.test_errors import expect

LIMITED = (GATEWAY_NAMESPACE, "nekzus-limited")
ALL_NAMESPACES = ROOT / "deploy" / "kubernetes" / "rbac-all-namespaces.yaml"


def refusal(missing: Grant, namespace: str) -> str:
    """What the gateway must say when RBAC refuses it ``missing``."""
    group, resource, verb = missing
    where = f' in API group "{group}"' if group else ""
    where += f' in namespace "{namespace}"' if namespace else " at the cluster scope"
    return f'Forbidden by the cluster\'s RBAC rules: cannot {verb} "{resource}"{where}'


def role_grants(manifest: list[dict[str, Any]]) -> set[Grant]:
    """Every permission the manifest's ClusterRoles grant."""
    return grants(r for d in manifest if d["kind"] == "ClusterRole" for r in d["rules"])


def cluster_bound(manifest: list[dict[str, Any]]) -> set[Grant]:
    """The grants of the manifest's roles that its ClusterRoleBindings bind (cluster-scoped reads)."""
    roles = {d["metadata"]["name"]: d for d in manifest if d["kind"] == "ClusterRole"}
    return {
        grant
        for d in manifest
        if d["kind"] == "ClusterRoleBinding"
        for grant in grants(roles[d["roleRef"]["name"]]["rules"])
    }


def all_but(missing: Grant) -> list[dict[str, Any]]:
    """The manifest's ClusterRoles and ClusterRoleBindings for the LIMITED account, renamed, with
    one rule per permission and ``missing`` left out."""
    documents: list[dict[str, Any]] = []
    for doc in gateway_rbac():
        name = f"nekzus-limited-{doc['metadata']['name']}"
        if doc["kind"] == "ClusterRole":
            rules = [
                {"apiGroups": [group], "resources": [resource], "verbs": [verb]}
                for group, resource, verb in sorted(grants(doc["rules"]) - {missing})
            ]
            documents.append({**doc, "metadata": {"name": name}, "rules": rules})
        elif doc["kind"] == "ClusterRoleBinding":
            role = f"nekzus-limited-{doc['roleRef']['name']}"
            subject = {"kind": "ServiceAccount", "namespace": LIMITED[0], "name": LIMITED[1]}
            documents.append(
                {
                    **doc,
                    "metadata": {"name": name},
                    "roleRef": {**doc["roleRef"], "name": role},
                    "subjects": [subject],
                }
            )
    return documents


@contextlib.asynccontextmanager
async def granted_all_but(plane: ControlPlane, namespace: str, missing: Grant) -> AsyncIterator[None]:
    """LIMITED has every permission of the manifest in ``namespace`` (bound as the manifest says)
    except ``missing``, until the end of the block; RBAC is seen to apply it before the block runs."""
    documents = all_but(missing)
    cluster_wide = cluster_bound(gateway_rbac())

    def scope(grant: Grant) -> str:
        return "" if grant in cluster_wide else namespace

    def applied() -> bool:
        # The roles' names come back in every test: a cached role of an earlier one must be gone.
        if plane.allowed(LIMITED, missing[2], missing[1], group=missing[0], namespace=scope(missing)):
            return False
        return all(
            plane.allowed(LIMITED, verb, resource, group=group, namespace=scope((group, resource, verb)))
            for group, resource, verb in role_grants(documents)
        )

    def setup() -> None:
        plane.apply(documents)
        for role in namespaced_roles(documents):
            bind_in_namespace(plane, namespace, role, LIMITED)
        wait_until(applied, timeout=30, interval=0.05, what=f"RBAC without {missing}")

    await asyncio.to_thread(setup)
    try:
        yield
    finally:
        await asyncio.to_thread(plane.delete, documents)


@pytest.fixture(scope="module")
def limited_kubeconfig(kube_plane: ControlPlane) -> Iterator[Path]:
    """A kubeconfig of the LIMITED ServiceAccount (its roles come with each test)."""
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"namespace": LIMITED[0], "name": LIMITED[1]},
    }
    kube_plane.apply([account])
    try:
        path = kube_plane.directory / "limited.kubeconfig"
        kube_plane.write_service_account_kubeconfig(path, *LIMITED)
        yield path
    finally:
        kube_plane.delete([account])


# -- probes: one feature each, run without the permission it needs --------------------------------


@dataclass
class Trial:
    client: TestClient[Any, Any]
    plane: ControlPlane
    ns: str
    reason: str  # the refusal the gateway must report
    caplog: pytest.LogCaptureFixture


Probe = Callable[[Trial], Awaitable[None]]


async def create_workload(plane: ControlPlane, ns: str, kind: str, replicas: int) -> str:
    """A Deployment, StatefulSet or bare ReplicaSet named web; its workload id."""
    if kind == "deployment":
        await create_deployment(plane, ns, "web", replicas)
        return "deployment/web"
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}, "annotations": LINKED},
            "spec": {"containers": [container()], "terminationGracePeriodSeconds": 1},
        },
    }
    if kind == "statefulset":
        spec["serviceName"] = "web"
    kinds = {"statefulset": "StatefulSet", "replicaset": "ReplicaSet"}
    body = {"apiVersion": "apps/v1", "kind": kinds[kind], "metadata": {"name": "web"}, "spec": spec}
    await api(plane, "POST", f"/apis/apps/v1/namespaces/{ns}/{kind}s", body)
    return f"{kind}/web"


async def listing(t: Trial) -> None:
    body = await expect(await t.client.get("/api/v1/containers"), 403, "FORBIDDEN")
    assert body["message"] == t.reason


def inspecting(kind: str) -> Probe:
    """Inspect of a workload entry (its kind's ``get``)."""

    async def probe(t: Trial) -> None:
        cid = await create_workload(t.plane, t.ns, kind, 0)
        body = await expect(
            await t.client.get(f"/api/v1/containers/{t.ns}/{quote(cid, safe='')}"), 403, "FORBIDDEN"
        )
        assert body["message"] == t.reason

    return probe


async def reading_a_pod(t: Trial) -> None:
    """Inspect of a pod, and a log subscription (which looks the pod up before it starts)."""
    await create_pod(t.plane, t.ns, "solo")
    body = await expect(await t.client.get(f"/api/v1/containers/{t.ns}/solo"), 403, "FORBIDDEN")
    assert body["message"] == t.reason
    ws = await connect(t.client)
    await ws.send("container.logs.subscribe", containerId="solo", namespace=t.ns)
    error = await ws.until("container.logs.error", containerId="solo")
    assert error["data"]["error"] == "FORBIDDEN" and error["data"]["message"] == t.reason
    assert not any(m["type"] == "container.logs.started" for m in ws.seen)


def acting(action: str, kind: str) -> Probe:
    """A stop or restart of a running pod or workload entry: accepted, then failed with the reason."""

    async def probe(t: Trial) -> None:
        if kind == "pod":
            await create_pod(t.plane, t.ns, "solo")
            cid, query = "solo", "&force=true"
        else:
            cid, query = await create_workload(t.plane, t.ns, kind, 1), ""
        path = f"/api/v1/containers/{t.ns}/{quote(cid, safe='')}"
        await eventually(lambda: _state(t.client, t.ns, quote(cid, safe=""), "running"), what=f"{cid} to run")
        ws = await connect(t.client)
        op = await accepted(await t.client.post(f"{path}/{action}?timeout=1{query}"))
        failed = await ws.until(f"container.{action}.failed", operationId=op, timeout=60)
        assert failed["data"]["error"] == f"CONTAINER_{action.upper()}_FAILED"
        assert failed["data"]["message"] == f"Failed to {action} container: {t.reason}"
        record = await (await t.client.get(f"/api/v1/operations/{op}")).json()
        assert (record["state"], record["message"]) == ("failed", failed["data"]["message"])

    return probe


async def following_logs(t: Trial) -> None:
    await create_pod(t.plane, t.ns, "solo")
    await eventually(lambda: _state(t.client, t.ns, "solo", "running"), what="the pod to run")
    ws = await connect(t.client)
    await ws.send("container.logs.subscribe", containerId="solo", namespace=t.ns)
    await ws.until("container.logs.started", containerId="solo")
    error = await ws.until("container.logs.error", containerId="solo")
    assert error["data"]["error"] == "LOG_STREAM_FAILED" and error["data"]["message"] == t.reason
    ended = await ws.until("container.logs.ended", containerId="solo")
    assert ended["data"]["reason"] == "error"


async def watching(t: Trial) -> None:
    """The gateway's pod watch: refused after its list, and the log says which permission (in the
    apiserver's words, or the gateway's)."""
    said = (f'cannot watch resource "pods" in API group "" in the namespace "{t.ns}"', t.reason)

    async def logged() -> bool:
        return any(
            any(words in r.getMessage() for words in said)
            for r in t.caplog.records
            if r.levelno >= logging.WARNING
        )

    await eventually(logged, what="the refused watch in the log")


async def measuring(t: Trial) -> None:
    await create_pod(t.plane, t.ns, "solo")
    body = await expect(await t.client.get(f"/api/v1/containers/{t.ns}/solo/stats"), 403, "FORBIDDEN")
    assert body["message"] == t.reason


async def sizing(t: Trial) -> None:
    """Stats of a pod without limits measure against its node: without the node, against 0, and
    the log says which permission is missing."""
    await create_pod(t.plane, t.ns, "busy", {"CPU_USAGE": "250m", "MEM_USAGE": "64Mi"})
    await asyncio.to_thread(install_metrics_api, t.plane)
    try:

        async def sample() -> dict[str, Any] | None:
            resp = await t.client.get(f"/api/v1/containers/{t.ns}/busy/stats")
            return await resp.json() if resp.status == 200 else None

        stats = await eventually(sample, what="PodMetrics for the pod")
        assert stats["cpu"] == {"usage": 25.0, "coresUsed": 0.25, "totalCores": 0.0}
        assert stats["memory"]["limit"] == 0
        assert any(t.reason in r.getMessage() for r in t.caplog.records if r.levelno >= logging.WARNING)
    finally:
        await asyncio.to_thread(remove_metrics_api, t.plane)


CORE, APPS, METRICS = "", "apps", "metrics.k8s.io"
PROBES: dict[Grant, Probe] = {
    (CORE, "pods", "get"): reading_a_pod,
    (CORE, "pods", "list"): listing,
    (CORE, "pods", "watch"): watching,
    (CORE, "pods", "create"): acting("restart", "pod"),
    (CORE, "pods", "delete"): acting("stop", "pod"),
    (CORE, "pods/log", "get"): following_logs,
    (CORE, "nodes", "get"): sizing,
    (METRICS, "pods", "get"): measuring,
    (APPS, "deployments", "list"): listing,
    (APPS, "statefulsets", "list"): listing,
    (APPS, "deployments", "get"): inspecting("deployment"),
    (APPS, "statefulsets", "get"): inspecting("statefulset"),
    (APPS, "replicasets", "get"): inspecting("replicaset"),
    (APPS, "deployments", "patch"): acting("stop", "deployment"),
    (APPS, "statefulsets", "patch"): acting("stop", "statefulset"),
    (APPS, "replicasets", "patch"): acting("stop", "replicaset"),
    **{
        (APPS, f"{kind}s/scale", "patch"): acting("stop", kind)
        for kind in ("deployment", "statefulset", "replicaset")
    },
}


@pytest.mark.parametrize(
    "missing", sorted(PROBES), ids=lambda g: f"{g[2]}-{g[1]}" + (f".{g[0]}" if g[0] else "")
)
async def test_a_missing_permission_is_named(
    missing: Grant,
    gateway: ClientFactory,
    kube_plane: ControlPlane,
    kube_namespace: str,
    limited_kubeconfig: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    ns = kube_namespace
    async with granted_all_but(kube_plane, ns, missing):
        client = await gateway(real_config(limited_kubeconfig, ns))
        reason = refusal(missing, "" if missing in cluster_bound(gateway_rbac()) else ns)
        await PROBES[missing](Trial(client, kube_plane, ns, reason, caplog))
        await client.close()  # before its permissions go


async def test_the_cluster_wide_binding_covers_every_namespace(
    gateway: ClientFactory, kube_plane: ControlPlane, kube_namespace: str
) -> None:
    """rbac-all-namespaces.yaml lets the manifest's account manage pods of any namespace."""
    ns = kube_namespace
    binding = load_manifest(ALL_NAMESPACES)
    await asyncio.to_thread(kube_plane.apply, binding)
    try:
        await asyncio.to_thread(
            wait_until,
            lambda: kube_plane.allowed((GATEWAY_NAMESPACE, GATEWAY_ACCOUNT), "watch", "pods"),
            timeout=30,
            interval=0.05,
            what="the cluster-wide binding to take effect",
        )
        client = await gateway(real_config(kube_plane.gateway_kubeconfig, ns, namespaces=[]))
        await create_pod(kube_plane, ns, "solo")
        await eventually(lambda: _state(client, ns, "solo", "running"), what="the pod to run")
        rows = await (await client.get("/api/v1/containers")).json()
        assert ("solo", ns) in [(c["id"], c["namespace"]) for c in rows]
        await client.close()
    finally:
        await asyncio.to_thread(kube_plane.delete, binding)


async def test_the_gateway_reads_version_and_readiness_without_a_rule(kube_plane: ControlPlane) -> None:
    """The default system:public-info-viewer role lets every authenticated user read them."""
    for path in ("/version", "/readyz"):
        status, _ = await asyncio.to_thread(
            kube_plane.request, "GET", path, token=kube_plane.gateway_token, check=False
        )
        assert status == 200, path
