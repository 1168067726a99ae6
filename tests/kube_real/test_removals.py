"""The tests of removals that need the real control plane (kube_real tier); the story and the other
tests are in tests/docker/test_removals.py, tests/unit/test_removals.py.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from tests.docker.test_websocket import connect
from tests.kube_real.test_kube_real import (
    api,
    create_deployment,
    create_pod,
    eventually,
    running_pods,
)
from tests.support.gateway import ClientFactory, watching
from tests.support.kube_fixtures import real_config
from tests.support.kube_plane import ControlPlane
from tests.support.tcp_proxy import FreezableProxy, proxied_kubeconfig


def removed_ids(seen: list[dict[str, Any]], *, distinct: bool = True) -> Any:
    """The ids of the containers announced as removed in ``seen``."""
    ids = [
        m["data"]["containerId"]
        for m in seen
        if m["type"] == "container.state" and m["data"]["state"] == "removed"
    ]
    return set(ids) if distinct else ids


async def test_pods_deleted_while_the_apiserver_was_out_of_reach_are_announced_once(
    gateway: ClientFactory, kube_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    ns = kube_namespace
    async with FreezableProxy(kube_plane.apiserver_port) as proxy:
        kubeconfig = proxied_kubeconfig(kube_plane.gateway_kubeconfig, proxy.port, tmp_path / "proxied")
        client = await gateway(real_config(kubeconfig, ns, request_timeout=2, watch_timeout=2))
        await create_deployment(kube_plane, ns, "fleet", 3)
        for i in range(3):
            await create_pod(kube_plane, ns, f"lone-{i}")
        fleet = await running_pods(client, "fleet", 3)
        lone = await running_pods(client, "lone", 3)
        await watching(client)
        ws = await connect(client)
        proxy.freeze()
        # Deleted by hand and by a scale to 0, all while the gateway cannot reach the apiserver.
        for pod in lone:
            await api(kube_plane, "DELETE", f"/api/v1/namespaces/{ns}/pods/{pod}?gracePeriodSeconds=0")
        await asyncio.to_thread(
            kube_plane.request,
            "PATCH",
            f"/apis/apps/v1/namespaces/{ns}/deployments/fleet/scale",
            {"spec": {"replicas": 0}},
            content_type="application/merge-patch+json",
        )

        async def all_gone() -> bool:
            pods = await api(kube_plane, "GET", f"/api/v1/namespaces/{ns}/pods")
            return not pods["items"]

        await eventually(all_gone, what="every pod to be deleted")
        proxy.thaw()
        pods = {*fleet, *lone}
        # The relist after the reconnect announces every vanished pod, in no particular order.
        async with asyncio.timeout(30):
            while pods - removed_ids(ws.seen) or pods - {
                m["data"]["appId"] for m in ws.seen if m["type"] == "health_change"
            }:
                await ws.next(timeout=30)
        for pod in pods:
            [removed] = [
                m["data"]
                for m in ws.seen
                if m["type"] == "container.state" and m["data"]["containerId"] == pod
            ]
            assert (removed["state"], removed["previousState"], removed["namespace"]) == (
                "removed",
                "running",
                ns,
            )
            assert [
                (m["data"]["status"], m["data"]["message"])
                for m in ws.seen
                if m["type"] == "health_change" and m["data"]["appId"] == pod
            ] == [("unhealthy", f"Container {pod} was removed")]
        # A pod created afterwards marks the point by which a repeat would have arrived.
        await create_pod(kube_plane, ns, "marker")
        await ws.until("container.state", containerId="marker", state="running", timeout=30)
        assert Counter(removed_ids(ws.seen, distinct=False)) == Counter(pods)
