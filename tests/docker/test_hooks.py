"""Deploy hooks on the private Docker Engine: each action a hook can take (stack deploy,
pull-and-deploy, restart; container restart, update) runs as the REST action's own operation, a
busy stack is 409 and a gone target its own 404. The command, the store and the route's refusals
without a daemon are tests/unit/test_hooks.py."""

from __future__ import annotations

from typing import Any

import aiodocker
import pytest
from aiohttp.test_utils import TestClient

from nekzus.config import Config
from tests.docker.test_create_update import (
    Events,
    Made,
    create_from,
    finished,
    made,  # noqa: F401 - a fixture
    pushed,
)
from tests.docker.test_stack_actions import (
    Managed,
    ended,
    managed,  # noqa: F401 - a fixture
    started_at,
    states,
)
from tests.support.gateway import Heard, watching
from tests.support.registry import LocalRegistry
from tests.support.stacks import compose_file, project_name, service
from tests.unit.test_errors import expect
from tests.unit.test_hooks import (
    Hooks,
    hooks,  # noqa: F401 - a fixture
)

pytestmark = pytest.mark.timeout(300)
PREFIX = "nkzh"


@pytest.fixture
def config(docker_host: str, hooks: Hooks) -> Config:  # noqa: F811 - the hooks fixture
    """The gateway on the data directory the test's ``nekzus hook`` commands use."""
    return hooks.config(docker_host)


async def call(client: TestClient[Any, Any], tok: str) -> dict[str, Any]:
    """A hook's 202, which is the REST action's: the body and the Location of its operation."""
    resp = await client.post(f"/api/v1/hooks/{tok}")
    assert resp.status == 202, await resp.text()
    body: dict[str, Any] = await resp.json()
    assert body["status"] == "accepted"
    assert resp.headers["Location"] == f"/api/v1/operations/{body['operationId']}"
    return body


async def test_stack_hooks_deploy_restart_and_pull_and_deploy_as_the_rest_actions_do(
    client: TestClient[Any, Any],
    heard: Heard,
    hooks: Hooks,  # noqa: F811 - the fixture
    managed: Managed,  # noqa: F811 - the fixture
    registry: LocalRegistry,
    docker: aiodocker.Docker,
) -> None:
    name = project_name(PREFIX)
    image = registry.reference(f"nkzh/{name}", "1")
    registry.push_changed(image)
    pulled: list[str] = []
    try:
        managed.make(compose_file({"web": service(image=image), "worker": service(image=image)}), name)
        _, deploy = hooks.create("--stack", name, "--action", "deploy")
        _, restart = hooks.create("--stack", name, "--action", "restart")
        _, pull = hooks.create("--stack", name, "--action", "pull-and-deploy")

        body = await call(client, deploy)
        assert (body["stack"], body["action"], body["message"]) == (name, "deploy", "Stack deploy initiated")
        # The stack is claimed before the 202: a second hook meanwhile is the REST action's 409.
        busy = await expect(await client.post(f"/api/v1/hooks/{restart}"), 409, "STACK_BUSY")
        assert busy["busy"] == "deploy"
        run = await ended(heard, body["operationId"])
        assert run.end.type == "stack.deploy.completed", run.end.data
        assert await states(docker, name) == {"web": "running", "worker": "running"}
        before = await docker.images.inspect(image)
        pulled.append(before["Id"])

        body = await call(client, restart)
        assert body["action"] == "restart"
        first = await started_at(docker, name)
        run = await ended(heard, body["operationId"])
        assert run.end.type == "stack.restart.completed", run.end.data
        assert all(first[s] != after for s, after in (await started_at(docker, name)).items())

        # A new image under the same tag: pull-and-deploy is one deploy operation that pulls it.
        registry.push_changed(image)
        body = await call(client, pull)
        assert body["action"] == "deploy"
        run = await ended(heard, body["operationId"])
        assert run.end.type == "stack.deploy.completed", run.end.data
        assert any(e.data["status"] == "pulled" for e in run.progress), [e.data for e in run.progress]
        after = await docker.images.inspect(image)
        assert after["Id"] != before["Id"]
        found = await docker.containers.list(filters={"label": [f"com.docker.compose.project={name}"]})
        assert {c["ImageID"] for c in found} == {after["Id"]}
    finally:
        # Down first: the Engine keeps an image that a container uses.
        managed.projects.compose(name, "down", "--timeout", "0", check=False)
        registry.remove_local(image, *pulled)


async def test_container_hooks_restart_and_update_the_container_they_name(
    client: TestClient[Any, Any],
    heard: Heard,
    hooks: Hooks,  # noqa: F811 - the fixture
    made: Made,  # noqa: F811 - the fixture
    registry: LocalRegistry,
    docker: aiodocker.Docker,
) -> None:
    await watching(client)
    events = Events(heard)
    reference = pushed(registry, made)
    old = await create_from(client, events, made, reference)
    name = old["Name"].lstrip("/")
    _, restart = hooks.create("--container", name, "--action", "restart")
    _, update = hooks.create("--container", name, "--action", "update")

    body = await call(client, restart)
    assert (body["containerId"], body["message"]) == (old["Id"][:12], "Container restart initiated")
    done, _ = await finished(events, body["operationId"])
    assert done.type == "container.restart.completed", done.data
    assert (await made.inspect(name))["State"]["StartedAt"] != old["State"]["StartedAt"]

    registry.push_changed(reference)
    body = await call(client, update)
    assert (body["containerId"], body["message"]) == (old["Id"][:12], "Container update initiated")
    done, _ = await finished(events, body["operationId"])
    assert done.type == "container.update.completed", done.data
    assert done.data["updated"] is True and done.data["previousContainerId"] == old["Id"][:12]
    new = await made.inspect(name)
    made.images.append(new["Image"])
    assert new["Id"] != old["Id"] and new["State"]["Running"]

    # Named by its name, the hook follows the container across the recreate.
    body = await call(client, update)
    assert body["containerId"] == new["Id"][:12]
    done, _ = await finished(events, body["operationId"])
    assert done.type == "container.update.completed" and done.data["updated"] is False

    await docker.containers.container(new["Id"]).delete(force=True)
    await expect(await client.post(f"/api/v1/hooks/{restart}"), 404, "CONTAINER_NOT_FOUND")
    await expect(await client.post(f"/api/v1/hooks/{update}"), 404, "CONTAINER_NOT_FOUND")


async def test_a_hook_of_a_stack_that_is_gone_is_the_stacks_own_404(
    client: TestClient[Any, Any],
    hooks: Hooks,  # noqa: F811 - the fixture
) -> None:
    _, tok = hooks.create("--stack", project_name(PREFIX), "--action", "deploy")
    await expect(await client.post(f"/api/v1/hooks/{tok}"), 404, "STACK_NOT_FOUND")
