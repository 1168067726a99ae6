"""GET .../logs for pods, through the fake apiserver: the path and query forms, one container of a
pod, search, and ``until``, which the Kubernetes API lacks and the backend applies to the line
time stamps it asks for (removing them again when the client did not want them)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.kube_fake.test_kube_fast import LINKED, NS, WEB, accepted, connect, kube_config, pods_of
from tests.support.fake_kube import FakeKube
from tests.support.gateway import ClientFactory
from tests.unit.test_errors import expect


@pytest.fixture
async def kclient(gateway: ClientFactory, kubeconfig: Path) -> TestClient[Any, Any]:
    return await gateway(kube_config(kubeconfig))


def texts(body: dict[str, Any], key: str = "lines") -> list[str]:
    return [line["line"] for line in body[key]]


async def test_pod_logs_as_json_search_and_download(kclient: TestClient[Any, Any], kube: FakeKube) -> None:
    kube.add_pod(NS, "web", containers=[*WEB, {"name": "sidecar", "image": "busybox:1"}])
    kube.append_log(
        NS, "web", "app", "\n".join(f"line {i}{' TERM' if i % 10 == 0 else ''}" for i in range(1, 101))
    )
    kube.append_log(NS, "web", "sidecar", "side 0\nside 1")

    body = await (await kclient.get(f"/api/v1/containers/{NS}/web/logs?tail=3")).json()
    assert body == {
        "containerId": "web",
        "lines": [
            {"stream": "stdout", "line": "line 98"},
            {"stream": "stdout", "line": "line 99"},
            {"stream": "stdout", "line": "line 100 TERM"},
        ],
        "truncated": False,
    }
    # The query form, another container of the pod, and time stamps.
    resp = await kclient.get(f"/api/v1/containers/web/logs?namespace={NS}&container=sidecar&timestamps=true")
    body = await resp.json()
    assert texts(body) == ["side 0", "side 1"]
    assert all(abs(line["timestamp"] - time.time()) < 120 for line in body["lines"])
    bounded = await (await kclient.get(f"/api/v1/containers/{NS}/web/logs?limit=10")).json()
    assert len(bounded["lines"]) == 10 and bounded["truncated"] is True

    found = await (await kclient.get(f"/api/v1/containers/{NS}/web/logs?search=term")).json()
    assert [m["lineNumber"] for m in found["matches"]] == list(range(10, 101, 10))
    assert found["scanned"] == 100 and found["truncated"] is False
    regex = await (await kclient.get(f"/api/v1/containers/{NS}/web/logs?search=^line 5.$&regex=true")).json()
    # "line 5" and "line 50 TERM" do not end one character after the 5.
    assert texts(regex, "matches") == [f"line 5{i}" for i in range(1, 10)]

    resp = await kclient.get(f"/api/v1/containers/{NS}/web/logs?container=sidecar&download=1")
    assert resp.headers["Content-Disposition"] == 'attachment; filename="web-logs.txt"'
    assert await resp.text() == "side 0\nside 1\n"

    # Kubernetes does not tell the streams apart: every line of a pod is stdout.
    assert (await (await kclient.get(f"/api/v1/containers/{NS}/web/logs?stream=stderr")).json())[
        "lines"
    ] == []


async def test_until_is_applied_to_the_line_stamps(kclient: TestClient[Any, Any], kube: FakeKube) -> None:
    kube.add_pod(NS, "web", containers=WEB)
    now = int(time.time())
    kube.append_log(NS, "web", "app", "old 1\nold 2", at=now - 100)
    kube.append_log(NS, "web", "app", "middle", at=now - 50)
    kube.append_log(NS, "web", "app", "new 1\nnew 2")
    path = f"/api/v1/containers/{NS}/web/logs"
    assert texts(await (await kclient.get(f"{path}?until={now - 60}")).json()) == ["old 1", "old 2"]
    assert texts(await (await kclient.get(f"{path}?since={now - 60}&until={now - 10}")).json()) == ["middle"]
    stamped = await (await kclient.get(f"{path}?until={now - 50}&timestamps=true")).json()
    assert [(line["line"], line["timestamp"]) for line in stamped["lines"]] == [
        ("old 1", now - 100),
        ("old 2", now - 100),
        ("middle", now - 50),
    ]
    resp = await kclient.get(f"{path}?until={now - 60}&download=1")
    assert await resp.text() == "old 1\nold 2\n"
    found = await (await kclient.get(f"{path}?until={now - 60}&search=2")).json()
    assert texts(found, "matches") == ["old 2"] and found["scanned"] == 2


async def test_pod_log_errors(kclient: TestClient[Any, Any], kube: FakeKube) -> None:
    kube.add_deployment(NS, "web", 1, annotations=LINKED, containers=WEB)
    pod = pods_of(kube, "web")[0]["metadata"]["name"]
    await expect(await kclient.get(f"/api/v1/containers/{NS}/nope/logs"), 404, "CONTAINER_NOT_FOUND")
    await expect(
        await kclient.get(f"/api/v1/containers/{NS}/{pod}/logs?container=ghost"), 404, "CONTAINER_NOT_FOUND"
    )
    for query in ("container=../x", "namespace=../x", "tail=-1", "search=(a)%5C1&regex=true"):
        await expect(await kclient.get(f"/api/v1/containers/{pod}/logs?{query}"), 400, "INVALID_REQUEST")
    kube.forbid("get", "pods/log")
    await expect(await kclient.get(f"/api/v1/containers/{NS}/{pod}/logs"), 403, "FORBIDDEN")

    # A workload scaled to 0 has no pod whose log could be read.
    ws = await connect(kclient)
    op = await accepted(await kclient.post(f"/api/v1/containers/{NS}/deployment%2Fweb/stop"))
    await ws.until("container.stop.completed", operationId=op)
    body = await expect(
        await kclient.get(f"/api/v1/containers/{NS}/deployment%2Fweb/logs"), 409, "CONTAINER_NOT_RUNNING"
    )
    assert body["message"] == "deployment/web is not running: it is stopped"
