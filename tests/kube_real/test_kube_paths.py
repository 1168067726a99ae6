"""Ids, namespaces and workloads on the real control plane: no path injection through a log
subscription, stats and logs of a workload entry, and log follows that outlive the apiserver.

Helpers come from tests/kube_real/test_kube_real.py; each test has its namespace (and, where it needs one,
a second) and a gateway of its own. The last test runs on the fake apiserver: the limit on how
long a follow waits for the apiserver is minutes, which a test does not wait for.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from nekzus.realtime.logrequest import parse_since
from tests.kube_real.test_kube_real import (
    _state,
    accepted,
    api,
    connect,
    create_deployment,
    create_pod,
    eventually,
    running_pods,
)
from tests.support.gateway import ClientFactory
from tests.support.kube_fixtures import (
    create_namespace,
    delete_namespace,
    install_metrics_api,
    real_config,
    remove_metrics_api,
)
from tests.support.kube_plane import ControlPlane
from tests.support.tcp_proxy import FreezableProxy, proxied_kubeconfig
from tests.support.wsclient import WS
from tests.unit.test_errors import expect

LINE = re.compile(r"line (\d+)")


def split(message: dict[str, Any]) -> tuple[str, int]:
    """(RFC 3339 time, line number) of a timestamped ``line N`` message."""
    stamp, _, text = message["data"]["message"].partition(" ")
    match = LINE.fullmatch(text)
    assert match, message
    return stamp, int(match.group(1))


async def lines(ws: WS, container_id: str, count: int, timeout: float = 30) -> list[tuple[str, int]]:
    """The next ``count`` lines of a timestamped stream as (RFC 3339 time, line number)."""
    found: list[tuple[str, int]] = []
    async with asyncio.timeout(timeout):
        while len(found) < count:
            found.append(split(await ws.until("container.logs", containerId=container_id, timeout=timeout)))
    return found


async def test_injected_namespaces_are_refused_and_stream_nothing(
    gateway: ClientFactory, kube_plane: ControlPlane, kube_namespace: str
) -> None:
    target = kube_namespace
    other = await asyncio.to_thread(create_namespace, kube_plane)
    try:
        # Every namespace is managed, as in the attack: only validation stands in the way.
        client = await gateway(real_config(kube_plane.kubeconfig, target, namespaces=[]))
        await create_pod(kube_plane, target, "lonely", {"LOG_LINES": "3"})
        await eventually(lambda: _state(client, target, "lonely", "running"), what="the pod to run")
        ws = await connect(client)
        for hostile in (f"{other}/../{target}", f"{target}/pods/lonely/log?container=app&x="):
            await ws.send("container.logs.subscribe", containerId="lonely", namespace=hostile, follow=False)
            refused = await ws.until("error")
            assert refused["data"]["error"] == "INVALID_MESSAGE"
            assert "namespace" in refused["data"]["message"]
        # The same pod by its own namespace does stream: the refusals above were not for want of lines.
        await ws.send(
            "container.logs.subscribe", containerId="lonely", namespace=target, follow=False, tail=3
        )
        ended = await ws.until("container.logs.ended", containerId="lonely")
        assert ended["data"]["reason"] == "stopped"
        streamed = [m for m in ws.seen if m["type"].startswith("container.logs")]
        assert all(m["data"].get("namespace") == target for m in streamed), streamed
        assert [m["data"]["message"] for m in streamed if m["type"] == "container.logs"] == [
            "line 1", "line 2", "line 3",
        ]  # fmt: skip
    finally:
        await asyncio.to_thread(delete_namespace, kube_plane, other)


async def test_stats_of_a_workload_sum_its_running_pods(
    gateway: ClientFactory, kube_plane: ControlPlane, kube_namespace: str
) -> None:
    ns = kube_namespace
    client = await gateway(real_config(kube_plane.gateway_kubeconfig, ns))
    await create_deployment(kube_plane, ns, "web", 2, {"CPU_USAGE": "250m", "MEM_USAGE": "64Mi"})
    await running_pods(client, "web", 2)
    await asyncio.to_thread(install_metrics_api, kube_plane)
    try:

        async def sample() -> dict[str, Any] | None:
            resp = await client.get(f"/api/v1/containers/{ns}/deployment%2Fweb/stats")
            return await resp.json() if resp.status == 200 else None

        stats = await eventually(sample, what="PodMetrics for both pods")
        assert stats["containerId"] == "deployment/web"
        # Two pods of 250m and 64 MiB each; without limits, the one node's allocatable (2 CPUs,
        # 4 GiB) counts once for both.
        assert stats["cpu"] == {"usage": 50.0, "coresUsed": 0.5, "totalCores": 2.0}
        assert stats["memory"]["used"] == 128 << 20 and stats["memory"]["limit"] == 4 << 30

        ws = await connect(client)
        op = await accepted(await client.post(f"/api/v1/containers/{ns}/deployment%2Fweb/stop?timeout=1"))
        await ws.until("container.stop.completed", operationId=op, timeout=60)
        body = await expect(
            await client.get(f"/api/v1/containers/{ns}/deployment%2Fweb/stats"), 409, "CONTAINER_NOT_RUNNING"
        )
        assert body["message"] == "deployment/web is not running: it is stopped"
        # Its log likewise: nothing runs whose log could be read.
        await ws.send("container.logs.subscribe", containerId="deployment/web", namespace=ns)
        error = await ws.until("container.logs.error", containerId="deployment/web")
        assert error["data"]["error"] == "CONTAINER_NOT_RUNNING"
        assert not any(m["type"] == "container.logs.started" for m in ws.seen)
    finally:
        await asyncio.to_thread(remove_metrics_api, kube_plane)


async def test_a_workload_subscription_follows_its_pods(
    gateway: ClientFactory, kube_plane: ControlPlane, kube_namespace: str
) -> None:
    ns = kube_namespace
    client = await gateway(real_config(kube_plane.gateway_kubeconfig, ns))
    await create_deployment(kube_plane, ns, "web", 2, {"LOG_LINES": "5", "LOG_INTERVAL": "0.1"})
    pods = await running_pods(client, "web", 2)
    ws = await connect(client)
    await ws.send(
        "container.logs.subscribe", containerId="deployment/web", namespace=ns, tail=2, timestamps=True
    )
    await ws.until("container.logs.started", containerId="deployment/web")
    before = await lines(ws, "deployment/web", 5)
    # The stream reads one pod (the oldest ready one); when it goes, another takes over.
    for pod in pods:
        await api(kube_plane, "DELETE", f"/api/v1/namespaces/{ns}/pods/{pod}")
    after = await lines(ws, "deployment/web", 20, timeout=60)
    times = [parse_since(stamp) for stamp, _ in before + after]
    assert times == sorted(times) and len(set(times)) == len(times)  # nothing repeated
    assert not any(m["type"] in ("container.logs.ended", "container.logs.error") for m in ws.seen)
    fresh = await running_pods(client, "web", 2)
    assert not set(fresh) & set(pods)


async def test_a_log_follow_resumes_when_the_apiserver_returns(
    kube_plane: ControlPlane, kube_namespace: str, gateway: ClientFactory, tmp_path: Path
) -> None:
    ns = kube_namespace
    # The gateway reaches the apiserver through a proxy that holds its traffic while the apiserver
    # restarts and until RBAC grants the gateway's ServiceAccount again (a restarted apiserver
    # serves a moment before its RBAC caches are filled, refusing everyone): the outage the stream
    # must outlive is the apiserver's absence.
    async with FreezableProxy(kube_plane.apiserver_port) as proxy:
        kubeconfig = proxied_kubeconfig(kube_plane.gateway_kubeconfig, proxy.port, tmp_path / "proxied")
        client = await gateway(real_config(kubeconfig, ns))
        await create_pod(kube_plane, ns, "talker", {"LOG_LINES": "5", "LOG_INTERVAL": "0.1"})
        await eventually(lambda: _state(client, ns, "talker", "running"), what="the pod to run")
        ws = await connect(client)
        await ws.send("container.logs.subscribe", containerId="talker", namespace=ns, tail=0, timestamps=True)
        await ws.until("container.logs.started", containerId="talker")
        await lines(ws, "talker", 5)
        await asyncio.to_thread(kube_plane.stop_apiserver)
        try:
            # Lines go on being written while it is away (the node keeps them): all must arrive later.
            await expect(await client.get(f"/api/v1/containers/{ns}/talker"), 503, "RUNTIME_UNAVAILABLE")
            proxy.freeze()
        finally:
            await asyncio.to_thread(kube_plane.start_apiserver)
            proxy.thaw()
        resumed = await ws.until("container.logs.resumed", containerId="talker", timeout=60)
        await lines(ws, "talker", 30)
        streamed = [split(m) for m in ws.seen if m["type"] == "container.logs"]
        numbers = [n for _, n in streamed]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers  # none lost or repeated
        sent_before = [split(m) for m in ws.seen[: ws.seen.index(resumed)] if m["type"] == "container.logs"]
        assert parse_since(resumed["data"]["since"]) == parse_since(sent_before[-1][0])
        assert not any(m["type"] in ("container.logs.ended", "container.logs.error") for m in ws.seen)
