"""A silent pod watch, a frozen path to the apiserver and a dead etcd: noticed, bounded, recovered.

The real tier puts a loopback TCP proxy between the gateway and the apiserver that can freeze
(keep every connection open and forward nothing), and stops etcd under a running apiserver, which
still answers /version from memory. The fast tier covers what the fake apiserver can show on cue.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from nekzus.keys import WATCHERS
from nekzus.realtime.watcher import StateWatcher
from tests.kube_real.test_kube_real import (
    accepted,
    api,
    connect,
    create_deployment,
    create_pod,
    eventually,
    running_pods,
)
from tests.support.gateway import ClientFactory, watching
from tests.support.kube_fixtures import real_config
from tests.support.kube_plane import ControlPlane
from tests.support.tcp_proxy import FreezableProxy, proxied_kubeconfig
from tests.unit.test_errors import expect


async def timed(request: Any) -> tuple[Any, float]:
    """The response of an awaited request, and the seconds it took."""
    started = time.monotonic()
    response = await request
    return response, time.monotonic() - started


async def ready(client: TestClient[Any, Any]) -> bool:
    return (await client.get("/readyz")).status == 200


# -- real control plane --------------------------------------------------------------------------

REQUEST_TIMEOUT = 2.0
WATCH_TIMEOUT = 4.0


async def test_frozen_apiserver_path_is_noticed_bounded_and_recovered(
    gateway: ClientFactory, kube_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    ns = kube_namespace
    async with FreezableProxy(kube_plane.apiserver_port) as proxy:
        kubeconfig = proxied_kubeconfig(
            kube_plane.gateway_kubeconfig, proxy.port, tmp_path / "proxied.kubeconfig"
        )
        client = await gateway(
            real_config(kubeconfig, ns, request_timeout=REQUEST_TIMEOUT, watch_timeout=WATCH_TIMEOUT)
        )
        await create_deployment(kube_plane, ns, "steady", 1)
        [pod] = await running_pods(client, "steady", 1)
        ws = await connect(client)
        await watching(client)
        proxy.freeze()
        try:
            # A call through a frozen connection ends with the request timeout, not after 30 s.
            resp, took = await timed(client.get(f"/api/v1/containers/{ns}/{pod}"))
            await expect(resp, 503, "RUNTIME_UNAVAILABLE")
            assert took < REQUEST_TIMEOUT + 1.5, took
            # The readiness probe cannot get through either: /readyz says so, and from then on
            # calls answer at once.
            body = await expect(await client.get("/readyz"), 503, "RUNTIME_UNAVAILABLE")
            assert body["runtimes"]["kubernetes"]["status"] == "unavailable"
            assert "did not answer" in body["runtimes"]["kubernetes"]["reason"]
            resp, took = await timed(client.get("/api/v1/containers"))
            body = await expect(resp, 503, "RUNTIME_UNAVAILABLE")
            assert took < 1, took
            assert "did not answer" in body["message"]
            # Changed while the gateway sees nothing; past its silence deadline the watch is given up
            # (reopening it is refused at once while the probe fails), so the stream is not open.
            await create_pod(kube_plane, ns, "during")
            [watcher] = client.app[WATCHERS]
            await eventually(lambda: _closed(watcher), timeout=WATCH_TIMEOUT + 10, what="the watch given up")
        finally:
            proxy.thaw()
        # The old watch connection stays silent: only a watch opened again reports the pod.
        state = await ws.until("container.state", containerId="during", timeout=WATCH_TIMEOUT + 20)
        assert state["data"]["namespace"] == ns
        await eventually(lambda: ready(client), what="/readyz to be ready again")
        # No connection that timed out went back to the pool: every call is quick again.
        for _ in range(5):
            resp, took = await timed(client.get(f"/api/v1/containers/{ns}/{pod}"))
            assert resp.status == 200, await resp.text()
            assert took < 1, took


async def _closed(watcher: StateWatcher) -> bool:
    return not watcher.watching.is_set()


async def test_etcd_down_is_unready_fails_fast_and_recovers(
    gateway: ClientFactory, kube_plane: ControlPlane, kube_namespace: str
) -> None:
    ns = kube_namespace
    client = await gateway(real_config(kube_plane.gateway_kubeconfig, ns))
    await create_deployment(kube_plane, ns, "steady", 1)
    [pod] = await running_pods(client, "steady", 1)
    ws = await connect(client)
    await asyncio.to_thread(kube_plane.stop_etcd)
    try:
        # The apiserver still answers /version from memory; its /readyz fails in about 2 s.
        resp, took = await timed(client.get("/readyz"))
        body = await expect(resp, 503, "RUNTIME_UNAVAILABLE")
        assert took < 6, took
        reason = "The Kubernetes API server is not ready (failing: etcd)"
        assert body["runtimes"] == {"kubernetes": {"status": "unavailable", "reason": reason}}
        health = await (await client.get("/api/v1/health")).json()
        assert health["status"] == "unhealthy"
        assert health["runtimes"]["kubernetes"] == {"status": "unavailable", "reason": reason}
        # Known to be down: every call answers at once instead of after 31 s.
        for method, path in [
            ("GET", "/api/v1/containers"),
            ("GET", f"/api/v1/containers/{ns}/{pod}"),
            ("POST", f"/api/v1/containers/{ns}/{pod}/stop"),
        ]:
            resp, took = await timed(client.request(method, path))
            body = await expect(resp, 503, "RUNTIME_UNAVAILABLE")
            assert took < 1, (path, took)
            assert body["message"] == f"Container runtime not available: {reason}"
    finally:
        await asyncio.to_thread(kube_plane.start_etcd)
    await eventually(lambda: ready(client), what="/readyz to be ready with etcd back")
    health = await (await client.get("/api/v1/health")).json()
    assert health["runtimes"]["kubernetes"]["status"] == "healthy"
    op = await accepted(await client.post(f"/api/v1/containers/{ns}/{pod}/stop?timeout=1"))
    await ws.until("container.stop.completed", operationId=op, timeout=60)
    deployment = await api(kube_plane, "GET", f"/apis/apps/v1/namespaces/{ns}/deployments/steady")
    assert deployment["spec"]["replicas"] == 0
