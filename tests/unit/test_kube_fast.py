"""The tests of kube fast that need no daemon (unit tier); the story and the other tests are in
tests/docker/test_kube_fast.py, tests/kube_fake/test_kube_fast.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.kube_fake.test_kube_fast import kube_config
from tests.support.gateway import ClientFactory
from tests.unit.test_errors import expect


def test_namespace_names_are_checked_in_the_config(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not a Kubernetes namespace name"):
        kube_config(tmp_path / "kubeconfig", namespaces=["Bad_NS"])


async def test_an_unreadable_kubeconfig_is_503_not_a_crash(gateway: ClientFactory, tmp_path: Path) -> None:
    client = await gateway(kube_config(tmp_path / "missing-kubeconfig"))
    await expect(await client.get("/api/v1/containers"), 503, "RUNTIME_UNAVAILABLE")
    resp = await client.get("/healthz")
    assert resp.status == 200
