"""The tests of kube operations that need the fake apiserver (kube_fake tier); the story and the other
tests are in tests/kube_real/test_kube_operations.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.kube_fake.test_kube_fast import kube_config
from tests.kube_real.test_kube_operations import outcomes
from tests.kube_real.test_kube_real import (
    LINKED,
    accepted,
    connect,
)
from tests.support.fake_kube import FakeKube, status_body
from tests.support.fake_kube_fixtures import write_kubeconfig
from tests.support.gateway import ClientFactory


class FlakyKube(FakeKube):
    """A fake whose next reads of a workload answer with the statuses queued in ``failures``, and
    whose reads of a pod named in ``late`` (after that many answered at once) are answered only
    once the pod is gone, as a slow answer would be."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failures: list[int] = []
        self.late: dict[str, int] = {}

    async def _get(self, request: web.Request) -> web.Response:
        resource, ns, name = (
            request.match_info["res"],
            request.match_info.get("ns", ""),
            request.match_info["name"],
        )
        if self.failures and resource in ("deployments", "statefulsets"):
            code = self.failures.pop(0)
            return web.json_response(status_body(code, "Unavailable", "try again"), status=code)
        if resource == "pods" and name in self.late:
            if self.late[name] > 0:
                self.late[name] -= 1
            else:
                await self.wait_for(lambda: self.get("pods", ns, name) is None)
        return await super()._get(request)


@pytest.fixture
async def flaky(gateway: ClientFactory) -> AsyncIterator[FlakyKube]:
    # After the gateway fixture, as in tests/kube_fake/test_kube_fast.py: closed before its teardown check.
    async with FlakyKube(ready_delay=0.02, delete_delay=0.02, seed=7) as fake:
        yield fake


async def test_a_stop_finding_its_pod_removed_by_a_siblings_stop_completes(
    gateway: ClientFactory, flaky: FlakyKube, tmp_path: Path
) -> None:
    client = await gateway(kube_config(write_kubeconfig(tmp_path / "kubeconfig", flaky.url, flaky.token)))
    flaky.add_deployment("shop", "web", 2, annotations=LINKED)
    await flaky.wait_for(
        lambda: [p["status"]["phase"] for p in flaky.items("pods", "shop")] == ["Running", "Running"]
    )
    first, second = sorted(p["metadata"]["name"] for p in flaky.items("pods", "shop"))
    # The batch's check reads the second pod at once; its stop reads it once the first pod's stop
    # has scaled the Deployment to 0 and the pod is gone.
    flaky.late[second] = 1
    resp = await client.post(
        "/api/v1/containers/batch?namespace=shop", json={"action": "stop", "containerIds": [first, second]}
    )
    body = await resp.json()
    assert (body["success"], body["failed"]) == (2, 0), body
    assert flaky.late[second] == 0
    deployment = flaky.get("deployments", "shop", "web")
    assert deployment is not None and deployment["spec"]["replicas"] == 0
    assert deployment["metadata"]["annotations"]["nekzus/stopped-replicas"] == "2"


async def test_a_start_waits_through_overload_and_server_errors(
    gateway: ClientFactory, flaky: FlakyKube, tmp_path: Path
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", flaky.url, flaky.token)
    client = await gateway(kube_config(kubeconfig, ready_timeout=10))
    flaky.add_deployment("shop", "web", 2, annotations=LINKED)
    ws = await connect(client)
    op = await accepted(await client.post("/api/v1/containers/shop/deployment%2Fweb/stop"))
    assert await outcomes(ws, [op]) == {op: "container.stop.completed"}
    op = await accepted(await client.post("/api/v1/containers/shop/deployment%2Fweb/start"))
    flaky.failures += [429, 500, 503, 500]
    assert await outcomes(ws, [op]) == {op: "container.start.completed"}
    assert not flaky.failures
    assert flaky.get("deployments", "shop", "web")["status"]["readyReplicas"] == 2  # type: ignore[index]
