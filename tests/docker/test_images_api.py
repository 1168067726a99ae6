"""The image routes against the real Engine and the local registry: list, pull, delete, prune, their
error codes, bad input answered with 400 before anything changes, scopes and cross-site requests.

Every image a test makes is in a repository of this run's own (or carries this run's label) and is
removed afterwards; prunes are limited to this run's label, so no other image on the Engine is touched.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import aiodocker
import pytest
from aiodocker.types import JSONObject
from aiohttp.test_utils import TestClient
from yarl import URL

from nekzus.keys import OPERATIONS
from tests.support.docker_engine import QUICK_STOP, RUN_LABEL, Containers
from tests.support.fake_kube import FakeKube
from tests.support.gateway import JSON, ClientFactory, kubernetes_only, make_config
from tests.support.registry import LocalRegistry
from tests.support.wsclient import WS
from tests.unit.test_security import bearer, expect_error, security_config, token

EVIL = "https://evil.example.com"


class Images:
    """This test's images: references in a repository of its own, and its run label."""

    def __init__(self, registry: LocalRegistry, docker: aiodocker.Docker) -> None:
        self.registry = registry
        self.docker = docker
        self.run = uuid.uuid4().hex[:12]
        self.repository = f"{registry.address}/nekzus/api-{self.run}"
        self.made: list[str] = []

    def ref(self, tag: str = "1") -> str:
        reference = f"{self.repository}:{tag}"
        self.made.append(reference)
        return reference

    def local(self, tag: str = "1", *, labelled: bool = True) -> tuple[str, str]:
        """An image on the Engine only (none in the registry): its reference and id."""
        reference = self.ref(tag)
        labels = {RUN_LABEL: self.run} if labelled else None
        image_id = self.registry.import_changed(reference, labels=labels)
        self.made.append(image_id)
        return reference, image_id

    def dangling(self) -> tuple[str, str]:
        """An untagged image of this run (labelled), made under a tag that then moved on to
        another: the ids of both."""
        _, old = self.local("dangling")
        _, newer = self.local("dangling")
        assert old != newer
        return old, newer

    async def exists(self, name: str) -> bool:
        try:
            await self.docker.images.inspect(name)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def cleanup(self) -> None:
        for name in reversed(self.made):
            try:
                await self.docker.images.delete(name, force=True)
            except aiodocker.DockerError as exc:
                if exc.status not in (404, 409):
                    raise


@pytest.fixture
async def images(registry: LocalRegistry, docker: aiodocker.Docker) -> AsyncIterator[Images]:
    made = Images(registry, docker)
    try:
        yield made
    finally:
        await made.cleanup()


async def container_of(containers: Containers, image: str, *, start: bool) -> dict[str, Any]:
    """A labelled test container made from ``image`` (Containers makes them from the test image)."""
    name = f"nekzus-test-{uuid.uuid4().hex[:10]}"
    config = {
        "Image": image,
        "Cmd": QUICK_STOP,
        "Labels": {RUN_LABEL: containers.run_id},
        "StopTimeout": 1,
        "HostConfig": {"NetworkMode": "none"},
    }
    made = await containers.docker.containers.create(cast(JSONObject, config), name=name)
    containers.created.append(made.id)
    if start:
        await made.start()
    return dict(await made.show())


async def pulled(client: TestClient[Any, Any], ws: WS, image: str) -> dict[str, Any]:
    """Pull ``image`` through the API; the completion (or failure) event's data."""
    resp = await client.post("/api/v1/images/pull", json={"image": image})
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert resp.headers["Location"] == f"/api/v1/operations/{body['operationId']}"
    assert body["status"] == "accepted" and body["message"] == "Image pull initiated"
    async with asyncio.timeout(60):
        while True:
            message = await ws.next()
            data = message["data"]
            ended = message["type"] in ("image.pull.completed", "image.pull.failed")
            if ended and data.get("operationId") == body["operationId"]:
                return {"type": message["type"], **data, "accepted": body}


