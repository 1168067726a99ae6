"""The update check behind ``updateAvailable`` (verdicts, unknowns, bounded registry traffic, the
switch that turns it off) and what the create and update routes refuse before any runtime work:
scopes, foreign pages, runtimes that cannot create, and the configuration's limits."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from nekzus.config import ConfigError, load_config
from nekzus.linking import AppLinker
from nekzus.realtime.updates import UPDATES, UpdateChecker
from runtimes import ContainerState, OperationFailed, Unavailable
from runtimes.engine.updates import ContainerImage
from tests.support.fakes import FakeRuntime, registry_of, summary
from tests.support.gateway import ClientFactory, make_config
from tests.unit.test_security import bearer, expect_error, security_config, token

DIGEST_A, DIGEST_B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


class FakeImages(FakeRuntime):
    """A runtime that tells image digests: ``images`` per container, ``registry`` per reference
    (a reference not in it is a registry that does not answer)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.images: list[ContainerImage] = []
        self.registry: dict[str, str] = {}
        self.asked: list[str] = []
        self.hold: asyncio.Event | None = None
        self.asking = 0
        self.most_asking = 0
        self.two_asking = asyncio.Event()

    async def container_images(self) -> list[ContainerImage]:
        self._maybe_fail("container_images")
        return list(self.images)

    async def registry_digest(self, reference: str) -> str:
        self.asked.append(reference)
        self.asking += 1
        self.most_asking = max(self.most_asking, self.asking)
        if self.asking >= 2:
            self.two_asking.set()
        try:
            if self.hold is not None:
                await self.hold.wait()
            if reference not in self.registry:
                raise OperationFailed(f"registry of {reference} is down")
            return self.registry[reference]
        finally:
            self.asking -= 1


def checker_of(runtime: FakeImages, *, concurrency: int = 4, self_id: str = "") -> UpdateChecker:
    return UpdateChecker(
        registry_of(runtime), AppLinker([]), self_id, enabled=True, interval=3600, concurrency=concurrency
    )


async def test_a_check_compares_each_linked_containers_digest_with_its_registry() -> None:
    containers = [summary(n) for n in range(1, 6)] + [summary(6, linked=False)]
    runtime = FakeImages(containers)
    ids = [c.full_id for c in containers]
    runtime.images = [
        ContainerImage(ids[0], "app:1", DIGEST_A),  # what the registry has: no update
        ContainerImage(ids[1], "app:1", DIGEST_B),  # an older image of the same tag
        ContainerImage(ids[2], "down:1", DIGEST_A),  # the registry does not answer
        ContainerImage(ids[3], "local:1", ""),  # never came from a registry
        ContainerImage(ids[4], "", ""),  # created from an image id
        ContainerImage(ids[5], "unlinked:1", DIGEST_A),  # not the gateway's: never asked about
    ]
    runtime.registry = {"app:1": DIGEST_A, "local:1": DIGEST_A}
    checker = checker_of(runtime)
    assert checker.of("docker", ids[0]) is None and checker.version == 0
    await checker.check()
    assert [checker.of("docker", i) for i in ids] == [False, True, None, None, None, None]
    assert sorted(runtime.asked) == ["app:1", "down:1", "local:1"]  # each reference once
    version = checker.version
    await checker.check()
    assert checker.version == version  # nothing changed: a rendered list stays valid
    runtime.registry["app:1"] = DIGEST_B
    await checker.check()
    assert [checker.of("docker", i) for i in ids[:2]] == [True, False]
    assert checker.version == version + 1
    runtime.images = runtime.images[:1]  # the others are gone: so are their references' digests
    await checker.check()
    assert list(checker.digests) == [("docker", "app:1")]
    assert checker.of("docker", ids[1]) is None


async def test_a_runtime_that_fails_its_check_has_only_unknowns() -> None:
    container = summary(1)
    runtime = FakeImages([container])
    runtime.images = [ContainerImage(container.full_id, "app:1", DIGEST_A)]
    runtime.registry = {"app:1": DIGEST_B}
    checker = checker_of(runtime)
    await checker.check()
    assert checker.of("docker", container.full_id) is True
    runtime.fail["container_images"] = Unavailable("the Engine is gone")
    await checker.check()
    assert checker.of("docker", container.full_id) is None


async def test_registry_lookups_are_bounded_and_the_gateways_own_container_is_left_out() -> None:
    containers = [summary(n) for n in range(1, 9)]
    runtime = FakeImages(containers)
    runtime.images = [ContainerImage(c.full_id, f"app{c.name}:1", DIGEST_A) for c in containers]
    runtime.hold = asyncio.Event()
    checker = checker_of(runtime, concurrency=2, self_id=containers[0].full_id)
    check = asyncio.create_task(checker.check())
    async with asyncio.timeout(5):
        await runtime.two_asking.wait()
    runtime.hold.set()
    async with asyncio.timeout(5):
        await check
    assert runtime.most_asking == 2
    assert len(runtime.asked) == 7 and f"app{containers[0].name}:1" not in runtime.asked


