"""Volumes over REST against the real Engine: list (filters, sizes, pages), create, remove, prune.

Every volume a test makes is named with the run's prefix and removed afterwards. Prunes run on the
module's private Engine in its own network namespace (``netns_docker_host``), never on the shared
one, whose unused volumes belong to other tests.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiodocker
import pytest
from aiodocker.volumes import DockerVolume
from aiohttp.test_utils import TestClient

from tests.support.docker_engine import QUICK_STOP, RUN_LABEL, TEST_IMAGE, Containers
from tests.support.fake_kube import FakeKube
from tests.support.gateway import JSON, ClientFactory, kubernetes_only, make_config
from tests.unit.test_errors import expect
from tests.unit.test_security import bearer, security_config, token

PREFIX = f"nkzt-{uuid.uuid4().hex[:8]}-"
EVIL = "https://evil.example"


class Made:
    """The volumes a test made on one Engine, removed (with any container using them) afterwards."""

    def __init__(self, docker: aiodocker.Docker) -> None:
        self.docker = docker
        self.names: list[str] = []

    def name(self, suffix: str) -> str:
        made = PREFIX + suffix
        self.names.append(made)
        return made

    async def all(self) -> set[str]:
        """The names of every volume the Engine has."""
        listed = await self.docker.volumes.list()  # type: ignore[no-untyped-call]
        return {v["Name"] for v in listed["Volumes"] or ()}

    async def ours(self) -> set[str]:
        """The names of this run's volumes the Engine has."""
        return {name for name in await self.all() if name in self.names}

    async def cleanup(self) -> None:
        for name in self.names:
            try:
                await DockerVolume(self.docker, name).delete()  # type: ignore[no-untyped-call]
            except aiodocker.DockerError as exc:
                if exc.status != 404:
                    raise


@pytest.fixture
async def made(docker: aiodocker.Docker) -> AsyncIterator[Made]:
    volumes = Made(docker)
    try:
        yield volumes
    finally:
        await volumes.cleanup()


@pytest.fixture
async def private(
    gateway: ClientFactory, netns_docker_host: str
) -> AsyncIterator[tuple[TestClient[Any, Any], Made]]:
    docker = aiodocker.Docker(url=netns_docker_host)
    volumes = Made(docker)
    try:
        yield await gateway(make_config(netns_docker_host)), volumes
    finally:
        await volumes.cleanup()
        await docker.close()


async def mounting(containers: Containers, volume: str, *, name: str | None = None) -> dict[str, Any]:
    """A stopped test container that mounts ``volume`` (removed by the ``containers`` fixture)."""
    config: dict[str, Any] = {
        "Image": TEST_IMAGE,
        "Cmd": QUICK_STOP,
        "Labels": {RUN_LABEL: containers.run_id},
        "HostConfig": {"NetworkMode": "none", "Binds": [f"{volume}:/data"]},
    }
    made = await containers.docker.containers.create(config, name=name or f"nkzt-{uuid.uuid4().hex[:10]}")
    containers.created.append(made.id)
    return dict(await made.show())


async def test_create_list_and_remove(
    client: TestClient[Any, Any], made: Made, containers: Containers
) -> None:
    name = made.name("data")
    resp = await client.post(
        "/api/v1/volumes", json={"name": name, "labels": {"team": "web", "tier": "db"}, "driverOpts": {}}
    )
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert created["name"] == name and created["driver"] == "local" and created["scope"] == "local"
    assert created["labels"] == {"team": "web", "tier": "db"}
    assert created["size"] is None and created["containers"] == []
    assert created["mountpoint"].endswith(f"/{name}/_data") and created["created"] > 0
    user = await mounting(containers, name, name=f"{PREFIX}user")

    listed = await (await client.get(f"/api/v1/volumes?name={PREFIX}")).json()
    [row] = [v for v in listed if v["name"] == name]
    assert row["containers"] == [user["Name"].lstrip("/")] and row["size"] is None
    sized = await (await client.get(f"/api/v1/volumes?name={name}&size=true")).json()
    assert [v["name"] for v in sized] == [name] and isinstance(sized[0]["size"], int)

    resp = await client.delete(f"/api/v1/volumes/{name}")
    body = await expect(resp, 409, "VOLUME_IN_USE")
    assert f"{PREFIX}user" in body["message"]
    # Docker's force does not take a volume from a container that uses it either.
    await expect(await client.delete(f"/api/v1/volumes/{name}?force=true"), 409, "VOLUME_IN_USE")
    await containers.docker.containers.container(user["Id"]).delete()
    assert (await client.delete(f"/api/v1/volumes/{name}")).status == 204
    assert await made.ours() == set()
    for force in ("false", "true"):
        body = await expect(
            await client.delete(f"/api/v1/volumes/{name}?force={force}"), 404, "VOLUME_NOT_FOUND"
        )
        assert name in body["message"]


