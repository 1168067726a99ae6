"""Kubernetes operations report what happened: an apiserver that goes away during a stop's wait,
stops of several pods of one workload, a workload scaled up by hand after a stop, and a rolling
restart that completes only once the rollout has finished.

Real control plane tier (see tests/kube_real/test_kube_real.py), except for the apiserver's 429 and 5xx
answers, which a real one cannot be made to give on cue: those are served by the fake.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.kube_real.test_kube_real import (
    LINKED,
    accepted,
    api,
    connect,
    container,
    create_deployment,
    eventually,
    running_pods,
)
from tests.support.gateway import ClientFactory
from tests.support.kube_fixtures import real_config
from tests.support.kube_plane import ControlPlane
from tests.support.tcp_proxy import FreezableProxy, proxied_kubeconfig
from tests.support.wsclient import WS
from tests.unit.test_errors import expect

APPS = "/apis/apps/v1/namespaces"
MERGE = "application/merge-patch+json"
# Holds a deleted pod in Terminating until the test removes it: the stop's wait cannot end before.
HOLD = "nekzus.test/hold"


async def pods_of(plane: ControlPlane, ns: str, name: str) -> list[dict[str, Any]]:
    listing = await api(plane, "GET", f"/api/v1/namespaces/{ns}/pods?labelSelector=app%3D{name}")
    return list(listing["items"])


async def ready_pods(plane: ControlPlane, ns: str, name: str, count: int) -> list[dict[str, Any]] | None:
    """The pods of ``name`` if there are ``count``, all ready and none terminating."""
    pods = await pods_of(plane, ns, name)
    ready = [
        p
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or ())
    ]
    return pods if len(pods) == len(ready) == count else None


async def release(plane: ControlPlane, ns: str, name: str) -> None:
    """Remove the HOLD finalizer from every pod of ``name``, letting the terminating ones go."""
    for pod in await pods_of(plane, ns, name):
        path = f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}"
        await asyncio.to_thread(
            plane.request, "PATCH", path, {"metadata": {"finalizers": None}}, content_type=MERGE, check=False
        )


async def deployment(plane: ControlPlane, ns: str, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = await api(plane, "GET", f"{APPS}/{ns}/deployments/{name}")
    return doc


async def outcomes(ws: WS, operations: list[str], timeout: float = 60) -> dict[str, str]:
    """The end (``container.<action>.completed`` or ``.failed``) of each operation, in any order."""
    ends: dict[str, str] = {}

    def note(message: dict[str, Any]) -> None:
        kind, data = message["type"], message["data"]
        if data.get("operationId") in operations and kind.endswith((".completed", ".failed")):
            ends[data["operationId"]] = kind

    for message in ws.seen:
        note(message)
    async with asyncio.timeout(timeout):
        while len(ends) < len(operations):
            note(await ws.next(timeout))
    return ends


async def test_a_stop_outlives_the_apiserver_going_away(
    gateway: ClientFactory, kube_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    ns = kube_namespace
    # The gateway reaches the apiserver through a proxy that holds its traffic until the restarted
    # apiserver grants the gateway's ServiceAccount again (it serves a moment before its RBAC
    # caches are filled, refusing everyone): the outage the stop must outlive is the kill.
    async with FreezableProxy(kube_plane.apiserver_port) as proxy:
        kubeconfig = proxied_kubeconfig(kube_plane.gateway_kubeconfig, proxy.port, tmp_path / "proxied")
        client = await gateway(real_config(kubeconfig, ns, ready_timeout=120))
        await create_deployment(kube_plane, ns, "held", 2, finalizers=(HOLD,))
        try:
            pods = await running_pods(client, "held", 2)
            ws = await connect(client)
            op = await accepted(await client.post(f"/api/v1/containers/{ns}/{pods[0]}/stop?timeout=1"))

            async def terminating() -> bool:
                found = await pods_of(kube_plane, ns, "held")
                return len(found) == 2 and all(p["metadata"].get("deletionTimestamp") for p in found)

            # Scaled to 0 and both pods terminating: the stop is in its wait for the pods to go.
            await eventually(terminating, what="both pods to be terminating")
            await asyncio.to_thread(kube_plane.stop_apiserver)
            try:
                await expect(await client.get("/api/v1/containers"), 503, "RUNTIME_UNAVAILABLE")
                proxy.freeze()
            finally:
                await asyncio.to_thread(kube_plane.start_apiserver)
                proxy.thaw()
            record = await (await client.get(f"/api/v1/operations/{op}")).json()
            assert record["state"] == "pending", record
            await release(kube_plane, ns, "held")
            assert await outcomes(ws, [op], timeout=120) == {op: "container.stop.completed"}
        finally:
            await release(kube_plane, ns, "held")
    held = await deployment(kube_plane, ns, "held")
    assert held["spec"]["replicas"] == 0
    assert held["metadata"]["annotations"]["nekzus/stopped-replicas"] == "2"


async def test_a_batch_stop_of_every_pod_of_a_deployment_is_one_scale_down(
    gateway: ClientFactory, kube_plane: ControlPlane, kube_namespace: str
) -> None:
    ns = kube_namespace
    kclient = await gateway(real_config(kube_plane.gateway_kubeconfig, ns))
    await create_deployment(kube_plane, ns, "trio", 3)
    pods = await running_pods(kclient, "trio", 3)
    resp = await kclient.post(
        f"/api/v1/containers/batch?namespace={ns}",
        json={"action": "stop", "containerIds": pods, "timeout": 1},
    )
    body = await resp.json()
    assert resp.status == 200, body
    assert (body["total"], body["success"], body["failed"]) == (3, 3, 0), body
    trio = await deployment(kube_plane, ns, "trio")
    assert trio["spec"]["replicas"] == 0
    assert trio["metadata"]["annotations"]["nekzus/stopped-replicas"] == "3"
    assert await pods_of(kube_plane, ns, "trio") == []

    ws = await connect(kclient)
    op = await accepted(await kclient.post(f"/api/v1/containers/{ns}/deployment%2Ftrio/start"))
    assert await outcomes(ws, [op]) == {op: "container.start.completed"}
    trio = await deployment(kube_plane, ns, "trio")
    assert trio["spec"]["replicas"] == 3 and trio["status"]["readyReplicas"] == 3


async def test_two_stops_of_one_pod_both_complete(
    gateway: ClientFactory, kube_plane: ControlPlane, kube_namespace: str
) -> None:
    ns = kube_namespace
    kclient = await gateway(real_config(kube_plane.gateway_kubeconfig, ns))
    await create_deployment(kube_plane, ns, "twice", 2)
    [pod, _] = await running_pods(kclient, "twice", 2)
    ws = await connect(kclient)
    first, second = await asyncio.gather(
        kclient.post(f"/api/v1/containers/{ns}/{pod}/stop?timeout=1"),
        kclient.post(f"/api/v1/containers/{ns}/{pod}/stop?timeout=1"),
    )
    ops = [await accepted(first), await accepted(second)]
    assert await outcomes(ws, ops) == dict.fromkeys(ops, "container.stop.completed")
    twice = await deployment(kube_plane, ns, "twice")
    assert twice["spec"]["replicas"] == 0
    assert twice["metadata"]["annotations"]["nekzus/stopped-replicas"] == "2"


async def test_a_workload_scaled_up_by_hand_after_a_stop_is_running_again(
    gateway: ClientFactory, kube_plane: ControlPlane, kube_namespace: str
) -> None:
    ns = kube_namespace
    kclient = await gateway(real_config(kube_plane.gateway_kubeconfig, ns))
    await create_deployment(kube_plane, ns, "manual", 2)
    [pod, _] = await running_pods(kclient, "manual", 2)
    ws = await connect(kclient)
    op = await accepted(await kclient.post(f"/api/v1/containers/{ns}/{pod}/stop?timeout=1"))
    assert await outcomes(ws, [op]) == {op: "container.stop.completed"}
    assert (await deployment(kube_plane, ns, "manual"))["metadata"]["labels"]["nekzus/stopped"] == "true"

    scale = f"{APPS}/{ns}/deployments/manual/scale"
    await asyncio.to_thread(kube_plane.request, "PATCH", scale, {"spec": {"replicas": 3}}, content_type=MERGE)
    # Listed as its 3 running pods, not as a stopped entry; that list cleared the stale mark.
    await running_pods(kclient, "manual", 3)
    rows = await (await kclient.get("/api/v1/containers")).json()
    assert "deployment/manual" not in [c["id"] for c in rows]
    manual = await deployment(kube_plane, ns, "manual")
    assert "nekzus/stopped" not in (manual["metadata"].get("labels") or {})
    assert "nekzus/stopped-replicas" not in (manual["metadata"].get("annotations") or {})
    await expect(
        await kclient.post(f"/api/v1/containers/{ns}/deployment%2Fmanual/start"),
        409,
        "CONTAINER_ALREADY_STARTED",
    )

    # A later stop records the count the workload has then.
    [pod, *_] = await running_pods(kclient, "manual", 3)
    op = await accepted(await kclient.post(f"/api/v1/containers/{ns}/{pod}/stop?timeout=1"))
    assert await outcomes(ws, [op]) == {op: "container.stop.completed"}
    manual = await deployment(kube_plane, ns, "manual")
    assert manual["metadata"]["annotations"]["nekzus/stopped-replicas"] == "3"


async def test_a_rolling_restart_completes_when_every_pod_is_new_and_ready(
    gateway: ClientFactory, kube_plane: ControlPlane, kube_namespace: str
) -> None:
    ns = kube_namespace
    kclient = await gateway(real_config(kube_plane.gateway_kubeconfig, ns))
    await create_deployment(kube_plane, ns, "roll", 3)
    # A new pod counts as available 2 s after it is ready: the rollout's surge pod and the last old
    # pod are both there for a while after the third new pod is ready.
    await asyncio.to_thread(
        kube_plane.request,
        "PATCH",
        f"{APPS}/{ns}/deployments/roll",
        {"spec": {"minReadySeconds": 2}},
        content_type=MERGE,
    )
    old = set(await running_pods(kclient, "roll", 3))
    ws = await connect(kclient)
    op = await accepted(await kclient.post(f"/api/v1/containers/{ns}/deployment%2Froll/restart"))
    assert await outcomes(ws, [op], timeout=90) == {op: "container.restart.completed"}
    pods = await ready_pods(kube_plane, ns, "roll", 3)
    assert pods is not None, await pods_of(kube_plane, ns, "roll")
    assert not {p["metadata"]["name"] for p in pods} & old
    status = (await deployment(kube_plane, ns, "roll"))["status"]
    assert status["replicas"] == status["updatedReplicas"] == status["availableReplicas"] == 3


async def test_a_rolling_restart_of_a_statefulset_completes_on_its_update_revision(
    gateway: ClientFactory, kube_plane: ControlPlane, kube_namespace: str
) -> None:
    ns = kube_namespace
    kclient = await gateway(real_config(kube_plane.gateway_kubeconfig, ns))
    body = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": ns},
        "spec": {
            "replicas": 2,
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}, "annotations": LINKED},
                "spec": {"containers": [container()], "terminationGracePeriodSeconds": 1},
            },
        },
    }
    await api(kube_plane, "POST", f"{APPS}/{ns}/statefulsets", body)
    old = {
        p["metadata"]["uid"]
        for p in await eventually(
            lambda: ready_pods(kube_plane, ns, "db", 2), what="the StatefulSet's 2 pods to be ready"
        )
    }
    ws = await connect(kclient)
    op = await accepted(await kclient.post(f"/api/v1/containers/{ns}/statefulset%2Fdb/restart"))
    assert await outcomes(ws, [op], timeout=90) == {op: "container.restart.completed"}
    status = (await api(kube_plane, "GET", f"{APPS}/{ns}/statefulsets/db"))["status"]
    assert status["currentRevision"] == status["updateRevision"]
    pods = await ready_pods(kube_plane, ns, "db", 2)
    assert pods is not None and not {p["metadata"]["uid"] for p in pods} & old
    assert {p["metadata"]["labels"]["controller-revision-hash"] for p in pods} == {status["updateRevision"]}
