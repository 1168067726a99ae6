"""The pull primitive against the real Engine and the local registry: the image, its digest, and
progress that reaches WebSocket readers with the operation's id and adds up."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from nekzus.keys import OPERATIONS, REGISTRY
from nekzus.operations.pulls import MAX_PER_SECOND, PROGRESS_EVENT, pull_events
from nekzus.operations.tracker import JobProgress, JobText
from runtimes import NotFound, OperationFailed
from runtimes.docker.runtime import DockerRuntime
from runtimes.engine.images import ImageStore, PullProgress
from tests.support.registry import LocalRegistry
from tests.support.wsclient import WS

PULL = JobText(accepted="Image pull initiated", past="pulled", verb="pull")


@pytest.fixture
def fresh(registry: LocalRegistry) -> Iterator[tuple[str, str]]:
    """A reference of this test's own on the registry, holding an image the Engine has no layer of
    (so a pull downloads it); the reference and its digest. The pulled image is removed afterwards."""
    reference = registry.reference(f"nekzus/pull-{uuid.uuid4().hex[:10]}", "1")
    digest = registry.push_changed(reference)
    try:
        yield reference, digest
    finally:
        registry.remove_local(reference)


def adds_up(final: Mapping[str, Any]) -> None:
    layers, sizes = final["layers"], final["bytes"]
    assert layers["total"] >= 1 and layers["done"] == layers["total"]
    assert sizes["total"] > 0 and sizes["done"] == sizes["total"]


async def test_a_pull_downloads_every_layer_and_answers_id_and_digest(
    runtime: DockerRuntime, fresh: tuple[str, str]
) -> None:
    reference, digest = fresh
    states: list[PullProgress] = []
    assert isinstance(runtime, ImageStore)
    pulled = await runtime.pull_image(reference, states.append)
    assert pulled.reference == reference and pulled.digest == digest
    assert pulled.id.startswith("sha256:") and len(pulled.id) == 71
    assert states[0].status == "pulling" and states[-1].status == "complete"
    assert "downloading" in {s.status for s in states}
    final = states[-1]
    assert final.layers_done == final.layers_total >= 1
    assert final.bytes_done == final.bytes_total > 0
    # Pulling again finds it up to date: same image, nothing downloaded, still a final state.
    again: list[PullProgress] = []
    assert await runtime.pull_image(reference, again.append) == pulled
    assert again[-1].status == "complete" and again[-1].bytes_total == 0


async def test_a_reference_without_tag_pulls_latest(runtime: DockerRuntime, registry: LocalRegistry) -> None:
    repository = registry.reference(f"nekzus/latest-{uuid.uuid4().hex[:10]}", "latest")
    digest = registry.push_changed(repository)
    try:
        pulled = await runtime.pull_image(repository.removesuffix(":latest"), lambda state: None)
        assert pulled.reference == repository and pulled.digest == digest
        by_digest = await runtime.pull_image(f"{repository.removesuffix(':latest')}@{digest}", lambda s: None)
        assert by_digest.id == pulled.id
    finally:
        registry.remove_local(repository, f"{repository.removesuffix(':latest')}@{digest}")


async def test_an_unknown_image_is_not_found_and_a_dead_registry_is_named(
    runtime: DockerRuntime, registry: LocalRegistry
) -> None:
    states: list[PullProgress] = []
    missing = registry.reference("nekzus/never-pushed", "1")
    with pytest.raises(NotFound) as not_found:
        await runtime.pull_image(missing, states.append)
    assert (not_found.value.resource, not_found.value.name) == ("image", missing)
    assert states[-1].status == "failed"
    with pytest.raises(NotFound):
        await runtime.pull_image(registry.reference("nekzus/busybox", "no-such-tag"), states.append)
    with pytest.raises(OperationFailed) as unreachable:
        await runtime.pull_image("127.0.0.1:1/nekzus/busybox:1", states.append)
    assert unreachable.value.detail == "registry 127.0.0.1:1 is not reachable from the Engine"


async def test_progress_reaches_websocket_readers_with_the_operation_id(
    client: TestClient[Any, Any], fresh: tuple[str, str]
) -> None:
    reference, digest = fresh
    ws = WS(await client.ws_connect("/api/v1/ws"))
    await ws.until("hello")
    runtime = client.app[REGISTRY].get()
    assert isinstance(runtime, DockerRuntime)

    async def work(progress: JobProgress) -> Mapping[str, Any]:
        pulled = await runtime.pull_image(reference, pull_events(progress, reference))
        return {"imageId": pulled.id, "digest": pulled.digest}

    began = time.monotonic()
    op = client.app[OPERATIONS].submit_job(
        runtime=runtime.name, resource="image", action="pull", target=reference, work=work, text=PULL
    )
    done = await ws.until("image.pull.completed", timeout=60, operationId=op.id)
    took = time.monotonic() - began
    assert done["data"]["digest"] == digest and done["data"]["imageId"].startswith("sha256:")
    progress = [m["data"] for m in ws.seen if m["type"] == PROGRESS_EVENT]
    assert progress and all(p["operationId"] == op.id and p["image"] == reference for p in progress)
    assert progress[-1]["status"] == "complete"
    adds_up(progress[-1])
    # Throttled: at most four a second (plus the first and the final state), not one per Engine line.
    assert len(progress) <= MAX_PER_SECOND * took + 2
    async with asyncio.timeout(5):
        await op.done.wait()
    await ws.ws.close()
