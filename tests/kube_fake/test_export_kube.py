"""Export of pods through the gateway against the fake apiserver: the names the Kubernetes runtime
gives a pod's export (its files, its services), and a stopped workload exported from its template."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient

from tests.kube_fake.test_kube_fast import NS, kube_config, pods_of
from tests.support.fake_kube import FakeKube
from tests.support.fake_kube_fixtures import write_kubeconfig
from tests.support.gateway import ClientFactory

TWO_CONTAINERS = [{"name": "app", "image": "shop/api:2"}, {"name": "proxy", "image": "envoy:1"}]


@pytest.fixture
async def kube() -> AsyncIterator[FakeKube]:
    async with FakeKube(ready_delay=0.02, delete_delay=0.02, seed=7) as fake:
        yield fake


@pytest.fixture
async def kclient(gateway: ClientFactory, kube: FakeKube, tmp_path: Path) -> TestClient[Any, Any]:
    return await gateway(kube_config(write_kubeconfig(tmp_path / "kubeconfig", kube.url, kube.token)))


async def test_a_pod_of_two_containers_is_exported_under_the_pod_name(
    kclient: TestClient[Any, Any], kube: FakeKube
) -> None:
    kube.add_deployment(NS, "api", 1, containers=TWO_CONTAINERS)
    pod = pods_of(kube, "api")[0]["metadata"]["name"]
    resp = await kclient.post(f"/api/v1/containers/{pod}/export/preview?namespace={NS}")
    assert resp.status == 200, await resp.text()
    result = await resp.json()
    assert (result["filename"], result["env_filename"]) == (f"{pod}-compose.yaml", f"{pod}.env")
    services = yaml.safe_load(result["content"])["services"]
    assert list(services) == [f"{pod}-app", f"{pod}-proxy"]
    assert [s["image"] for s in services.values()] == ["shop/api:2", "envoy:1"]

    resp = await kclient.post(f"/api/v1/containers/{pod}/export?namespace={NS}&format=zip")
    assert resp.status == 200
    assert resp.headers["Content-Disposition"] == f'attachment; filename="{pod}.zip"'


async def test_a_stopped_workload_is_exported_under_its_name_from_its_template(
    kclient: TestClient[Any, Any], kube: FakeKube
) -> None:
    kube.add_deployment(NS, "api", 0, containers=TWO_CONTAINERS)
    resp = await kclient.post(f"/api/v1/containers/deployment%2Fapi/export/preview?namespace={NS}")
    assert resp.status == 200, await resp.text()
    result = await resp.json()
    assert result["filename"] == "api-compose.yaml"
    assert list(yaml.safe_load(result["content"])["services"]) == ["api-app", "api-proxy"]