def writes(reference: str, label: str) -> list[tuple[str, str, Any]]:
    """The changing requests on images (method, path, JSON body or None), prunes kept to ``label``."""
    return [
        ("POST", "/api/v1/images/pull", {"image": reference}),
        ("DELETE", f"/api/v1/images/{reference}", None),
        ("POST", f"/api/v1/images/prune?all=true&{label}", None),
    ]


async def listed(client: TestClient[Any, Any], query: str) -> tuple[list[dict[str, Any]], Any]:
    resp = await client.get(f"/api/v1/images?{query}")
    assert resp.status == 200, await resp.text()
    return await resp.json(), resp.headers


@pytest.fixture
async def ws(client: TestClient[Any, Any]) -> AsyncIterator[WS]:
    reader = WS(await client.ws_connect("/api/v1/ws"))
    await reader.until("hello")
    yield reader
    await reader.ws.close()


async def test_pull_list_and_delete_an_image_from_the_registry(
    client: TestClient[Any, Any], ws: WS, images: Images
) -> None:
    reference = images.ref()
    digest = images.registry.push_changed(reference)
    done = await pulled(client, ws, reference)
    assert done["type"] == "image.pull.completed"
    assert done["digest"] == digest and done["imageId"].startswith("sha256:")
    assert done["resource"] == "image" and done["target"] == reference and done["status"] == "pulled"
    progress = [m["data"] for m in ws.seen if m["type"] == "image.pull.progress"]
    assert progress[-1]["status"] == "complete" and progress[-1]["operationId"] == done["operationId"]
    assert progress[-1]["bytes"]["done"] == progress[-1]["bytes"]["total"] > 0
    record = await (await client.get(f"/api/v1/operations/{done['operationId']}")).json()
    assert record["state"] == "completed" and record["digest"] == digest

    found, headers = await listed(client, f"reference={quote(images.repository)}")
    assert headers["X-Total-Count"] == "1"
    (image,) = found
    assert image["id"] == done["imageId"] and image["tags"] == [reference]
    assert image["digests"] == [f"{images.repository}@{digest}"]
    assert image["size"] > 0 and isinstance(image["created"], int) and image["dangling"] is False
    assert image["containers"] == {"count": 0, "ids": []}

    # A reference's slashes go in the path as they are.
    resp = await client.delete(f"/api/v1/images/{reference}")
    assert resp.status == 200, await resp.text()
    removed = await resp.json()
    assert reference in removed["untagged"] and done["imageId"] in removed["deleted"]
    assert not await images.exists(done["imageId"])


async def test_an_image_without_tag_is_latest_and_slashes_may_be_encoded(
    client: TestClient[Any, Any], ws: WS, images: Images
) -> None:
    reference = images.ref("latest")
    images.registry.push_changed(reference)
    done = await pulled(client, ws, images.repository)
    assert done["type"] == "image.pull.completed" and done["accepted"]["image"] == reference
    assert done["target"] == reference
    # Percent-encoded slashes address the same image; so does a reference without its tag.
    resp = await client.delete(URL(f"/api/v1/images/{quote(images.repository, safe='')}", encoded=True))
    assert resp.status == 200, await resp.text()
    assert reference in (await resp.json())["untagged"]
    assert not await images.exists(reference)


async def test_a_pull_that_fails_ends_with_its_code_in_the_event(
    client: TestClient[Any, Any], ws: WS, images: Images
) -> None:
    missing = await pulled(client, ws, images.ref("never-pushed"))
    assert missing["type"] == "image.pull.failed" and missing["error"] == "IMAGE_NOT_FOUND"
    assert images.ref("never-pushed") in missing["message"]
    dead = await pulled(client, ws, "127.0.0.1:1/nekzus/busybox:1")
    assert dead["type"] == "image.pull.failed" and dead["error"] == "IMAGE_PULL_FAILED"
    assert dead["message"] == "Failed to pull image: registry 127.0.0.1:1 is not reachable from the Engine"


