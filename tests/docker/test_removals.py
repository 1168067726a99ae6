"""The tests of removals that need the private Docker Engine (docker tier); the story and the other
tests are in tests/kube_real/test_removals.py, tests/unit/test_removals.py.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from aiohttp.test_utils import TestClient

from tests.docker.test_websocket import connect
from tests.support.docker_engine import Containers
from tests.support.gateway import watching


async def test_a_container_removed_with_the_cli_is_announced_once(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    await watching(client)
    made = await containers.create(labels={"nekzus.http.app.id": "grafana"})
    cid = made["Id"][:12]
    ws = await connect(client)
    await ws.until("hello")
    await containers.docker.containers.container(made["Id"]).delete(force=True)
    removed = await ws.until("container.state", containerId=cid, state="removed")
    assert removed["data"]["previousState"] == "exited"
    assert removed["data"]["name"] == made["Name"].lstrip("/")
    # A later container's event marks the point by which a repeat would have arrived.
    other = await containers.create()
    await ws.until("container.state", containerId=other["Id"][:12], state="running")
    counts = Counter(
        m["data"]["state"]
        for m in ws.seen
        if m["type"] == "container.state" and m["data"]["containerId"] == cid
    )
    assert counts["removed"] == 1
    health = [m["data"] for m in ws.seen if m["type"] == "health_change" and m["data"]["appId"] == "grafana"]
    # "healthy" may come first (the start event can reach the hub after this client connected).
    assert [h["status"] for h in health if h["status"] == "unhealthy"] == ["unhealthy"]
    assert health[-1]["status"] == "unhealthy"
