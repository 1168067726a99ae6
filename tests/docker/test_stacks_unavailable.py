"""Where stacks cannot be run: a gateway whose only runtime is Kubernetes has no compose stacks
(409 OPERATION_NOT_SUPPORTED on every stack route), and one with stacks turned off still lists the
Engine's stacks but answers 503 COMPOSE_UNAVAILABLE to whatever needs compose."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import LINKED, ClientFactory, kubernetes_only, make_config
from tests.support.stacks import HandProjects, compose_file, project_name, service
from tests.unit.test_errors import expect

COMPOSE = compose_file({"web": service()})


def routes(name: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [
        ("GET", "/api/v1/stacks", None),
        ("GET", f"/api/v1/stacks/{name}", None),
        ("POST", "/api/v1/stacks", {"name": name, "compose": COMPOSE}),
        ("GET", f"/api/v1/stacks/{name}/logs", None),
        ("POST", f"/api/v1/stacks/{name}/deploy", {}),
        ("POST", f"/api/v1/stacks/{name}/stop", {}),
    ]


async def test_a_kubernetes_gateway_has_no_stacks(
    gateway: ClientFactory, docker_host: str, kubeconfig: Path
) -> None:
    client = await gateway(kubernetes_only(docker_host, kubeconfig))
    for method, path, body in routes(project_name("nkzu")):
        found = await expect(await client.request(method, path, json=body), 409, "OPERATION_NOT_SUPPORTED")
        assert "compose stacks" in found["message"], path


@pytest.fixture
def discovered(docker_host: str, tmp_path: Path) -> Iterator[str]:
    projects = HandProjects(docker_host, tmp_path)
    name = project_name("nkzu")
    try:
        projects.up(name, compose_file({"web": service(labels=LINKED)}))
        yield name
    finally:
        projects.cleanup()


async def test_with_stacks_off_the_engines_stacks_are_listed_but_compose_never_runs(
    gateway: ClientFactory, docker_host: str, discovered: str
) -> None:
    client = await gateway(make_config(docker_host, stacks={"enabled": False}))
    resp = await client.get("/api/v1/stacks")
    assert resp.status == 200
    assert discovered in [s["name"] for s in await resp.json()]
    for method, path, body in [
        ("POST", "/api/v1/stacks", {"name": project_name("nkzu"), "compose": COMPOSE}),
        ("POST", f"/api/v1/stacks/{discovered}/deploy", {}),
        ("POST", f"/api/v1/stacks/{discovered}/pull", {}),
    ]:
        found = await expect(await client.request(method, path, json=body), 503, "COMPOSE_UNAVAILABLE")
        assert "stacks.enabled" in found["message"], path