async def test_delete_by_id_and_short_id_and_the_not_found_answers(
    client: TestClient[Any, Any], images: Images
) -> None:
    _, full = images.local("a")
    _, short = images.local("b")
    resp = await client.delete(f"/api/v1/images/{full}")
    assert resp.status == 200, await resp.text()
    assert full in (await resp.json())["deleted"]
    resp = await client.delete(f"/api/v1/images/{short.removeprefix('sha256:')[:12]}")
    assert resp.status == 200, await resp.text()
    assert short in (await resp.json())["deleted"]
    body = await expect_error(await client.delete(f"/api/v1/images/{full}"), 404, "IMAGE_NOT_FOUND")
    assert full in body["message"]
    await expect_error(await client.delete(f"/api/v1/images/{images.ref('gone')}"), 404, "IMAGE_NOT_FOUND")
    await expect_error(await client.delete("/api/v1/images/" + "0" * 64), 404, "IMAGE_NOT_FOUND")
    # Fewer than 12 hex digits are a name (with :latest), never a prefix of some other image.
    await expect_error(await client.delete("/api/v1/images/" + full[7:15]), 404, "IMAGE_NOT_FOUND")


async def test_an_image_in_use_is_kept_unless_forced_and_never_under_a_running_container(
    client: TestClient[Any, Any], images: Images, containers: Containers
) -> None:
    reference, image_id = images.local()
    made = await container_of(containers, reference, start=False)
    name = made["Name"].lstrip("/")
    path = f"/api/v1/images/{reference}"
    body = await expect_error(await client.delete(path), 409, "IMAGE_IN_USE")
    assert name in body["message"] and "force=true" in body["message"]
    assert await images.exists(reference)
    # Force never removes an image a running container uses (by id: its tags alone would go).
    await containers.docker.containers.container(made["Id"]).start()
    resp = await client.delete(f"/api/v1/images/{image_id}?force=true")
    body = await expect_error(resp, 409, "IMAGE_IN_USE")
    assert name in body["message"] and "running" in body["message"]
    assert await images.exists(reference)
    listed_image = (await listed(client, f"reference={quote(images.repository)}"))[0][0]
    assert listed_image["containers"] == {"count": 1, "ids": [made["Id"][:12]]}
    # Stopped again, force removes it as docker rmi -f does; the container stays.
    await containers.docker.containers.container(made["Id"]).stop(t=1)
    resp = await client.delete(f"{path}?force=true")
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"deleted": [image_id], "untagged": [reference]}
    assert not await images.exists(image_id)
    assert await containers.state(made["Id"]) == "exited"


async def test_filters_sort_and_pages(client: TestClient[Any, Any], images: Images) -> None:
    old, newer = images.dangling()
    tagged = [images.local(tag)[1] for tag in ("x", "y")]
    pattern = quote(f"{images.repository}:?")
    everything, headers = await listed(client, f"label={RUN_LABEL}={images.run}")
    assert headers["X-Total-Count"] == "4"
    assert {i["id"] for i in everything} == {old, newer, *tagged}
    created = [i["created"] for i in everything]
    assert created == sorted(created, reverse=True)
    dangling, _ = await listed(client, f"label={RUN_LABEL}={images.run}&dangling=true")
    assert [(i["id"], i["tags"], i["dangling"]) for i in dangling] == [(old, [], True)]
    kept, _ = await listed(client, f"label={RUN_LABEL}={images.run}&dangling=false")
    assert {i["id"] for i in kept} == {newer, *tagged}
    by_name, _ = await listed(client, f"reference={pattern}")
    assert {i["id"] for i in by_name} == set(tagged)
    first, headers = await listed(client, f"reference={pattern}&limit=1")
    assert len(first) == 1 and headers["X-Total-Count"] == "2" and 'rel="next"' in headers["Link"]
    second, _ = await listed(client, f"reference={pattern}&limit=1&offset=1")
    assert [first[0]["id"], second[0]["id"]] == [i["id"] for i in by_name]
    assert (await listed(client, "reference=nekzus/no-such-repository-*"))[0] == []


