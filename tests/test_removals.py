"""Removed containers are announced: a ``container.state`` with the state ``removed``, once,
whether the removal was seen live or found by a relist after the event stream was down."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from nekzus.config import AppConfig
from nekzus.events import Event, EventBus
from nekzus.linking import AppLinker
from nekzus.watcher import StateWatcher
from runtimes import ContainerSummary

from .conftest import ClientFactory, Containers, Heard, watching
from .fakes import FakeRuntime, summary
from .kube_plane import ControlPlane
from .tcp_proxy import FreezableProxy, proxied_kubeconfig
from .test_kube_real import api, create_deployment, create_pod, eventually, real_config, running_pods
from .test_websocket import connect


def drained(sub: Heard) -> list[Event]:
    """What was published so far (publishing is synchronous)."""
    events = []
    while not sub.queue.empty():
        events.append(sub.queue.get_nowait())
    return events


def box(n: int, **changes: Any) -> ContainerSummary:
    """A fake container with an id of its own (``summary`` ids share their first 12 digits)."""
    return dataclasses.replace(summary(n), id=f"c{n:011d}", name=f"box-{n}", **changes)


async def test_a_relist_announces_every_container_that_vanished_once() -> None:
    linked = box(1, labels={"nekzus.app.id": "grafana"})
    unlinked = box(2, labels={})
    runtime = FakeRuntime([linked, unlinked, box(3)])
    bus = EventBus()
    sub = Heard(bus)
    watcher = StateWatcher(runtime, bus, AppLinker([AppConfig(id="grafana", name="Grafana")]))
    await watcher._reconcile(publish=False)
    # Removed while the stream was down: the next relist finds them missing.
    for gone in (linked, unlinked):
        del runtime.containers[gone.full_id]
    await watcher._reconcile(publish=True)
    await watcher._reconcile(publish=True)
    events = drained(sub)
    states = [e.data for e in events if e.type == "container.state"]
    assert sorted((s["containerId"], s["state"], s["previousState"]) for s in states) == [
        (linked.id, "removed", "running"),
        (unlinked.id, "removed", "running"),
    ]
    health = [e.data for e in events if e.type == "health_change"]
    assert [(h["appId"], h["status"], h["message"]) for h in health] == [
        ("grafana", "unhealthy", f"Container {linked.name} was removed")
    ]


async def test_the_first_listing_announces_nothing() -> None:
    runtime = FakeRuntime([box(1)])
    bus = EventBus()
    sub = Heard(bus)
    watcher = StateWatcher(runtime, bus, AppLinker([]))
    await watcher._reconcile(publish=False)
    runtime.containers.clear()
    await watcher._reconcile(publish=False)
    assert drained(sub) == []


async def test_a_container_removed_with_the_cli_is_announced_once(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    await watching(client)
    made = await containers.create(labels={"nekzus.app.id": "grafana"})
    cid = made["Id"][:12]
    ws = await connect(client)
    await ws.until("hello")
    await containers.docker.containers.container(made["Id"]).delete(force=True)
    removed = await ws.until("container.state", containerId=cid, state="removed")
    assert removed["data"]["previousState"] == "exited"
    assert removed["data"]["name"] == made["Name"].lstrip("/")
    # A later container's event marks the point by which a repeat would have arrived.
    other = await containers.create()
    await ws.until("container.state", containerId=other["Id"][:12], state="running")
    counts = Counter(
        m["data"]["state"]
        for m in ws.seen
        if m["type"] == "container.state" and m["data"]["containerId"] == cid
    )
    assert counts["removed"] == 1
    health = [m["data"] for m in ws.seen if m["type"] == "health_change" and m["data"]["appId"] == "grafana"]
    # "healthy" may come first (the start event can reach the hub after this client connected).
    assert [h["status"] for h in health if h["status"] == "unhealthy"] == ["unhealthy"]
    assert health[-1]["status"] == "unhealthy"


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
