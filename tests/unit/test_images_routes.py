"""The image routes on runtimes that fail on demand, and the Docker backend's answers to refusals
the real Engine gives only in rare states (a prune already running, many users of one image)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient

from nekzus.keys import OPERATIONS
from runtimes import Conflict, InUse, NotFound, OperationFailed, Unavailable
from runtimes.docker.images import Images
from runtimes.docker.session import EngineSession
from runtimes.engine.images import (
    ImageCatalog,
    ImageFilter,
    ImagePrune,
    ImageRemoval,
    ImageSummary,
    PulledImage,
    PullProgress,
)
from tests.support.fakes import FakeRuntime, registry_of
from tests.support.gateway import ClientFactory, make_config
from tests.unit.test_security import bearer, expect_error, security_config, token


def image(n: int, *, created: int) -> ImageSummary:
    return ImageSummary(
        id=f"sha256:{n:064x}",
        tags=(f"app:{n}",),
        digests=(),
        size=1000 + n,
        created=created,
        containers=(),
    )


class FakeImages(FakeRuntime):
    """A runtime with images in a list; ``fail`` names the image method that raises what."""

    def __init__(self, images: list[ImageSummary]) -> None:
        super().__init__([])
        self.images = images
        self.filters: list[ImageFilter] = []

    def _failing(self, method: str) -> None:
        if method in self.fail:
            raise self.fail[method]

    async def pull_image(self, reference: str, on_progress: Callable[[PullProgress], None]) -> PulledImage:
        self._failing("pull_image")
        on_progress(PullProgress(reference, "complete", 0, 0, 0, 0))
        return PulledImage(reference, "sha256:" + "1" * 64, "")

    async def list_images(self, filters: ImageFilter) -> list[ImageSummary]:
        self._failing("list_images")
        self.filters.append(filters)
        return list(self.images)

    async def remove_image(self, target: str, *, force: bool) -> ImageRemoval:
        self._failing("remove_image")
        return ImageRemoval((), (target,))

    async def prune_images(self, *, unused: bool, labels: Sequence[str]) -> ImagePrune:
        self._failing("prune_images")
        return ImagePrune((), 0)


async def fake_client(gateway: ClientFactory, docker_host: str, runtime: FakeRuntime) -> TestClient[Any, Any]:
    return await gateway(make_config(docker_host), runtimes=registry_of(runtime))


async def test_the_list_is_newest_first_then_by_id_and_paged(
    gateway: ClientFactory, docker_host: str
) -> None:
    runtime = FakeImages([image(n, created=1_700_000_000 + n // 2) for n in range(25)])
    assert isinstance(runtime, ImageCatalog)
    client = await fake_client(gateway, docker_host, runtime)
    resp = await client.get("/api/v1/images?limit=10&offset=10&dangling=false&reference=app&label=a=b")
    assert resp.status == 200
    body = await resp.json()
    assert resp.headers["X-Total-Count"] == "25"
    assert 'rel="next"' in resp.headers["Link"] and 'rel="prev"' in resp.headers["Link"]
    expected = sorted(runtime.images, key=lambda i: (-i.created, i.id))[10:20]
    assert [i["id"] for i in body] == [i.id for i in expected]
    assert body[0] == {
        "id": expected[0].id,
        "tags": list(expected[0].tags),
        "digests": [],
        "size": expected[0].size,
        "created": expected[0].created,
        "containers": {"count": 0, "ids": []},
        "dangling": False,
    }
    assert runtime.filters == [ImageFilter(dangling=False, reference="app", labels=("a=b",))]


async def test_failures_have_each_routes_code_and_never_the_runtimes_text(
    gateway: ClientFactory, docker_host: str
) -> None:
    runtime = FakeImages([])
    client = await fake_client(gateway, docker_host, runtime)
    secret = OperationFailed("daemon said <secret>", detail="the Engine's disk is full")
    for method in ("list_images", "remove_image", "prune_images"):
        runtime.fail[method] = secret
    for verb, path, code, message in (
        ("GET", "/api/v1/images", "IMAGE_LIST_FAILED", "Failed to list images"),
        ("DELETE", "/api/v1/images/app:1", "IMAGE_DELETE_FAILED", "Failed to delete image"),
        ("POST", "/api/v1/images/prune", "IMAGE_PRUNE_FAILED", "Failed to prune images"),
    ):
        body = await expect_error(await client.request(verb, path), 500, code)
        assert body["message"] == f"{message}: the Engine's disk is full"
    runtime.fail["remove_image"] = NotFound("no such image", resource="image", name="app:1")
    body = await expect_error(await client.delete("/api/v1/images/app"), 404, "IMAGE_NOT_FOUND")
    assert body["message"] == "Image 'app:1' does not exist"
    runtime.fail["remove_image"] = InUse(
        "used", detail="Image app:1 is used by container(s) web", resource="image"
    )
    body = await expect_error(await client.delete("/api/v1/images/app:1"), 409, "IMAGE_IN_USE")
    assert body["message"] == "Image app:1 is used by container(s) web"


async def test_an_engine_that_does_not_answer_is_503_and_a_pull_fails_with_that_code(
    gateway: ClientFactory, docker_host: str
) -> None:
    client = await gateway(make_config(docker_host))  # nothing listens on the unit tier's socket
    for verb, path in (
        ("GET", "/api/v1/images"),
        ("DELETE", "/api/v1/images/app"),
        ("POST", "/api/v1/images/prune"),
    ):
        await expect_error(await client.request(verb, path), 503, "RUNTIME_UNAVAILABLE")
    resp = await client.post("/api/v1/images/pull", json={"image": "busybox"})
    assert resp.status == 202
    op = client.app[OPERATIONS].get((await resp.json())["operationId"])
    assert op is not None
    async with asyncio.timeout(10):
        await op.done.wait()
    assert op.error == "RUNTIME_UNAVAILABLE" and op.container_id == "busybox:latest"


async def test_a_runtime_without_images_is_409(gateway: ClientFactory, docker_host: str) -> None:
    client = await fake_client(gateway, docker_host, FakeRuntime([]))
    for verb, path in (
        ("GET", "/api/v1/images"),
        ("DELETE", "/api/v1/images/app"),
        ("POST", "/api/v1/images/prune"),
    ):
        body = await expect_error(await client.request(verb, path), 409, "OPERATION_NOT_SUPPORTED")
        assert body["message"] == "The docker runtime has no images"
    await expect_error(
        await client.post("/api/v1/images/pull", json={"image": "busybox"}), 409, "OPERATION_NOT_SUPPORTED"
    )


async def test_image_routes_count_in_the_containers_pool(gateway: ClientFactory, docker_host: str) -> None:
    config = security_config(docker_host, ratelimit={"containers": {"per_minute": 30, "burst": 3}})
    client = await gateway(config, runtimes=registry_of(FakeImages([])))
    headers = bearer(token(scopes=["read:*", "write:engine"]))
    for _ in range(2):
        assert (await client.get("/api/v1/images", headers=headers)).status == 200
    assert (await client.get("/api/v1/containers", headers=headers)).status == 200
    for verb, path in (
        ("GET", "/api/v1/images"),
        ("DELETE", "/api/v1/images/app"),
        ("POST", "/api/v1/images/prune"),
    ):
        resp = await client.request(verb, path, headers=headers)
        await expect_error(resp, 429, "RATE_LIMITED")
        assert int(resp.headers["Retry-After"]) >= 1


class ScriptedSession:
    """An Engine session answering each path from a table; a value that is an exception is raised."""

    def __init__(self, answers: Mapping[str, Any]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str, Mapping[str, Any]]] = []
        self.prunes_at_once = 0
        self.most_prunes_at_once = 0

    async def json(
        self, path: str, *, method: str = "GET", params: Mapping[str, Any] | None = None, **_: Any
    ) -> Any:
        self.asked.append((method, path, dict(params or {})))
        if path == "images/prune":
            self.prunes_at_once += 1
            self.most_prunes_at_once = max(self.most_prunes_at_once, self.prunes_at_once)
            await asyncio.sleep(0)  # a prune takes a while: let another caller in, if it may
            self.prunes_at_once -= 1
        answer = self.answers[f"{method} {path}"]
        if isinstance(answer, BaseException):
            raise answer
        return answer


def backend(answers: Mapping[str, Any]) -> tuple[Images, ScriptedSession]:
    session = ScriptedSession(answers)
    return Images(cast(EngineSession, session)), session


def container(n: int, image_id: str, state: str) -> dict[str, Any]:
    return {"Id": f"{n:064x}", "Names": [f"/web-{n}"], "ImageID": image_id, "State": state}


IMAGE_ID = "sha256:" + "a" * 64


async def test_a_refused_delete_names_the_containers_and_says_what_force_does() -> None:
    users = [container(n, IMAGE_ID, "exited") for n in range(7)] + [container(9, "sha256:other", "running")]
    images, _ = backend(
        {
            "GET images/json": [{"Id": IMAGE_ID}],
            "DELETE images/app%3A1": Conflict("conflict: unable to remove repository reference"),
            "GET images/app%3A1/json": {"Id": IMAGE_ID, "RepoTags": ["app:1"]},
            "GET containers/json": users,
        }
    )
    with pytest.raises(InUse) as refused:
        await images.remove("app:1", force=False)
    assert refused.value.resource == "image"
    assert refused.value.detail == (
        "Image app:1 is used by container(s) web-0, web-1, web-2, web-3, web-4 and 2 more; "
        "remove them first, or delete with force=true to remove it anyway (the containers stay)"
    )
    users[3]["State"] = "running"
    with pytest.raises(InUse) as refused:
        await images.remove("app:1", force=True)
    assert refused.value.detail.startswith("Image app:1 is used by running container(s) web-3;")


async def test_a_delete_refused_for_several_tags_or_child_images_says_so() -> None:
    images, _ = backend(
        {
            "GET images/json": [{"Id": IMAGE_ID}],
            "DELETE images/" + IMAGE_ID.replace(":", "%3A"): Conflict("referenced in multiple repositories"),
            "GET images/" + IMAGE_ID.replace(":", "%3A") + "/json": {
                "Id": IMAGE_ID,
                "RepoTags": ["a:1", "b:2"],
            },
            "GET containers/json": [],
        }
    )
    with pytest.raises(InUse) as refused:
        await images.remove(IMAGE_ID, force=False)
    assert refused.value.detail == (
        f"Image {IMAGE_ID} has several tags (a:1, b:2); delete them one at a time, "
        "or delete with force=true to remove them all"
    )
    # Refused even with force and with no container using it: images built on it hold it.
    with pytest.raises(InUse) as refused:
        await images.remove(IMAGE_ID, force=True)
    assert refused.value.detail == f"Image {IMAGE_ID} has other images built on it; delete those first"


async def test_prunes_take_turns_and_one_started_elsewhere_is_a_clear_failure() -> None:
    answers: dict[str, Any] = {
        "GET images/json": [{"Id": IMAGE_ID}],
        "POST images/prune": {
            "ImagesDeleted": [
                {"Untagged": "app:1"},
                {"Deleted": IMAGE_ID},
                {"Deleted": "sha256:" + "b" * 64},
            ],
            "SpaceReclaimed": 1234,
        },
    }
    images, session = backend(answers)
    first, second = await asyncio.gather(
        images.prune(unused=True, labels=["team=a"]), images.prune(unused=False, labels=[])
    )
    # Only images count as deleted: the Engine names the layers it freed the same way.
    assert first == ImagePrune((IMAGE_ID,), 1234) == second
    assert session.most_prunes_at_once == 1
    prunes = [params for method, path, params in session.asked if path == "images/prune"]
    assert prunes == [
        {"filters": '{"label": ["team=a"], "dangling": ["false"]}'},
        {"filters": '{"dangling": ["true"]}'},
    ]
    answers["POST images/prune"] = Conflict("a prune operation is already running")
    with pytest.raises(OperationFailed) as failed:
        await images.prune(unused=False, labels=[])
    assert failed.value.detail.startswith("another prune, started outside the gateway, is running")
    answers["GET images/json"] = Unavailable("socket gone")
    with pytest.raises(Unavailable):
        await images.prune(unused=False, labels=[])
