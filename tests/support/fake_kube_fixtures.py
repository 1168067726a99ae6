"""The fake kube-apiserver as fixtures: one per test, and a kubeconfig that points the gateway at it.

Shared by the tiers that use the fake (kube_fake, and docker for the test of both runtimes at once),
whose conftest files import the fixtures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from tests.support.fake_kube import FakeKube
from tests.support.gateway import ClientFactory


def write_kubeconfig(path: Path, server: str, token: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": server}}],
                "users": [{"name": "gateway", "user": {"token": token}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "gateway"}}],
                "current-context": "fake",
            }
        )
    )
    return path


@pytest.fixture
async def kube(gateway: ClientFactory) -> AsyncIterator[FakeKube]:
    # After the gateway fixture: the fake is closed (its tasks with it) before the gateway's
    # teardown checks that no task is left.
    fake = FakeKube(ready_delay=0.02, delete_delay=0.02, seed=7)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


@pytest.fixture
def kubeconfig(kube: FakeKube, tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", kube.url, kube.token)