async def test_an_anonymous_volume_gets_its_name_from_the_engine(
    client: TestClient[Any, Any], made: Made
) -> None:
    resp = await client.post("/api/v1/volumes", json={"labels": {RUN_LABEL: PREFIX}})
    assert resp.status == 201
    name = (await resp.json())["name"]
    made.names.append(name)
    assert len(name) == 64 and await made.ours() == {name}
    # No body at all is every default, as the Docker CLI's `docker volume create`.
    resp = await client.post("/api/v1/volumes")
    assert resp.status == 201
    made.names.append((await resp.json())["name"])


async def test_filters_and_pages(client: TestClient[Any, Any], made: Made, containers: Containers) -> None:
    names = [made.name(f"page-{i}") for i in range(3)]
    for i, name in enumerate(names):
        labels = {"nkzt.page": str(i), "nkzt.run": PREFIX}
        assert (await client.post("/api/v1/volumes", json={"name": name, "labels": labels})).status == 201
    await mounting(containers, names[0])

    async def listed(query: str) -> list[str]:
        resp = await client.get(f"/api/v1/volumes?name={PREFIX}page-&{query}")
        assert resp.status == 200, await resp.text()
        return [v["name"] for v in await resp.json()]

    assert await listed("") == names  # sorted by name
    assert await listed("dangling=true") == names[1:]
    assert await listed("dangling=false") == names[:1]
    assert await listed("label=nkzt.page=2") == names[2:]
    assert await listed("label=nkzt.page&label=nkzt.run=" + PREFIX) == names
    assert await listed("label=nkzt.page=9") == []
    resp = await client.get(f"/api/v1/volumes?name={PREFIX}page-&limit=2&offset=1")
    assert [v["name"] for v in await resp.json()] == names[1:]
    assert resp.headers["X-Total-Count"] == "3"
    assert 'rel="prev"' in resp.headers["Link"] and 'rel="next"' not in resp.headers["Link"]
    resp = await client.get(f"/api/v1/volumes?name={PREFIX}page-&limit=1")
    assert 'rel="next"' in resp.headers["Link"] and len(await resp.json()) == 1


async def test_a_taken_name_is_refused(
    client: TestClient[Any, Any], made: Made, docker: aiodocker.Docker
) -> None:
    name = made.name("taken")
    assert (await client.post("/api/v1/volumes", json={"name": name, "labels": {"a": "1"}})).status == 201
    resp = await client.post("/api/v1/volumes", json={"name": name, "labels": {"a": "2"}})
    body = await expect(resp, 409, "VOLUME_NAME_IN_USE")
    assert name in body["message"]
    shown = await DockerVolume(docker, name).show()  # type: ignore[no-untyped-call]
    assert shown["Labels"] == {"a": "1"}