async def served(gateway: ClientFactory, docker_host: str, runtime: FakeRuntime, **config: Any) -> Any:
    return await gateway(make_config(docker_host, **config), runtimes=registry_of(runtime))


async def test_the_list_and_inspect_carry_the_verdict_and_the_list_is_rendered_again(
    gateway: ClientFactory, docker_host: str
) -> None:
    container = summary(1)
    runtime = FakeImages([container])
    client = await served(gateway, docker_host, runtime)
    listed = await (await client.get("/api/v1/containers")).json()
    assert listed[0]["updateAvailable"] is None
    # Within the same second too: the rendered body is keyed by the checker's version.
    client.app[UPDATES].note_current("docker", container.full_id)
    listed = await (await client.get("/api/v1/containers")).json()
    assert listed[0]["updateAvailable"] is False
    inspected = await (await client.get(f"/api/v1/containers/{container.id}")).json()
    assert inspected["updateAvailable"] is False
    # A runtime that cannot tell digests says nothing in its inspect document.
    plain = await served(gateway, docker_host, FakeRuntime([container]))
    assert "updateAvailable" not in await (await plain.get(f"/api/v1/containers/{container.id}")).json()


def checker_tasks() -> list[str]:
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name() == "update-checker" and not t.done()]


async def test_checks_turned_off_contact_no_registry_and_every_value_is_null(
    gateway: ClientFactory, docker_host: str
) -> None:
    container = summary(1)
    runtime = FakeImages([container])
    runtime.registry = {"app:1": DIGEST_A}
    runtime.images = [ContainerImage(container.full_id, "app:1", DIGEST_B)]
    client = await served(gateway, docker_host, runtime, updates={"enabled": False})
    assert checker_tasks() == []
    client.app[UPDATES].note_current("docker", container.full_id)
    listed = await (await client.get("/api/v1/containers")).json()
    assert listed[0]["updateAvailable"] is None
    assert runtime.asked == []
    await served(gateway, docker_host, FakeImages([container]))
    assert checker_tasks() == ["update-checker"]


async def test_runtimes_that_cannot_create_answer_409(gateway: ClientFactory, docker_host: str) -> None:
    client = await served(gateway, docker_host, FakeRuntime([summary(1)]))
    resp = await client.post("/api/v1/containers", json={"name": "web", "image": "nginx"})
    await expect_error(resp, 409, "OPERATION_NOT_SUPPORTED")
    resp = await client.post(f"/api/v1/containers/{summary(1).id}/update")
    await expect_error(resp, 409, "OPERATION_NOT_SUPPORTED")


async def test_creating_and_updating_need_write_containers(gateway: ClientFactory, docker_host: str) -> None:
    remote = await gateway(security_config(docker_host), runtimes=registry_of(FakeRuntime([summary(1)])))
    reader = bearer(token(scopes=["read:containers", "read:engine"]))
    for path in ("/api/v1/containers", f"/api/v1/containers/{summary(1).id}/update"):
        resp = await remote.post(path, json={"name": "web", "image": "nginx"}, headers=reader)
        body = await expect_error(resp, 403, "FORBIDDEN")
        assert "write:containers" in body["message"]
        resp = await remote.post(path, json={"name": "web", "image": "nginx"})
        await expect_error(resp, 401, "UNAUTHORIZED")


async def test_a_foreign_page_cannot_create_or_update(gateway: ClientFactory, docker_host: str) -> None:
    runtime = FakeRuntime([summary(1, state=ContainerState.EXITED)])
    client = await served(gateway, docker_host, runtime)
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        for path in ("/api/v1/containers", f"/api/v1/containers/{summary(1).id}/update"):
            resp = await client.post(path, json={"name": "web", "image": "nginx"}, headers=headers)
            await expect_error(resp, 403, "ORIGIN_NOT_ALLOWED")
    assert list(runtime.containers) == [summary(1).full_id]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("updates: {interval: 5}\n", "updates.interval"),
        ("updates: {interval: .nan}\n", "updates.interval"),
        ("updates: {enabled: perhaps}\n", "updates.enabled"),
        ("updates: {concurrency: 0}\n", "updates.concurrency"),
        ("updates: {registry: x}\n", "updates.registry"),
    ],
)
def test_bad_update_settings_stop_the_start_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"{key}:" in str(info.value)