async def test_prune_removes_only_unused_images_of_the_filter(
    client: TestClient[Any, Any], images: Images, containers: Containers
) -> None:
    dangling, moved_on = images.dangling()
    unused_ref, unused = images.local("unused")
    used_ref, used = images.local("used")
    await container_of(containers, used_ref, start=False)
    label = f"label={RUN_LABEL}={images.run}"
    resp = await client.post(f"/api/v1/images/prune?{label}")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["deleted"] == [dangling] and body["spaceReclaimed"] > 0
    assert await images.exists(unused_ref)
    resp = await client.post(f"/api/v1/images/prune?all=true&{label}")
    assert resp.status == 200, await resp.text()
    assert sorted((await resp.json())["deleted"]) == sorted([unused, moved_on])
    assert not await images.exists(unused_ref) and await images.exists(used)
    # Nothing left of the filter: an empty answer, not an error.
    assert await (await client.post(f"/api/v1/images/prune?all=true&{label}")).json() == {
        "deleted": [],
        "spaceReclaimed": 0,
    }


BAD_REFERENCES: list[Any] = [
    5,
    None,
    True,
    ["busybox"],
    {"name": "busybox"},
    "",
    "bus box",
    " busybox",
    "Busybox",
    "../busybox",
    "a/../b",
    "a%2Fb",
    "busybox:tag with space",
    "r" * 300,
    "busybox:" + "t" * 129,
    "busybox@sha256:short",
]


async def test_bad_pull_bodies_are_400_and_start_nothing(
    client: TestClient[Any, Any], images: Images
) -> None:
    tracker = client.app[OPERATIONS]
    before = len(tracker)
    for value in BAD_REFERENCES:
        body = await expect_error(
            await client.post("/api/v1/images/pull", json={"image": value}), 400, "VALIDATION_ERROR"
        )
        assert body["field"] == "image" and "image" in body["message"]
    for raw in (b'{"image": NaN}', b'{"image": Infinity}', b'{"image": 1e999}'):
        await expect_error(
            await client.post("/api/v1/images/pull", data=raw, headers=JSON), 400, "VALIDATION_ERROR"
        )
    body = await expect_error(await client.post("/api/v1/images/pull", json={}), 400, "VALIDATION_ERROR")
    assert body["field"] == "image" and "required" in body["message"]
    body = await expect_error(
        await client.post("/api/v1/images/pull", json={"image": images.ref(), "platform": "x"}),
        400,
        "INVALID_REQUEST",
    )
    assert "'platform'" in body["message"]
    for raw in (b"", b"{", b"[]", b'"busybox"', b"null"):
        await expect_error(
            await client.post("/api/v1/images/pull", data=raw, headers=JSON), 400, "INVALID_REQUEST"
        )
    huge = b'{"image": "' + b"a" * (2 << 20) + b'"}'
    await expect_error(
        await client.post("/api/v1/images/pull", data=huge, headers=JSON), 413, "PAYLOAD_TOO_LARGE"
    )
    assert len(tracker) == before