async def test_what_the_engine_refuses_is_a_validation_error(
    client: TestClient[Any, Any], made: Made
) -> None:
    name = made.name("refused")
    resp = await client.post("/api/v1/volumes", json={"name": name, "driver": "nkzt-no-such-driver"})
    body = await expect(resp, 400, "VALIDATION_ERROR")
    assert body["field"] == "driver" and "nkzt-no-such-driver" in body["message"]
    resp = await client.post("/api/v1/volumes", json={"name": name, "driverOpts": {"bogus": "1"}})
    body = await expect(resp, 400, "VALIDATION_ERROR")
    assert body["field"] == "driverOpts" and "bogus" not in body["message"]  # the Engine's text stays out
    assert await made.ours() == set()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "a/b"}, "name"),
        ({"name": ".."}, "name"),
        ({"name": "../etc"}, "name"),
        ({"name": "x" * 300}, "name"),
        ({"name": "-lead"}, "name"),
        ({"name": "a"}, "name"),
        ({"name": 5}, "name"),
        ({"name": ["x"]}, "name"),
        ({"driver": "bad driver"}, "driver"),
        ({"driver": 1.5}, "driver"),
        ({"labels": ["a=b"]}, "labels"),
        ({"labels": {"a": 1}}, "labels"),
        ({"labels": {"": "x"}}, "labels"),
        ({"labels": {f"k{i}": "v" for i in range(101)}}, "labels"),
        ({"labels": {"k": "v" * 5000}}, "labels"),
        ({"driverOpts": {"o": None}}, "driverOpts"),
        ({"driverOpts": "type=tmpfs"}, "driverOpts"),
    ],
)
async def test_bad_bodies_change_nothing(
    private: tuple[TestClient[Any, Any], Made], body: dict[str, Any], field: str
) -> None:
    # On the private Engine, where no other test makes volumes meanwhile: nothing at all changes.
    client, made = private
    before = await made.all()
    resp = await client.post("/api/v1/volumes", json=body)
    answer = await expect(resp, 400, "VALIDATION_ERROR")
    assert answer["field"] == field
    assert await made.all() == before


async def test_malformed_requests(client: TestClient[Any, Any], made: Made) -> None:
    name = made.name("malformed")
    for raw in (
        f'{{"name": "{name}", "size": 1}}',  # unknown field
        f'{{"name": "{name}", "Name": "{name}"}}',
        "[1, 2]",
        "{",
    ):
        await expect(await client.post("/api/v1/volumes", data=raw, headers=JSON), 400, "INVALID_REQUEST")
    # Python's decoder reads NaN and Infinity (JSON has neither): no name, whatever they are.
    for raw in ('{"name": NaN}', '{"name": -Infinity}', '{"labels": {"a": NaN}}'):
        resp = await client.post("/api/v1/volumes", data=raw, headers=JSON)
        assert (await expect(resp, 400, "VALIDATION_ERROR"))["field"] in raw
    for query in ("size=maybe", "dangling=2", "limit=0", "limit=NaN", "offset=-1", "name=" + "x" * 300):
        await expect(await client.get(f"/api/v1/volumes?{query}"), 400, "INVALID_REQUEST")
    await expect(await client.get("/api/v1/volumes?label="), 400, "INVALID_REQUEST")
    await expect(await client.get("/api/v1/volumes?label==v"), 400, "INVALID_REQUEST")
    for path in ("a%2Fb", "..%2Fx", "x" * 300, "-x", "a%20b", "a%00b"):
        await expect(await client.delete(f"/api/v1/volumes/{path}"), 400, "INVALID_REQUEST")
    # A dot segment is folded away before routing: the path names no route.
    await expect(await client.delete("/api/v1/volumes/%2E%2E"), 404, "NOT_FOUND")
    await expect(await client.delete(f"/api/v1/volumes/{name}?force=perhaps"), 400, "INVALID_REQUEST")
    await expect(await client.post("/api/v1/volumes/prune", json={"all": True}), 400, "INVALID_REQUEST")
    await expect(await client.post("/api/v1/volumes/prune?all=2"), 400, "INVALID_REQUEST")
    assert await made.ours() == set()


