"""The tests of kube watch that need the fake apiserver (kube_fake tier); the story and the other tests
are in tests/kube_real/test_kube_watch.py, tests/unit/test_kube_watch.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nekzus.keys import MONITOR
from tests.kube_fake.test_kube_fast import NS, WEB, kube_config
from tests.kube_real.test_kube_real import (
    eventually,
)
from tests.kube_real.test_kube_watch import ready
from tests.support.fake_kube import FakeKube
from tests.support.fake_kube_fixtures import write_kubeconfig
from tests.support.gateway import ClientFactory
from tests.unit.test_errors import expect


@pytest.fixture
async def kube() -> AsyncIterator[FakeKube]:
    async with FakeKube(ready_delay=0.01, delete_delay=0.01) as fake:
        yield fake


async def test_a_watch_that_cannot_open_makes_the_runtime_unready(
    gateway: ClientFactory, kube: FakeKube, tmp_path: Path
) -> None:
    kube.add_pod(NS, "web", containers=WEB)
    kube.forbid("watch", "pods")
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube.url, kube.token)
    client = await gateway(kube_config(kubeconfig))
    reason = (
        "The pod watch cannot be opened (Forbidden by the cluster's RBAC rules: "
        'cannot watch "pods" at the cluster scope)'
    )

    async def stalled() -> dict[str, Any] | None:
        resp = await client.get("/readyz")
        return await resp.json() if resp.status == 503 else None

    body = await eventually(stalled, timeout=10, what="/readyz to report the watch")
    assert body["runtimes"]["kubernetes"] == {"status": "unavailable", "reason": reason}
    # The apiserver itself answers: calls are not refused for a watch that cannot open.
    assert (await client.get(f"/api/v1/containers/{NS}/web")).status == 200
    kube.allow("watch", "pods")
    await eventually(lambda: ready(client), timeout=15, what="/readyz once the watch is open")


async def test_an_unready_apiserver_fails_calls_at_once_until_a_probe_passes(
    gateway: ClientFactory, kube: FakeKube, tmp_path: Path
) -> None:
    kube.add_pod(NS, "web", containers=WEB)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube.url, kube.token)
    client = await gateway(kube_config(kubeconfig))
    assert await ready(client)
    kube.failing_checks = ["etcd"]
    body = await expect(await client.get("/readyz"), 503, "RUNTIME_UNAVAILABLE")
    reason = "The Kubernetes API server is not ready (failing: etcd)"
    assert body["runtimes"]["kubernetes"]["reason"] == reason
    calls = len(kube.request_log)
    body = await expect(await client.get(f"/api/v1/containers/{NS}/web"), 503, "RUNTIME_UNAVAILABLE")
    assert body["message"] == f"Container runtime not available: {reason}"
    assert [p for _, p in kube.request_log[calls:] if "/pods/web" in p] == []  # never asked
    kube.failing_checks = []
    monitor = client.app[MONITOR]

    async def probed() -> bool:
        return monitor.available.get("kubernetes") is True

    # The monitor probes a runtime that is down every second.
    await eventually(probed, timeout=5, what="a probe to pass")
    assert (await client.get(f"/api/v1/containers/{NS}/web")).status == 200
