"""The tests of export that need no daemon (unit tier); the story and the other tests are in
tests/docker/test_export.py.
"""

from __future__ import annotations

from runtimes import OperationFailed, Unavailable
from tests.support.fakes import FakeRuntime, registry_of, summary
from tests.support.gateway import ClientFactory, make_config
from tests.unit.test_errors import expect


async def test_export_failures_from_the_runtime(gateway: ClientFactory, docker_host: str) -> None:
    fake = FakeRuntime([summary(1), summary(2)])
    registry = registry_of(fake)
    client = await gateway(make_config(docker_host), runtimes=registry)
    cid = summary(1).id
    fake.export_kind = "lxc"  # a runtime the exporter has no compose form for
    await expect(await client.post(f"/api/v1/containers/{cid}/export"), 500, "EXPORT_FAILED")
    await expect(
        await client.post("/api/v1/containers/batch/export", json={"container_ids": [cid]}),
        500,
        "BATCH_EXPORT_FAILED",
    )
    fake.export_kind = "docker"
    fake.fail["export"] = OperationFailed("daemon says no")
    body = await expect(await client.post(f"/api/v1/containers/{cid}/export"), 500, "EXPORT_FAILED")
    assert "daemon" not in body["message"]
    fake.fail["export"] = Unavailable("gone")
    await expect(await client.post(f"/api/v1/containers/{cid}/export"), 503, "RUNTIME_UNAVAILABLE")
    await expect(
        await client.post("/api/v1/containers/batch/export", json={"container_ids": [cid]}),
        503,
        "RUNTIME_UNAVAILABLE",
    )
