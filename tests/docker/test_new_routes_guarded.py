"""Every route issue 13 added, attacked the same way on the real Engine: a remote client without a
token (also with forged forwarding headers), a token without the route's scope, a foreign Host, a
foreign page, and bodies nested too deep or too large. Each is refused before anything reaches the
Engine, which the test checks afterwards."""

from __future__ import annotations

import uuid
from typing import Any

import aiodocker
import pytest
from aiohttp.test_utils import TestClient

from nekzus.jsoninput import MAX_DEPTH
from tests.support.docker_engine import Containers
from tests.support.gateway import JSON, LINKED, ClientFactory
from tests.unit.test_errors import expect
from tests.unit.test_security import bearer, security_config, token

EVIL = "https://evil.example"
SCOPES = ("read:containers", "write:containers", "read:engine", "write:engine")
NAME = f"nekzus-guard-{uuid.uuid4().hex[:8]}"


def routes(cid: str) -> list[tuple[str, str, str, dict[str, Any] | None]]:
    """(method, path, scope, a body the route would take) of every new route."""
    return [
        ("GET", "/api/v1/images", "read:engine", None),
        ("POST", "/api/v1/images/pull", "write:engine", {"image": f"{NAME}:1"}),
        ("DELETE", f"/api/v1/images/{NAME}:1", "write:engine", None),
        ("POST", "/api/v1/images/prune", "write:engine", {}),
        ("GET", "/api/v1/volumes", "read:engine", None),
        ("POST", "/api/v1/volumes", "write:engine", {"name": NAME}),
        ("DELETE", f"/api/v1/volumes/{NAME}", "write:engine", None),
        ("POST", "/api/v1/volumes/prune", "write:engine", {}),
        ("GET", "/api/v1/networks", "read:engine", None),
        ("POST", "/api/v1/networks", "write:engine", {"name": NAME, "internal": True}),
        ("DELETE", f"/api/v1/networks/{NAME}", "write:engine", None),
        ("POST", f"/api/v1/networks/{NAME}/connect", "write:engine", {"container": cid}),
        ("POST", f"/api/v1/networks/{NAME}/disconnect", "write:engine", {"container": cid}),
        ("POST", "/api/v1/networks/prune", "write:engine", {}),
        ("GET", "/api/v1/system", "read:engine", None),
        ("GET", "/api/v1/system/stats", "read:engine", None),
        ("POST", "/api/v1/containers", "write:containers", {"name": NAME, "image": "nekzus-test:busybox"}),
        ("POST", f"/api/v1/containers/{cid}/update", "write:containers", {}),
        ("POST", f"/api/v1/containers/{cid}/pause", "write:containers", {}),
        ("POST", f"/api/v1/containers/{cid}/unpause", "write:containers", {}),
        ("POST", "/api/v1/containers/pause-all", "write:containers", {}),
        ("POST", "/api/v1/containers/unpause-all", "write:containers", {}),
        ("DELETE", f"/api/v1/containers/{cid}?force=true", "write:containers", None),
        ("GET", f"/api/v1/containers/{cid}/logs?search=x", "read:containers", None),
    ]


@pytest.fixture
async def target(containers: Containers) -> str:
    """A running, linked container the container routes name (none of them may touch it)."""
    return str((await containers.create(labels=LINKED))["Id"])


async def unchanged(docker: aiodocker.Docker, cid: str) -> None:
    doc = await docker.containers.container(cid).show()
    assert doc["State"]["Running"] and not doc["State"]["Paused"]
    assert not [c for c in await docker.containers.list(all=True) if NAME in c["Names"][0]]
    volumes = await docker.volumes.list()  # type: ignore[no-untyped-call]
    assert NAME not in {v["Name"] for v in volumes["Volumes"] or []}
    assert NAME not in {n["Name"] for n in await docker.networks.list()}


async def test_remote_clients_need_a_token_with_the_routes_scope(
    gateway: ClientFactory, docker_host: str, docker: aiodocker.Docker, target: str
) -> None:
    remote = await gateway(security_config(docker_host))
    for method, path, scope, body in routes(target[:12]):
        for forged in ({}, {"X-Forwarded-For": "127.0.0.1"}, {"Forwarded": "for=127.0.0.1"}):
            resp = await remote.request(method, path, json=body, headers=forged)
            await expect(resp, 401, "UNAUTHORIZED")
        others = bearer(token(scopes=[s for s in SCOPES if s != scope]))
        found = await expect(await remote.request(method, path, json=body, headers=others), 403, "FORBIDDEN")
        assert scope in found["message"], (method, path)
    await unchanged(docker, target)


async def test_foreign_hosts_pages_and_bodies_are_refused(
    client: TestClient[Any, Any], docker: aiodocker.Docker, target: str
) -> None:
    deep = b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)
    huge = b'{"name": "' + b"a" * (2 << 20) + b'"}'
    for method, path, _, body in routes(target[:12]):
        resp = await client.request(method, path, json=body, headers={"Host": "evil.example"})
        await expect(resp, 421, "HOST_NOT_ALLOWED")
        if method != "GET" or "/logs" in path:
            for foreign in ({"Origin": EVIL}, {"Sec-Fetch-Site": "cross-site"}):
                resp = await client.request(method, path, json=body, headers=foreign)
                await expect(resp, 403, "ORIGIN_NOT_ALLOWED")
        if method == "POST":
            resp = await client.request(method, path, data=deep, headers=JSON)
            await expect(resp, 400, "INVALID_REQUEST")
            resp = await client.request(method, path, data=huge, headers=JSON)
            await expect(resp, 413, "PAYLOAD_TOO_LARGE")
    await unchanged(docker, target)
