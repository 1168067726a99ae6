"""Every stack route attacked the same way on the real Engine: a remote client without a token (also
with forged forwarding headers), a token without the route's scope, a foreign Host, a foreign page,
and bodies nested too deep or too large. Each is refused before compose or the Engine is asked:
afterwards the stack's containers are the same ones, still running, and its files are unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiodocker
import pytest
from aiohttp.test_utils import TestClient

from nekzus.jsoninput import MAX_DEPTH
from tests.support.gateway import JSON, LINKED, ClientFactory, data_dir
from tests.support.stacks import HandProjects, compose_file, project_name, service
from tests.unit.test_errors import expect
from tests.unit.test_security import bearer, security_config, token

EVIL = "https://evil.example"
SCOPES = ("read:containers", "write:containers", "read:engine", "write:engine", "read:stacks", "write:stacks")
ACTIONS = ("deploy", "start", "stop", "restart", "pause", "unpause", "pull", "down")


def routes(name: str, new: str) -> list[tuple[str, str, str, dict[str, Any] | None]]:
    """(method, path, scope, a body the route would take) of every stack route."""
    compose = compose_file({"web": service()})
    return [
        ("GET", "/api/v1/stacks", "read:stacks", None),
        ("POST", "/api/v1/stacks", "write:stacks", {"name": new, "compose": compose}),
        ("GET", f"/api/v1/stacks/{name}", "read:stacks", None),
        ("PUT", f"/api/v1/stacks/{name}", "write:stacks", {"compose": compose}),
        ("DELETE", f"/api/v1/stacks/{name}?down=true", "write:stacks", None),
        ("GET", f"/api/v1/stacks/{name}/compose", "read:stacks", None),
        ("GET", f"/api/v1/stacks/{name}/logs?search=line", "read:stacks", None),
        *(("POST", f"/api/v1/stacks/{name}/{action}", "write:stacks", {}) for action in ACTIONS),
    ]


class Target:
    """A managed stack, running, whose files and containers no refused request may change."""

    def __init__(self, projects: HandProjects, name: str) -> None:
        self.name = name
        self.directory = projects.up(name, compose_file({"web": service(labels=LINKED)}))
        self.files = self._files()

    def _files(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.directory.iterdir())}

    async def unchanged(self, docker: aiodocker.Docker, ids: list[str], new: str) -> None:
        assert self._files() == self.files
        for cid in ids:
            doc = await docker.containers.container(cid).show()
            assert doc["State"]["Running"] and not doc["State"]["Paused"]
        assert not (self.directory.parent / new).exists()


@pytest.fixture
def target(docker_host: str) -> Iterator[Target]:
    # Started by hand in the managed stacks' folder: the gateway takes it for one of its own.
    projects = HandProjects(docker_host, data_dir() / "stacks")
    try:
        yield Target(projects, project_name("nkzg"))
    finally:
        projects.cleanup()


async def _ids(docker: aiodocker.Docker, name: str) -> list[str]:
    found = await docker.containers.list(filters={"label": [f"com.docker.compose.project={name}"]})
    assert found
    return [c.id for c in found]


async def test_remote_clients_need_a_token_with_the_routes_scope(
    gateway: ClientFactory, docker_host: str, docker: aiodocker.Docker, target: Target
) -> None:
    ids = await _ids(docker, target.name)
    new = project_name("nkzg")
    remote = await gateway(security_config(docker_host))
    for method, path, scope, body in routes(target.name, new):
        for forged in ({}, {"X-Forwarded-For": "127.0.0.1"}, {"Forwarded": "for=127.0.0.1"}):
            resp = await remote.request(method, path, json=body, headers=forged)
            await expect(resp, 401, "UNAUTHORIZED")
        others = bearer(token(scopes=[s for s in SCOPES if s != scope]))
        found = await expect(await remote.request(method, path, json=body, headers=others), 403, "FORBIDDEN")
        assert scope in found["message"], (method, path)
    await target.unchanged(docker, ids, new)


async def test_foreign_hosts_pages_and_bodies_are_refused(
    client: TestClient[Any, Any], docker: aiodocker.Docker, target: Target
) -> None:
    ids = await _ids(docker, target.name)
    new = project_name("nkzg")
    deep = b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)
    huge = b'{"compose": "' + b"a" * (2 << 20) + b'"}'
    for method, path, _, body in routes(target.name, new):
        resp = await client.request(method, path, json=body, headers={"Host": "evil.example"})
        await expect(resp, 421, "HOST_NOT_ALLOWED")
        if method != "GET" or "/logs" in path or "/compose" in path:
            for foreign in ({"Origin": EVIL}, {"Sec-Fetch-Site": "cross-site"}):
                resp = await client.request(method, path, json=body, headers=foreign)
                await expect(resp, 403, "ORIGIN_NOT_ALLOWED")
        if method in ("POST", "PUT"):
            resp = await client.request(method, path, data=deep, headers=JSON)
            await expect(resp, 400, "INVALID_REQUEST")
            resp = await client.request(method, path, data=huge, headers=JSON)
            await expect(resp, 413, "PAYLOAD_TOO_LARGE")
    await target.unchanged(docker, ids, new)
