"""Jobs: long tasks other than a lifecycle action, with progress events, their own codes, ordering
and records that outlive the gateway."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nekzus.operations.store import DB_FILE, OperationStore
from nekzus.operations.tracker import JobProgress, JobText, OperationTracker
from nekzus.realtime.events import Event, EventBus
from runtimes import InUse, OperationFailed

PULL = JobText(accepted="Image pull initiated", past="pulled", verb="pull")


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event: Event) -> None:
        self.events.append((event.type, dict(event.data)))


def bus_and_events() -> tuple[EventBus, Recorder]:
    bus = EventBus()
    recorder = Recorder()
    bus.add_listener(recorder)
    return bus, recorder


async def test_a_job_publishes_progress_and_completion_with_its_operation_id() -> None:
    bus, heard = bus_and_events()
    tracker = OperationTracker(bus, retention_seconds=60, max_records=10)

    async def work(progress: JobProgress) -> Mapping[str, Any]:
        progress.publish("image.pull.progress", {"image": "busybox:1", "current": 5, "total": 10})
        return {"imageId": "sha256:abc"}

    op = tracker.submit_job(
        runtime="docker", resource="image", action="pull", target="busybox:1", work=work, text=PULL
    )
    assert op.to_json()["state"] == "pending"
    assert op.to_json()["message"] == "Image pull initiated"
    async with asyncio.timeout(5):
        await op.done.wait()
    assert heard.events[0] == (
        "image.pull.progress",
        {"image": "busybox:1", "current": 5, "total": 10, "operationId": op.id},
    )
    kind, data = heard.events[1]
    assert kind == "image.pull.completed"
    assert data["resource"] == "image" and data["target"] == "busybox:1"
    assert data["status"] == "pulled" and data["imageId"] == "sha256:abc" and data["operationId"] == op.id
    assert op.to_json()["message"] == "Image pulled successfully"
    assert op.to_json()["imageId"] == "sha256:abc"
    await tracker.close()


async def test_a_failed_job_has_its_errors_own_code_else_its_fallback() -> None:
    bus, heard = bus_and_events()
    tracker = OperationTracker(bus, retention_seconds=60, max_records=10)

    async def in_use(progress: JobProgress) -> None:
        raise InUse("image used", detail="Container web uses it", resource="image")

    async def broken(progress: JobProgress) -> None:
        raise OperationFailed("daemon said no", detail="no space left")

    first = tracker.submit_job(
        runtime="docker", resource="image", action="remove", target="a", work=in_use, text=PULL
    )
    second = tracker.submit_job(
        runtime="docker", resource="image", action="pull", target="b", work=broken, text=PULL
    )
    async with asyncio.timeout(5):
        await asyncio.gather(first.done.wait(), second.done.wait())
    assert (first.error, first.message) == ("IMAGE_IN_USE", "Container web uses it")
    assert (second.error, second.message) == ("IMAGE_PULL_FAILED", "Failed to pull image: no space left")
    assert [kind for kind, _ in heard.events] == ["image.remove.failed", "image.pull.failed"]
    await tracker.close()


async def test_jobs_with_one_key_run_in_the_order_they_were_accepted() -> None:
    tracker = OperationTracker(EventBus(), retention_seconds=60, max_records=10)
    release = asyncio.Event()
    order: list[str] = []

    def step(name: str, wait: bool) -> Any:
        async def work(progress: JobProgress) -> None:
            if wait:
                await release.wait()
            order.append(name)

        return work

    first = tracker.submit_job(
        runtime="docker",
        resource="container",
        action="remove",
        target="x",
        work=step("remove", True),
        text=PULL,
    )
    second = tracker.submit_job(
        runtime="docker",
        resource="container",
        action="create",
        target="y",
        key="x",
        work=step("create", False),
        text=PULL,
    )
    other = tracker.submit_job(
        runtime="docker",
        resource="container",
        action="create",
        target="z",
        work=step("other", False),
        text=PULL,
    )
    async with asyncio.timeout(5):
        await other.done.wait()
        assert order == ["other"]
        release.set()
        await asyncio.gather(first.done.wait(), second.done.wait())
    assert order == ["other", "remove", "create"]
    await tracker.close()


async def test_a_job_cut_short_by_a_crash_is_restored_as_interrupted_with_its_resource(
    tmp_path: Path,
) -> None:
    store = await OperationStore.open(tmp_path)
    tracker = OperationTracker(EventBus(), retention_seconds=60, max_records=10, store=store)
    started = asyncio.Event()

    async def hangs(progress: JobProgress) -> None:
        started.set()
        await asyncio.Event().wait()

    op = tracker.submit_job(
        runtime="docker", resource="image", action="pull", target="busybox:1", work=hangs, text=PULL
    )
    async with asyncio.timeout(5):
        await started.wait()
    await store.close()
    await tracker._tasks.close()  # the process is gone: nothing marks the record

    store = await OperationStore.open(tmp_path)
    bus, heard = bus_and_events()
    restored = OperationTracker(bus, retention_seconds=60, max_records=10, store=store)
    await restored.restore()
    restored.announce_interrupted()
    again = restored.get(op.id)
    assert again is not None
    assert again.to_json()["resource"] == "image" and again.to_json()["target"] == "busybox:1"
    assert again.error == "OPERATION_INTERRUPTED"
    assert heard.events[0][0] == "image.pull.failed"
    await restored.close()
    await store.close()


async def test_a_finished_jobs_result_outlives_the_gateway(tmp_path: Path) -> None:
    store = await OperationStore.open(tmp_path)
    tracker = OperationTracker(EventBus(), retention_seconds=60, max_records=10, store=store)

    async def creates(progress: JobProgress) -> Mapping[str, Any]:
        return {"containerId": "0123456789ab", "recreatedBy": None}

    op = tracker.submit_job(
        runtime="docker", resource="container", action="create", target="web", work=creates, text=PULL
    )
    async with asyncio.timeout(5):
        await op.done.wait()
    await tracker.close()
    await store.close()

    store = await OperationStore.open(tmp_path)
    restored = OperationTracker(EventBus(), retention_seconds=60, max_records=10, store=store)
    await restored.restore()
    again = restored.get(op.id)
    assert again is not None
    assert again.to_json()["containerId"] == "0123456789ab" and again.to_json()["recreatedBy"] is None
    await restored.close()
    await store.close()


async def test_a_store_an_older_gateway_made_gains_the_result_column(tmp_path: Path) -> None:
    """Version 1 of the table had no ``result``: its records load, with an empty result."""
    db = sqlite3.connect(tmp_path / DB_FILE)
    db.execute(
        "CREATE TABLE operations (id TEXT PRIMARY KEY, container_id TEXT NOT NULL, runtime TEXT NOT NULL, "
        "namespace TEXT NOT NULL, action TEXT NOT NULL, state TEXT NOT NULL, error TEXT, "
        "message TEXT NOT NULL, started_at INTEGER NOT NULL, finished_at INTEGER, owner TEXT NOT NULL)"
    )
    now = int(time.time())
    db.execute(
        "INSERT INTO operations VALUES ('old', 'c1', 'docker', '', 'stop', 'completed', NULL, "
        "'Container stopped successfully', ?, ?, 'gone')",
        (now, now),
    )
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    store = await OperationStore.open(tmp_path)
    tracker = OperationTracker(EventBus(), retention_seconds=60, max_records=10, store=store)
    await tracker.restore()
    old = tracker.get("old")
    assert old is not None and old.to_json()["containerId"] == "c1" and old.state == "completed"
    await tracker.close()
    await store.close()
    db = sqlite3.connect(tmp_path / DB_FILE)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    db.close()
