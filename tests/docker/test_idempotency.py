"""Idempotency-Key on the real Engine: twenty copies of one restart start one operation, a retry
after it ended is replayed, another body is 422, another caller is another key, a gateway restart
keeps the answers, bad keys change nothing; and the same on batch, create, pull and a stack deploy.

Bulk actions (``restart-all`` …) take the same decorator and are tested on a fake runtime
(tests/unit/test_idempotency.py): on the shared Engine they would act on other tests' containers.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiodocker
import pytest
from aiohttp.test_utils import TestClient

from nekzus.keys import EVENT_BUS, OPERATIONS
from tests.docker.test_create_update import Made, made  # noqa: F401
from tests.docker.test_stack_actions import Managed, ended, managed  # noqa: F401
from tests.support.docker_engine import TEST_IMAGE, Containers
from tests.support.gateway import LINKED, ClientFactory, Heard, make_config
from tests.support.registry import LocalRegistry
from tests.support.stacks import compose_file, project_name, service
from tests.unit.test_errors import expect
from tests.unit.test_security import bearer, security_config, token

COPIES = 20


def new_key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def ops(client: TestClient[Any, Any]) -> int:
    return len(client.app[OPERATIONS])


async def finished(heard: Heard, operation_id: str, *, timeout: float = 60) -> str:
    """The type of operation ``operation_id``'s completion or failure event."""
    async with asyncio.timeout(timeout):
        while True:
            event = await heard.get()
            if event.data.get("operationId") == operation_id and event.type.endswith(
                (".completed", ".failed")
            ):
                return event.type


async def started_at(docker: aiodocker.Docker, cid: str) -> str:
    return str((await docker.containers.container(cid).show())["State"]["StartedAt"])


async def test_twenty_copies_of_one_restart_start_one_operation(
    client: TestClient[Any, Any], heard: Heard, containers: Containers, docker: aiodocker.Docker
) -> None:
    cid = (await containers.create(labels=LINKED))["Id"]
    path = f"/api/v1/containers/{cid[:12]}/restart"
    key = new_key()
    before = ops(client)
    answers = await asyncio.gather(
        *(client.post(path, json={"timeout": 1}, headers=key) for _ in range(COPIES))
    )
    originals = [a for a in answers if a.status == 202 and "Idempotent-Replayed" not in a.headers]
    assert len(originals) == 1
    operation_id = (await originals[0].json())["operationId"]
    for answer in answers:
        if answer.status == 409:
            await expect(answer, 409, "IDEMPOTENCY_KEY_IN_USE")
            assert answer.headers["Retry-After"] == "1"
        else:
            assert answer.status == 202, await answer.text()
            assert (await answer.json())["operationId"] == operation_id
    assert ops(client) - before == 1
    assert await finished(heard, operation_id) == "container.restart.completed"
    restarted = await started_at(docker, cid)

    # After it ended: the same answer again, and the container is not restarted again.
    again = await client.post(path, json={"timeout": 1}, headers=key)
    assert again.status == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["operationId"] == operation_id
    assert again.headers["Location"] == f"/api/v1/operations/{operation_id}"
    await expect(await client.post(path, json={"timeout": 2}, headers=key), 422, "IDEMPOTENCY_KEY_REUSED")
    assert ops(client) - before == 1
    assert await started_at(docker, cid) == restarted


async def test_another_caller_with_the_same_key_is_another_request(
    gateway: ClientFactory, docker_host: str, containers: Containers
) -> None:
    client = await gateway(security_config(docker_host))
    cid = (await containers.create(labels=LINKED))["Id"]
    path = f"/api/v1/containers/{cid[:12]}/restart"
    key = new_key()
    before = ops(client)
    alice = await client.post(path, headers={**bearer(token(sub="alice")), **key})
    bob = await client.post(path, headers={**bearer(token(sub="bob")), **key})
    assert alice.status == bob.status == 202
    assert "Idempotent-Replayed" not in bob.headers
    assert (await alice.json())["operationId"] != (await bob.json())["operationId"]
    assert ops(client) - before == 2


async def test_a_gateway_restart_keeps_the_answers(
    gateway: ClientFactory, docker_host: str, containers: Containers, docker: aiodocker.Docker
) -> None:
    config = make_config(docker_host)
    first = await gateway(config)
    cid = (await containers.create(labels=LINKED))["Id"]
    path = f"/api/v1/containers/{cid[:12]}/restart"
    key = new_key()
    heard = Heard(first.app[EVENT_BUS])
    answer = await first.post(path, headers=key)
    assert answer.status == 202
    operation_id = (await answer.json())["operationId"]
    assert await finished(heard, operation_id) == "container.restart.completed"
    heard.close()
    restarted = await started_at(docker, cid)
    await first.close()

    second = await gateway(config)
    restored = ops(second)
    again = await second.post(path, headers=key)
    assert again.status == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["operationId"] == operation_id
    record = await (await second.get(f"/api/v1/operations/{operation_id}")).json()
    assert record["state"] == "completed"
    assert ops(second) == restored
    assert await started_at(docker, cid) == restarted


