"""GET .../logs of a pod on a real control plane: the log comes through the apiserver's own log
proxy, and a search reads all of it (tests/kube_fake/test_logs_kube.py covers the rest)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.kube_real.test_kube_real import _state, create_pod, eventually
from tests.support.kube_plane import ControlPlane


async def test_search_a_pods_whole_log(
    kclient: TestClient[Any, Any], kube_plane: ControlPlane, kube_namespace: str
) -> None:
    ns = kube_namespace
    await create_pod(kube_plane, ns, "searched", {"LOG_LINES": "5000"})
    await eventually(lambda: _state(kclient, ns, "searched", "running"), what="the pod to run")
    path = f"/api/v1/containers/{ns}/searched/logs"

    resp = await kclient.get(path, params={"search": "^line [0-9]*00$", "regex": "true"})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert [m["line"] for m in body["matches"]] == [f"line {i}" for i in range(100, 5001, 100)]
    assert [m["lineNumber"] for m in body["matches"]] == list(range(100, 5001, 100))
    assert body["scanned"] == 5000 and body["truncated"] is False

    capped = await (await kclient.get(path, params={"search": "LINE 4", "limit": "3"})).json()
    assert [m["line"] for m in capped["matches"]] == ["line 4", "line 40", "line 41"]
    assert capped["truncated"] is True

    last = await (await kclient.get(path, params={"tail": "2", "timestamps": "true"})).json()
    assert [line["line"] for line in last["lines"]] == ["line 4999", "line 5000"]
    assert all(isinstance(line["timestamp"], int) for line in last["lines"])
