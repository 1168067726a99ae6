"""The tests of bodies that need the private Docker Engine (docker tier); the story and the other tests
are in tests/unit/test_bodies.py.
"""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from nekzus.keys import EVENT_BUS
from tests.support.docker_engine import Containers
from tests.support.gateway import LINKED, Heard, next_event

IGNORES_TERM = ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"]


async def test_a_stop_honours_the_body_timeout_on_a_real_container(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    # The container ignores SIGTERM, so the stop lasts exactly the grace period it was given.
    made = await containers.create(labels=LINKED, cmd=IGNORES_TERM)
    sub = Heard(client.app[EVENT_BUS])
    resp = await client.post(f"/api/v1/containers/{made['Id'][:12]}/stop", json={"timeout": 1})
    assert resp.status == 202 and (await resp.json())["timeout"] == 1
    event = await next_event(sub, "container.stop.", timeout=8)  # the default grace period is 10 s
    assert event.type == "container.stop.completed"
    assert await containers.state(made["Id"]) == "exited"