async def test_bad_paths_and_queries_are_400_and_change_nothing(
    client: TestClient[Any, Any], images: Images
) -> None:
    reference, image_id = images.local()
    for path in (
        "Busybox",
        "%2E%2E",
        "a%2F..%2Fb",
        f"{quote(reference, safe='')}%2F..",
        "a%20b",
        "a%00b",
        "r" * 300,
        "sha256:" + "a" * 65,
        "sha256:xyz",
        "%252F",
    ):
        resp = await client.delete(URL(f"/api/v1/images/{path}", encoded=True))
        await expect_error(resp, 400, "INVALID_REQUEST")
    await expect_error(await client.delete(f"/api/v1/images/{reference}?force=maybe"), 400, "INVALID_REQUEST")
    for query in (
        "dangling=maybe",
        "reference=a[b",
        "reference=a%20b",
        "reference=" + "a" * 256,
        "limit=0",
        "limit=NaN",
        "limit=1e3",
        "limit=99999999999999",
        "offset=-1",
        "label=%00",
        "label==x",
        "&".join(f"label=k{n}" for n in range(11)),
    ):
        await expect_error(await client.get(f"/api/v1/images?{query}"), 400, "INVALID_REQUEST")
    label = f"label={RUN_LABEL}={images.run}"
    for query in (f"all=2&{label}", f"{label}&label=%0A", "all=Infinity"):
        await expect_error(await client.post(f"/api/v1/images/prune?{query}"), 400, "INVALID_REQUEST")
    body = await expect_error(
        await client.post(f"/api/v1/images/prune?{label}", json={"all": True}), 400, "INVALID_REQUEST"
    )
    assert "'all'" in body["message"]
    await expect_error(await client.get("/api/v1/images?runtime=nope"), 400, "INVALID_RUNTIME")
    assert await images.exists(reference) and await images.exists(image_id)


async def test_scopes_read_engine_lists_and_write_engine_changes(
    gateway: ClientFactory, docker_host: str, images: Images
) -> None:
    remote = await gateway(security_config(docker_host))
    reference, _ = images.local()
    reader = bearer(token(scopes=["read:engine"]))
    assert (await remote.get("/api/v1/images?limit=1", headers=reader)).status == 200
    label = f"label={RUN_LABEL}={images.run}"
    for method, path, body_json in writes(reference, label):
        body = await expect_error(
            await remote.request(method, path, headers=reader, json=body_json), 403, "FORBIDDEN"
        )
        assert "write:engine" in body["message"]
        for scopes in (["write:containers"], ["read:*", "write:containers"]):
            writer = bearer(token(scopes=scopes))
            resp = await remote.request(method, path, headers=writer, json=body_json)
            await expect_error(resp, 403, "FORBIDDEN")
    containers_only = bearer(token(scopes=["read:containers", "write:containers"]))
    body = await expect_error(await remote.get("/api/v1/images", headers=containers_only), 403, "FORBIDDEN")
    assert "read:engine" in body["message"]
    await expect_error(await remote.get("/api/v1/images"), 401, "UNAUTHORIZED")
    assert await images.exists(reference)
    engine = bearer(token(scopes=["write:engine"]))
    resp = await remote.delete(f"/api/v1/images/{reference}", headers=engine)
    assert resp.status == 200, await resp.text()


async def test_cross_site_requests_are_refused(client: TestClient[Any, Any], images: Images) -> None:
    reference, _ = images.local()
    label = f"label={RUN_LABEL}={images.run}"
    for headers in ({"Origin": EVIL}, {"Sec-Fetch-Site": "cross-site"}):
        for method, path, body_json in writes(reference, label):
            resp = await client.request(method, path, headers=headers, json=body_json)
            await expect_error(resp, 403, "ORIGIN_NOT_ALLOWED")
    assert await images.exists(reference)


async def test_kubernetes_has_no_images(
    gateway: ClientFactory, kube: FakeKube, kubeconfig: Path, docker_host: str
) -> None:
    both = {
        "docker": {"host": docker_host},
        "kubernetes": {"enabled": True, "kubeconfig": str(kubeconfig)},
    }
    client = await gateway(make_config(docker_host, runtimes=both))
    assert (await client.get("/api/v1/images?limit=1")).status == 200  # the first runtime with images
    kube_only = await gateway(kubernetes_only(docker_host, kubeconfig))
    for target in (client, kube_only):
        query = "?runtime=kubernetes" if target is client else ""
        for method, path, body_json in [("GET", "/api/v1/images", None), *writes("busybox", "label=x")]:
            separator = "&" if "?" in path else "?"
            resp = await target.request(
                method, path + (separator + query[1:] if query else ""), json=body_json
            )
            body = await expect_error(resp, 409, "OPERATION_NOT_SUPPORTED")
            assert "images" in body["message"]