@pytest.mark.parametrize(
    "headers",
    [
        [("Idempotency-Key", "")],
        [("Idempotency-Key", "k" * 300)],
        [("Idempotency-Key", "schlüssel")],
        [("Idempotency-Key", "one"), ("Idempotency-Key", "one")],
    ],
)
async def test_a_bad_key_is_400_and_changes_nothing(
    client: TestClient[Any, Any],
    containers: Containers,
    docker: aiodocker.Docker,
    headers: list[tuple[str, str]],
) -> None:
    cid = (await containers.create(labels=LINKED))["Id"]
    before = (ops(client), await started_at(docker, cid))
    body = await expect(
        await client.post(f"/api/v1/containers/{cid[:12]}/restart", headers=headers), 400, "INVALID_REQUEST"
    )
    assert "Idempotency-Key" in body["message"]
    assert (ops(client), await started_at(docker, cid)) == before


async def twice(client: TestClient[Any, Any], path: str, body: Any, status: int = 202) -> dict[str, Any]:
    """``body`` sent to ``path`` twice with one key: the second answer is the first, replayed."""
    key = new_key()
    first = await client.post(path, json=body, headers=key)
    assert first.status == status, await first.text()
    again = await client.post(path, json=body, headers=key)
    assert again.status == status and again.headers["Idempotent-Replayed"] == "true"
    answer: dict[str, Any] = await first.json()
    assert await again.json() == answer
    return answer


async def test_a_batch_is_answered_once(client: TestClient[Any, Any], containers: Containers) -> None:
    boxes = await asyncio.gather(*(containers.create(labels=LINKED) for _ in range(2)))
    before = ops(client)
    body = {"action": "restart", "containerIds": [b["Id"][:12] for b in boxes], "timeout": 1}
    answer = await twice(client, "/api/v1/containers/batch", body, 200)
    assert (answer["total"], answer["success"]) == (2, 2)
    assert ops(client) - before == 2


async def test_a_create_is_answered_once(client: TestClient[Any, Any], heard: Heard, made: Made) -> None:  # noqa: F811
    name = made.name()
    before = ops(client)
    answer = await twice(client, "/api/v1/containers", {"name": name, "image": TEST_IMAGE, "start": False})
    assert await finished(heard, answer["operationId"]) == "container.create.completed"
    assert ops(client) - before == 1
    # Without the key, the retry would have been refused: the name is taken.
    await expect(
        await client.post("/api/v1/containers", json={"name": name, "image": TEST_IMAGE}),
        409,
        "CONTAINER_NAME_IN_USE",
    )


async def test_a_pull_is_answered_once(
    client: TestClient[Any, Any],
    heard: Heard,
    registry: LocalRegistry,
    made: Made,  # noqa: F811
) -> None:
    reference = registry.reference(f"nekzus/idem-{uuid.uuid4().hex[:10]}", "1")
    registry.push_changed(reference)
    made.images.append(reference)
    before = ops(client)
    answer = await twice(client, "/api/v1/images/pull", {"image": reference})
    assert await finished(heard, answer["operationId"]) == "image.pull.completed"
    assert ops(client) - before == 1


async def test_a_stack_deploy_is_answered_once(
    client: TestClient[Any, Any],
    heard: Heard,
    managed: Managed,  # noqa: F811
) -> None:
    name = managed.make(compose_file({"web": service()}))
    before = ops(client)
    # Without the key, the retry of a deploy still running would be 409 STACK_BUSY.
    answer = await twice(client, f"/api/v1/stacks/{name}/deploy", {})
    run = await ended(heard, answer["operationId"])
    assert run.end.type == "stack.deploy.completed", run.end.data
    assert ops(client) - before == 1


async def test_a_stack_create_is_answered_once(
    client: TestClient[Any, Any],
    managed: Managed,  # noqa: F811
) -> None:
    name = project_name("nkzi")
    managed.names.append(name)  # its files are deleted afterwards
    answer = await twice(client, "/api/v1/stacks", {"name": name, "compose": compose_file()}, 201)
    assert answer["name"] == name and answer["managed"] is True
    # Without the key, the retry would have been refused: the stack exists.
    await expect(
        await client.post("/api/v1/stacks", json={"name": name, "compose": compose_file()}),
        409,
        "STACK_ALREADY_EXISTS",
    )
