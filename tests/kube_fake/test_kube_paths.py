"""The tests of kube paths that need the fake apiserver (kube_fake tier); the story and the other tests
are in tests/kube_real/test_kube_paths.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nekzus.realtime import logstream
from tests.kube_fake.test_kube_fast import NS, WEB, kube_config
from tests.kube_real.test_kube_real import (
    connect,
)
from tests.support.fake_kube import FakeKube
from tests.support.fake_kube_fixtures import write_kubeconfig
from tests.support.gateway import ClientFactory


async def test_a_log_follow_ends_when_the_apiserver_stays_away(
    gateway: ClientFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On the fake apiserver: the real limit is minutes, which a test does not wait for.
    monkeypatch.setattr(logstream, "OUTAGE_LIMIT", 1.0)
    async with FakeKube(ready_delay=0.02, delete_delay=0.02, seed=5) as kube:
        kube.add_pod(NS, "web", containers=WEB)
        client = await gateway(kube_config(write_kubeconfig(tmp_path / "kubeconfig", kube.url, kube.token)))
        kube.append_log(NS, "web", "app", "before")
        ws = await connect(client)
        await ws.send("container.logs.subscribe", containerId="web", namespace=NS, tail=1)
        assert (await ws.until("container.logs", containerId="web"))["data"]["message"] == "before"
        await kube.stop_serving()
        error = await ws.until("container.logs.error", containerId="web")
        assert error["data"]["error"] == "RUNTIME_UNAVAILABLE"
        assert "did not answer for 1 s, so the log stream ends" in error["data"]["message"]
        ended = await ws.until("container.logs.ended", containerId="web")
        assert ended["data"]["reason"] == "error"
        assert not any(m["type"] == "container.logs.resumed" for m in ws.seen)
