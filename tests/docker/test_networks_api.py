"""Networks over REST against a real Engine: list (filters, pages), create, remove, connect,
disconnect, prune.

A bridge network makes the Engine create a Linux bridge, so every test here runs the gateway on the
module's private Engine inside a network namespace of its own (``netns_docker_host``), never on the
shared one: the bridges and veth pairs stay in that namespace, and its teardown fails if one
showed up in the machine's. Networks are internal and named with the run's prefix; each test
removes what it made.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiodocker
import pytest
from aiodocker.networks import DockerNetwork
from aiohttp.test_utils import TestClient

from tests.support.docker_engine import QUICK_STOP, RUN_LABEL, TEST_IMAGE
from tests.support.fake_kube import FakeKube
from tests.support.gateway import JSON, ClientFactory, kubernetes_only, make_config
from tests.unit.test_errors import expect
from tests.unit.test_security import bearer, security_config, token

PREFIX = f"nkzt-{uuid.uuid4().hex[:8]}-"
EVIL = "https://evil.example"


class Engine:
    """The private Engine as one test sees it: the networks and containers it made there, all
    removed afterwards (containers first, so that their networks can go)."""

    def __init__(self, docker: aiodocker.Docker) -> None:
        self.docker = docker
        self.networks: list[str] = []
        self.containers: list[str] = []

    def name(self, suffix: str) -> str:
        made = PREFIX + suffix
        self.networks.append(made)
        return made

    async def all(self) -> set[str]:
        return {n["Name"] for n in await self.docker.networks.list()}

    async def ours(self) -> set[str]:
        return {name for name in await self.all() if name in self.networks}

    async def container(self, network: str, *, start: bool = True) -> dict[str, Any]:
        """A test container whose network is ``network`` (``none`` included)."""
        config: dict[str, Any] = {
            "Image": TEST_IMAGE,
            "Cmd": QUICK_STOP,
            "Labels": {RUN_LABEL: PREFIX},
            "StopTimeout": 1,
            "HostConfig": {"NetworkMode": network},
        }
        made = await self.docker.containers.create(config, name=f"{PREFIX}c{len(self.containers)}")
        self.containers.append(made.id)
        if start:
            await made.start()
        return dict(await made.show())

    async def cleanup(self) -> None:
        for container in self.containers:
            try:
                await self.docker.containers.container(container).delete(force=True)
            except aiodocker.DockerError as exc:
                if exc.status != 404:
                    raise
        for name in self.networks:
            try:
                await DockerNetwork(self.docker, name).delete()  # type: ignore[no-untyped-call]
            except aiodocker.DockerError as exc:
                if exc.status != 404:
                    raise


@pytest.fixture
async def engine(netns_docker_host: str) -> AsyncIterator[Engine]:
    docker = aiodocker.Docker(url=netns_docker_host)
    made = Engine(docker)
    try:
        yield made
    finally:
        await made.cleanup()
        await docker.close()


@pytest.fixture
async def client(gateway: ClientFactory, netns_docker_host: str) -> TestClient[Any, Any]:
    return await gateway(make_config(netns_docker_host))


async def create(client: TestClient[Any, Any], **body: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/networks", json={"internal": True, **body})
    assert resp.status == 201, await resp.text()
    created: dict[str, Any] = await resp.json()
    return created


async def test_create_connect_disconnect_and_remove(client: TestClient[Any, Any], engine: Engine) -> None:
    front, back = engine.name("front"), engine.name("back")
    made = await create(
        client,
        name=front,
        labels={"tier": "web"},
        subnets=[{"subnet": "10.231.0.0/24", "gateway": "10.231.0.1"}],
    )
    assert made["name"] == front and made["driver"] == "bridge" and made["scope"] == "local"
    assert made["internal"] is True and made["attachable"] is False and made["labels"] == {"tier": "web"}
    assert made["subnets"] == [{"subnet": "10.231.0.0/24", "gateway": "10.231.0.1"}]
    assert made["containers"] == [] and made["created"] > 0 and len(made["id"]) == 12
    await create(client, name=back, attachable=True, subnets=[{"subnet": "10.232.0.0/24"}])
    container = await engine.container(front)
    cid, cname = container["Id"][:12], container["Name"].lstrip("/")

    [row] = await (await client.get(f"/api/v1/networks?name={front}")).json()
    [attached] = row["containers"]
    assert (attached["id"], attached["name"]) == (cid, cname)
    assert attached["ipv4"].startswith("10.231.0.")

    resp = await client.post(
        f"/api/v1/networks/{back}/connect",
        json={"container": cname, "aliases": ["db"], "ipv4": "10.232.0.50"},
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["containers"] == [{"id": cid, "name": cname, "ipv4": "10.232.0.50"}]
    inspected = await engine.docker.containers.container(cid).show()
    assert "db" in inspected["NetworkSettings"]["Networks"][back]["Aliases"]
    resp = await client.post(f"/api/v1/networks/{back}/connect", json={"container": cid})
    body = await expect(resp, 409, "CONTAINER_ALREADY_CONNECTED")
    assert back in body["message"]
    # A second container asks for an address outside the subnet, then for one that is taken.
    other = await engine.container(front)
    for ipv4 in ("10.99.0.5", "10.232.0.50"):
        resp = await client.post(
            f"/api/v1/networks/{back}/connect", json={"container": other["Id"], "ipv4": ipv4}
        )
        assert (await expect(resp, 400, "VALIDATION_ERROR"))["field"] == "ipv4"
    inspected = await engine.docker.containers.container(other["Id"]).show()
    assert set(inspected["NetworkSettings"]["Networks"]) == {front}

    body = await expect(await client.delete(f"/api/v1/networks/{back}"), 409, "NETWORK_IN_USE")
    assert cname in body["message"]
    resp = await client.post(f"/api/v1/networks/{made['id']}/disconnect", json={"container": cid})
    assert resp.status == 200
    assert [c["id"] for c in (await resp.json())["containers"]] == [other["Id"][:12]]
    resp = await client.post(f"/api/v1/networks/{front}/disconnect", json={"container": cid, "force": True})
    await expect(resp, 409, "CONTAINER_NOT_CONNECTED")
    inspected = await engine.docker.containers.container(cid).show()
    assert set(inspected["NetworkSettings"]["Networks"]) == {back}

    await expect(await client.delete(f"/api/v1/networks/{made['id']}"), 409, "NETWORK_IN_USE")
    await engine.docker.containers.container(other["Id"]).delete(force=True)
    assert (await client.delete(f"/api/v1/networks/{made['id']}")).status == 204
    assert await engine.ours() == {back}
    await expect(await client.delete(f"/api/v1/networks/{front}"), 404, "NETWORK_NOT_FOUND")


async def test_unknown_networks_and_containers(client: TestClient[Any, Any], engine: Engine) -> None:
    net = engine.name("known")
    await create(client, name=net)
    container = await engine.container(net, start=False)
    for action in ("connect", "disconnect"):
        resp = await client.post(
            f"/api/v1/networks/{PREFIX}nowhere/{action}", json={"container": container["Id"]}
        )
        body = await expect(resp, 404, "NETWORK_NOT_FOUND")
        assert f"{PREFIX}nowhere" in body["message"]
        resp = await client.post(f"/api/v1/networks/{net}/{action}", json={"container": f"{PREFIX}nobody"})
        await expect(resp, 404, "CONTAINER_NOT_FOUND")
    await expect(await client.delete(f"/api/v1/networks/{PREFIX}nowhere"), 404, "NETWORK_NOT_FOUND")
    # A container that never ran is on its network too: removing the network is refused.
    await expect(await client.delete(f"/api/v1/networks/{net}"), 409, "NETWORK_IN_USE")
    resp = await client.post(f"/api/v1/networks/{net}/connect", json={"container": container["Id"][:12]})
    await expect(resp, 409, "CONTAINER_ALREADY_CONNECTED")


async def test_a_taken_name_is_refused(client: TestClient[Any, Any], engine: Engine) -> None:
    name = engine.name("taken")
    await create(client, name=name)
    resp = await client.post("/api/v1/networks", json={"name": name, "internal": True})
    body = await expect(resp, 409, "NETWORK_NAME_IN_USE")
    assert name in body["message"]
    assert [n["Name"] for n in await engine.docker.networks.list()].count(name) == 1


async def test_predefined_networks_stay(client: TestClient[Any, Any], engine: Engine) -> None:
    networks = {n["Name"]: n["Id"] for n in await engine.docker.networks.list()}
    for ref in ("none", "host", networks["none"][:12], networks["host"]):
        body = await expect(await client.delete(f"/api/v1/networks/{ref}"), 403, "FORBIDDEN")
        assert "predefined" in body["message"]
    assert {"none", "host"} <= await engine.all()
    for name in ("bridge", "host", "none"):
        resp = await client.post("/api/v1/networks", json={"name": name})
        assert (await expect(resp, 400, "VALIDATION_ERROR"))["field"] == "name"


async def test_what_the_engine_refuses_is_a_validation_error(
    client: TestClient[Any, Any], engine: Engine
) -> None:
    first, overlapping, other = engine.name("first"), engine.name("overlap"), engine.name("other")
    await create(client, name=first, subnets=[{"subnet": "10.233.0.0/24"}])
    before = await engine.all()
    resp = await client.post("/api/v1/networks", json={"name": other, "driver": "nkzt-no-such-driver"})
    assert (await expect(resp, 400, "VALIDATION_ERROR"))["field"] == "driver"
    resp = await client.post("/api/v1/networks", json={"name": other, "driver": "host"})
    assert (await expect(resp, 400, "VALIDATION_ERROR"))["field"] == "driver"
    resp = await client.post(
        "/api/v1/networks", json={"name": overlapping, "subnets": [{"subnet": "10.233.0.0/25"}]}
    )
    body = await expect(resp, 400, "VALIDATION_ERROR")
    assert body["field"] == "subnets" and "Pool" not in body["message"]  # the Engine's text stays out
    assert await engine.all() == before
    isolated = await engine.container("none", start=False)
    resp = await client.post(f"/api/v1/networks/{first}/connect", json={"container": isolated["Id"]})
    assert (await expect(resp, 400, "VALIDATION_ERROR"))["field"] == "container"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "a/b"}, "name"),
        ({"name": ".."}, "name"),
        ({"name": "x" * 300}, "name"),
        ({"name": None}, "name"),
        ({"name": 7}, "name"),
        ({"driver": "no spaces"}, "driver"),
        ({"internal": "yes"}, "internal"),
        ({"internal": 1}, "internal"),
        ({"attachable": None}, "attachable"),
        ({"labels": {"k": ["v"]}}, "labels"),
        ({"subnets": "10.0.0.0/8"}, "subnets"),
        ({"subnets": [{"subnet": "10.240.0.1/24"}]}, "subnets"),  # host bits set
        ({"subnets": [{"subnet": "300.1.0.0/16"}]}, "subnets"),
        ({"subnets": [{"subnet": "not-a-cidr"}]}, "subnets"),
        ({"subnets": [{"subnet": 167772160}]}, "subnets"),  # an integer is no CIDR here
        ({"subnets": [{"subnet": "10.240.0.0/24", "gateway": "10.241.0.1"}]}, "subnets"),
        ({"subnets": [{"subnet": "10.240.0.0/24", "gateway": "gate"}]}, "subnets"),
        ({"subnets": [{"subnet": "10.240.0.0/24", "mask": "x"}]}, "subnets"),
        ({"subnets": [{"gateway": "10.240.0.1"}]}, "subnets"),
        ({"subnets": [{"subnet": "10.240.0.0/16"}, {"subnet": "10.240.1.0/24"}]}, "subnets"),
        ({"subnets": [{"subnet": f"10.{i}.0.0/16"} for i in range(17)]}, "subnets"),
        ({"subnets": [{"subnet": "10.240.0.0/24"}] * 10_000}, "subnets"),
    ],
)
async def test_bad_bodies_change_nothing(
    client: TestClient[Any, Any], engine: Engine, body: dict[str, Any], field: str
) -> None:
    before = await engine.all()
    resp = await client.post("/api/v1/networks", json={"name": engine.name("bad"), **body})
    assert (await expect(resp, 400, "VALIDATION_ERROR"))["field"] == field
    assert await engine.all() == before


async def test_malformed_requests(client: TestClient[Any, Any], engine: Engine) -> None:
    net = engine.name("target")
    await create(client, name=net, subnets=[{"subnet": "10.234.0.0/24"}])
    container = await engine.container(net, start=False)
    before = await engine.all()
    for raw in (f'{{"name": "{PREFIX}x", "checkDuplicate": true}}', "", "[]", '{"name": "x",'):
        await expect(await client.post("/api/v1/networks", data=raw, headers=JSON), 400, "INVALID_REQUEST")
    resp = await client.post(
        "/api/v1/networks", data=f'{{"name": "{PREFIX}x", "internal": NaN}}', headers=JSON
    )
    assert (await expect(resp, 400, "VALIDATION_ERROR"))["field"] == "internal"
    for body, field in (
        ({"container": "../x"}, "container"),
        ({"container": "a/b"}, "container"),
        ({"container": "x" * 300}, "container"),
        ({"container": 12}, "container"),
        ({"container": container["Id"], "aliases": "db"}, "aliases"),
        ({"container": container["Id"], "aliases": ["bad alias"]}, "aliases"),
        ({"container": container["Id"], "aliases": ["a"] * 33}, "aliases"),
        ({"container": container["Id"], "ipv4": "10.234.0.300"}, "ipv4"),
        ({"container": container["Id"], "ipv4": "fd00::1"}, "ipv4"),
        ({"container": container["Id"], "ipv4": 167772161}, "ipv4"),
    ):
        resp = await client.post(f"/api/v1/networks/{net}/connect", json=body)
        assert (await expect(resp, 400, "VALIDATION_ERROR"))["field"] == field, body
    resp = await client.post(
        f"/api/v1/networks/{net}/disconnect", json={"container": container["Id"], "force": "1"}
    )
    assert (await expect(resp, 400, "VALIDATION_ERROR"))["field"] == "force"
    for action, extra in (("connect", {"alias": "x"}), ("disconnect", {"aliases": []})):
        resp = await client.post(
            f"/api/v1/networks/{net}/{action}", json={"container": container["Id"], **extra}
        )
        await expect(resp, 400, "INVALID_REQUEST")
    for path in ("a%2Fb", "..%2Fx", "x" * 300, "-x", "a%20b"):
        await expect(await client.delete(f"/api/v1/networks/{path}"), 400, "INVALID_REQUEST")
        resp = await client.post(f"/api/v1/networks/{path}/connect", json={"container": container["Id"]})
        await expect(resp, 400, "INVALID_REQUEST")
    for query in ("limit=-1", "offset=x", "name=" + "x" * 300, "driver=" + "x" * 300):
        await expect(await client.get(f"/api/v1/networks?{query}"), 400, "INVALID_REQUEST")
    await expect(await client.post("/api/v1/networks/prune", json={"all": True}), 400, "INVALID_REQUEST")
    assert await engine.all() == before
    inspected = await engine.docker.containers.container(container["Id"]).show()
    assert set(inspected["NetworkSettings"]["Networks"]) == {net}


async def test_filters_and_pages(client: TestClient[Any, Any], engine: Engine) -> None:
    names = [engine.name(f"page-{i}") for i in range(3)]
    for name in names:
        await create(client, name=name)

    async def listed(query: str) -> list[str]:
        resp = await client.get(f"/api/v1/networks?{query}")
        assert resp.status == 200, await resp.text()
        return [n["name"] for n in await resp.json()]

    assert await listed(f"name={PREFIX}page-") == names
    assert await listed(f"name={PREFIX}page-&driver=bridge") == names
    assert await listed(f"name={PREFIX}page-&driver=null") == []
    assert await listed("driver=null") == ["none"]
    resp = await client.get(f"/api/v1/networks?name={PREFIX}page-&limit=2")
    assert [n["name"] for n in await resp.json()] == names[:2]
    assert resp.headers["X-Total-Count"] == "3" and 'rel="next"' in resp.headers["Link"]


async def test_prune_takes_unused_networks(client: TestClient[Any, Any], engine: Engine) -> None:
    unused, used = engine.name("unused"), engine.name("used")
    await create(client, name=unused)
    await create(client, name=used)
    await engine.container(used, start=False)
    resp = await client.post("/api/v1/networks/prune")
    assert resp.status == 200
    deleted = (await resp.json())["deleted"]
    assert unused in deleted and used not in deleted and "none" not in deleted
    assert await engine.ours() == {used}
    assert {"none", "host"} <= await engine.all()


async def test_scopes(gateway: ClientFactory, netns_docker_host: str, engine: Engine) -> None:
    client = await gateway(security_config(netns_docker_host))
    name = engine.name("scoped")
    reader = bearer(token(scopes=["read:engine"]))
    containers_only = bearer(token(scopes=["read:containers", "write:containers"]))
    assert (await client.get("/api/v1/networks", headers=reader)).status == 200
    await expect(await client.get("/api/v1/networks", headers=containers_only), 403, "FORBIDDEN")
    for headers in (reader, containers_only):
        resp = await client.post("/api/v1/networks", json={"name": name, "internal": True}, headers=headers)
        assert "write:engine" in (await expect(resp, 403, "FORBIDDEN"))["message"]
        await expect(await client.post("/api/v1/networks/prune", headers=headers), 403, "FORBIDDEN")
    assert await engine.ours() == set()
    writer = bearer(token(scopes=["write:engine"]))
    resp = await client.post("/api/v1/networks", json={"name": name, "internal": True}, headers=writer)
    assert resp.status == 201
    container = await engine.container(name, start=False)
    for headers in (reader, containers_only):
        await expect(await client.delete(f"/api/v1/networks/{name}", headers=headers), 403, "FORBIDDEN")
        resp = await client.post(
            f"/api/v1/networks/{name}/disconnect", json={"container": container["Id"]}, headers=headers
        )
        await expect(resp, 403, "FORBIDDEN")
    assert await engine.ours() == {name}
    await expect(await client.get("/api/v1/networks"), 401, "UNAUTHORIZED")


async def test_a_foreign_page_cannot_change_networks(client: TestClient[Any, Any], engine: Engine) -> None:
    name = engine.name("csrf")
    headers = {"Origin": EVIL, "Content-Type": "text/plain"}
    resp = await client.post(
        "/api/v1/networks", data=f'{{"name": "{name}", "internal": true}}', headers=headers
    )
    await expect(resp, 403, "ORIGIN_NOT_ALLOWED")
    assert await engine.ours() == set()
    await create(client, name=name)
    cross = {"Sec-Fetch-Site": "cross-site"}
    await expect(await client.delete(f"/api/v1/networks/{name}", headers=cross), 403, "ORIGIN_NOT_ALLOWED")
    await expect(await client.post("/api/v1/networks/prune", headers=cross), 403, "ORIGIN_NOT_ALLOWED")
    assert await engine.ours() == {name}


async def test_kubernetes_has_no_networks(
    gateway: ClientFactory, kube: FakeKube, kubeconfig: Path, netns_docker_host: str
) -> None:
    client = await gateway(kubernetes_only(netns_docker_host, kubeconfig))
    for method, path in (
        ("GET", "/api/v1/networks"),
        ("POST", "/api/v1/networks"),
        ("DELETE", "/api/v1/networks/some-net"),
        ("POST", "/api/v1/networks/some-net/connect"),
        ("POST", "/api/v1/networks/some-net/disconnect"),
        ("POST", "/api/v1/networks/prune"),
    ):
        body = await expect(await client.request(method, path), 409, "OPERATION_NOT_SUPPORTED")
        assert "networks" in body["message"]