async def test_scopes(gateway: ClientFactory, docker_host: str, made: Made) -> None:
    client = await gateway(security_config(docker_host))
    name = made.name("scoped")
    reader = bearer(token(scopes=["read:engine"]))
    containers_only = bearer(token(scopes=["read:containers", "write:containers"]))
    assert (await client.get("/api/v1/volumes", headers=reader)).status == 200
    await expect(await client.get("/api/v1/volumes", headers=containers_only), 403, "FORBIDDEN")
    for headers in (reader, containers_only):
        body = await expect(
            await client.post("/api/v1/volumes", json={"name": name}, headers=headers), 403, "FORBIDDEN"
        )
        assert "write:engine" in body["message"]
        await expect(await client.post("/api/v1/volumes/prune", headers=headers), 403, "FORBIDDEN")
    assert await made.ours() == set()
    writer = bearer(token(scopes=["write:engine"]))
    assert (await client.post("/api/v1/volumes", json={"name": name}, headers=writer)).status == 201
    for headers in (reader, containers_only):
        await expect(await client.delete(f"/api/v1/volumes/{name}", headers=headers), 403, "FORBIDDEN")
    assert await made.ours() == {name}
    await expect(await client.get("/api/v1/volumes"), 401, "UNAUTHORIZED")


async def test_a_foreign_page_cannot_create_or_remove(client: TestClient[Any, Any], made: Made) -> None:
    name = made.name("csrf")
    headers = {"Origin": EVIL, "Content-Type": "text/plain"}
    resp = await client.post("/api/v1/volumes", data=f'{{"name": "{name}"}}', headers=headers)
    await expect(resp, 403, "ORIGIN_NOT_ALLOWED")
    assert await made.ours() == set()
    assert (await client.post("/api/v1/volumes", json={"name": name})).status == 201
    cross = {"Sec-Fetch-Site": "cross-site"}
    await expect(await client.delete(f"/api/v1/volumes/{name}", headers=cross), 403, "ORIGIN_NOT_ALLOWED")
    await expect(await client.post("/api/v1/volumes/prune", headers=cross), 403, "ORIGIN_NOT_ALLOWED")
    assert await made.ours() == {name}


async def test_kubernetes_has_no_volumes(
    gateway: ClientFactory, kube: FakeKube, kubeconfig: Path, docker_host: str
) -> None:
    client = await gateway(kubernetes_only(docker_host, kubeconfig))
    for method, path in (
        ("GET", "/api/v1/volumes"),
        ("POST", "/api/v1/volumes"),
        ("DELETE", "/api/v1/volumes/some-volume"),
        ("POST", "/api/v1/volumes/prune"),
    ):
        body = await expect(await client.request(method, path), 409, "OPERATION_NOT_SUPPORTED")
        assert "volumes" in body["message"]
    both = make_config(
        docker_host,
        runtimes={
            "docker": {"host": docker_host, "self_id": "0" * 64},
            "kubernetes": {"enabled": True, "kubeconfig": str(kubeconfig)},
        },
    )
    client = await gateway(both)
    await expect(await client.get("/api/v1/volumes?runtime=kubernetes"), 409, "OPERATION_NOT_SUPPORTED")
    assert (await client.get("/api/v1/volumes?runtime=docker&limit=1")).status == 200


async def test_prune_takes_anonymous_volumes_unless_all(private: tuple[TestClient[Any, Any], Made]) -> None:
    client, made = private
    named, used = made.name("named"), made.name("used")
    for name in (named, used):
        assert (await client.post("/api/v1/volumes", json={"name": name})).status == 201
    anonymous = (await (await client.post("/api/v1/volumes")).json())["name"]
    made.names.append(anonymous)
    user = Containers(made.docker)
    try:
        await mounting(user, used)
        resp = await client.post("/api/v1/volumes/prune")
        assert resp.status == 200
        pruned = await resp.json()
        assert pruned["deleted"] == [anonymous] and isinstance(pruned["spaceReclaimed"], int)
        assert await made.ours() == {named, used}
        pruned = await (await client.post("/api/v1/volumes/prune?all=true")).json()
        assert pruned["deleted"] == [named]
        assert await made.ours() == {used}
        assert (await (await client.post("/api/v1/volumes/prune?all=true")).json())["deleted"] == []
    finally:
        await user.cleanup()
