"""Operation records on disk: what a crashed gateway leaves behind, pruning, and a store that fails."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from nekzus.config import ConfigError
from nekzus.http.app import create_app
from nekzus.keys import EVENT_BUS
from nekzus.operations.store import DB_FILE, OWNERS_DIR, OperationStore, StoredOperation
from nekzus.operations.tracker import OperationTracker
from nekzus.realtime.events import EventBus
from runtimes import ContainerRef
from tests.support.fakes import FakeRuntime, summary
from tests.support.gateway import Heard, make_config


def tracker_on(
    store: OperationStore, bus: EventBus | None = None, max_records: int = 100
) -> OperationTracker:
    return OperationTracker(bus or EventBus(), retention_seconds=600, max_records=max_records, store=store)


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[list[OperationStore]]:
    """Stores a test opens in tmp_path; those it did not close itself are closed afterwards."""
    opened: list[OperationStore] = []
    yield opened
    for store in opened:
        await store.close()


async def open_store(stores: list[OperationStore], data_dir: Path) -> OperationStore:
    store = await OperationStore.open(data_dir)
    stores.append(store)
    return store


async def crashed_with_pending_stop(data_dir: Path) -> str:
    """A gateway that accepted a stop, reached the runtime, then died: its record stays pending and
    nothing holds its lock any more (the store closes without the tracker marking anything)."""
    store = await OperationStore.open(data_dir)
    fake = FakeRuntime([summary(1)])
    fake.hold_actions = True
    tracker = tracker_on(store)
    await tracker.restore()
    op = tracker.submit(fake, ContainerRef(summary(1).full_id), "stop", container_id="c1", timeout=60)
    async with asyncio.timeout(5), fake.changed:
        await fake.changed.wait_for(lambda: fake.active == 1)  # the record is stored before this
    await store.close()
    await tracker._tasks.close()  # the process is gone: its task never ends the operation
    return op.id


async def test_a_dead_gateways_unfinished_operation_fails_as_interrupted(
    tmp_path: Path, stores: list[OperationStore]
) -> None:
    op_id = await crashed_with_pending_stop(tmp_path)
    owners = tmp_path / OWNERS_DIR
    (owners / f"{'d' * 32}.lock").touch()  # another gateway that died with nothing pending
    bus = EventBus()
    sub = Heard(bus)
    tracker = tracker_on(await open_store(stores, tmp_path), bus)
    await tracker.restore()
    assert len(list(owners.glob("*.lock"))) == 1  # only the running gateway's lock is left
    op = tracker.get(op_id)
    assert op is not None
    assert (op.state, op.error) == ("failed", "OPERATION_INTERRUPTED")
    assert "gateway restarted" in op.message
    assert op.finished_at is not None and op.done.is_set()
    assert sub.queue.empty()  # announced only once the hub listens
    tracker.announce_interrupted()
    event = await sub.get()
    assert event is not None and event.type == "container.stop.failed"
    assert event.data == {
        "containerId": "c1",
        "error": "OPERATION_INTERRUPTED",
        "message": op.message,
        "timestamp": op.finished_at,
        "operationId": op_id,
    }
    tracker.announce_interrupted()
    assert sub.queue.empty()  # once
    await tracker.close()

    # The verdict is stored: the next start reads it as it is and announces nothing.
    later = tracker_on(await open_store(stores, tmp_path), bus)
    await later.restore()
    again = later.get(op_id)
    assert again is not None and again.to_json() == op.to_json()
    later.announce_interrupted()
    assert sub.queue.empty()
    await later.close()


async def test_a_running_gateways_pending_operations_are_left_alone(
    tmp_path: Path, stores: list[OperationStore]
) -> None:
    fake = FakeRuntime([summary(1)])
    fake.hold_actions = True
    first = tracker_on(await open_store(stores, tmp_path))
    await first.restore()
    op = first.submit(fake, ContainerRef(summary(1).full_id), "stop", container_id="c1", timeout=60)
    async with asyncio.timeout(5), fake.changed:
        await fake.changed.wait_for(lambda: fake.active == 1)
    # A second gateway on the same data_dir: the first still holds its lock.
    bus = EventBus()
    sub = Heard(bus)
    second = tracker_on(await open_store(stores, tmp_path), bus)
    await second.restore()
    assert second.get(op.id) is None
    second.announce_interrupted()
    assert sub.queue.empty()
    assert op.state == "pending"
    fake.release.set()
    async with asyncio.timeout(5):
        await op.done.wait()
    assert op.state == "completed"
    await first.close()
    await second.close()


async def test_the_record_is_stored_before_its_action_reaches_the_runtime(
    tmp_path: Path, stores: list[OperationStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await open_store(stores, tmp_path)
    tracker = tracker_on(store, EventBus())
    await tracker.restore()
    # The first save (the accepted record) is held until the test lets it go.
    held: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    save = store.save

    async def after_release(written: asyncio.Future[None]) -> None:
        await held
        await written

    def held_save(record: StoredOperation) -> asyncio.Future[None]:
        written = save(record)
        return written if held.done() else asyncio.ensure_future(after_release(written))

    monkeypatch.setattr(store, "save", held_save)
    fake = FakeRuntime([summary(1)])
    op = tracker.submit(fake, ContainerRef(summary(1).full_id), "restart", container_id="c1", timeout=1)

    async def acted_on() -> None:
        async with fake.changed:
            await fake.changed.wait()

    acted = asyncio.ensure_future(acted_on())
    done, _ = await asyncio.wait({acted}, timeout=0.5)  # bounded: the action must not come
    assert not done and fake.timeouts == []
    held.set_result(None)
    async with asyncio.timeout(5):
        await op.done.wait()
    assert fake.timeouts == [("fake-1", 1)]
    acted.cancel()
    await tracker.close()


async def test_the_outcome_is_stored_before_its_event_is_published(
    tmp_path: Path, stores: list[OperationStore]
) -> None:
    bus = EventBus()
    sub = Heard(bus)
    tracker = tracker_on(await open_store(stores, tmp_path), bus)
    await tracker.restore()
    fake, ref = FakeRuntime([summary(1)]), ContainerRef(summary(1).full_id)
    op = tracker.submit(fake, ref, "restart", container_id="c1", timeout=1)
    async with asyncio.timeout(5):
        event = await sub.get()
    assert event is not None and event.type == "container.restart.completed"
    # Read by another connection the moment the event is out.
    with sqlite3.connect(tmp_path / DB_FILE) as db:
        row = db.execute("SELECT state, finished_at FROM operations WHERE id = ?", (op.id,)).fetchone()
    assert row == ("completed", op.finished_at)
    await tracker.close()


async def test_retention_and_max_records_apply_to_stored_records(
    tmp_path: Path, stores: list[OperationStore]
) -> None:
    store = await open_store(stores, tmp_path)
    old = StoredOperation("old", "c", "docker", "", "stop", "completed", None, "done", 1_000, 1_000)
    await store.save_now([old])
    fake = FakeRuntime([summary(n) for n in range(150)])
    tracker = tracker_on(store, max_records=100)
    await tracker.restore()
    assert tracker.get("old") is None  # finished long before the retention
    ops = [
        tracker.submit(fake, ContainerRef(summary(n).full_id), "restart", container_id=str(n), timeout=1)
        for n in range(150)
    ]
    async with asyncio.timeout(10):
        await asyncio.gather(*(op.done.wait() for op in ops))
    # The next submission prunes the finished records over the cap.
    ops.append(tracker.submit(fake, ContainerRef(summary(0).full_id), "start", container_id="0", timeout=1))
    async with asyncio.timeout(10):
        await ops[-1].done.wait()
    await tracker.close()
    await store.close()
    stores.remove(store)

    with sqlite3.connect(tmp_path / DB_FILE) as db:
        stored = {row[0] for row in db.execute("SELECT id FROM operations")}
    assert "old" not in stored
    assert ops[0].id not in stored  # pruned at run time, from the disk too
    assert len(stored) <= 100

    reopened = tracker_on(await open_store(stores, tmp_path), max_records=100)
    await reopened.restore()
    assert reopened.get(ops[-1].id) is not None  # the newest are kept
    assert len(reopened) <= 100
    await reopened.close()


async def test_clean_shutdown_keeps_its_own_message(tmp_path: Path, stores: list[OperationStore]) -> None:
    fake = FakeRuntime([summary(1)])
    fake.hold_actions = True
    store = await open_store(stores, tmp_path)
    tracker = tracker_on(store)
    await tracker.restore()
    op = tracker.submit(fake, ContainerRef(summary(1).full_id), "stop", container_id="c1", timeout=60)
    async with asyncio.timeout(5), fake.changed:
        await fake.changed.wait_for(lambda: fake.active == 1)
    await tracker.close()
    await store.close()
    stores.remove(store)
    assert (op.state, op.error) == ("failed", "CONTAINER_STOP_FAILED")

    bus = EventBus()
    sub = Heard(bus)
    after = tracker_on(await open_store(stores, tmp_path), bus)
    await after.restore()
    stored = after.get(op.id)
    assert stored is not None and stored.to_json() == op.to_json()
    assert "shut down" in stored.message
    after.announce_interrupted()
    assert sub.queue.empty()
    await after.close()


async def test_a_store_that_cannot_be_used_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / DB_FILE).write_bytes(b"this is not a database, " * 100)
    with pytest.raises(ConfigError, match=r"server\.data_dir"):
        await OperationStore.open(tmp_path)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(ConfigError, match=r"server\.data_dir"):
        await OperationStore.open(not_a_dir)


async def test_a_write_failure_at_run_time_is_logged_not_fatal(
    tmp_path: Path, stores: list[OperationStore], caplog: pytest.LogCaptureFixture
) -> None:
    bus = EventBus()
    sub = Heard(bus)
    tracker = tracker_on(await open_store(stores, tmp_path), bus)
    await tracker.restore()
    with sqlite3.connect(tmp_path / DB_FILE) as db:
        db.execute("DROP TABLE operations")
    with caplog.at_level(logging.ERROR, logger="nekzus.operations.store"):
        fake, ref = FakeRuntime([summary(1)]), ContainerRef(summary(1).full_id)
        op = tracker.submit(fake, ref, "restart", container_id="c1", timeout=1)
        async with asyncio.timeout(5):
            event = await sub.get()
    assert event is not None and event.type == "container.restart.completed"
    assert op.state == "completed"
    assert "cannot be stored" in caplog.text
    await tracker.close()


async def test_the_gateway_announces_interrupted_operations_once_the_hub_listens(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    op_id = await crashed_with_pending_stop(tmp_path)
    config = make_config(
        f"unix://{tmp_path}/no-daemon.sock", server={"data_dir": str(tmp_path), "tls": {"mode": "off"}}
    )
    app = create_app(config)
    heard: list[Heard] = []

    async def last_to_start(app: web.Application) -> AsyncIterator[None]:
        # Starts after every context of the gateway's own, the hub included.
        heard.append(Heard(app[EVENT_BUS]))
        yield

    app.cleanup_ctx.append(last_to_start)
    client = await aiohttp_client(app)
    try:
        async with asyncio.timeout(5):
            event = await heard[0].get()
        assert event is not None and event.type == "container.stop.failed"
        assert (event.data["operationId"], event.data["error"]) == (op_id, "OPERATION_INTERRUPTED")
        resp = await client.get(f"/api/v1/operations/{op_id}")
        assert resp.status == 200
        assert (await resp.json())["error"] == "OPERATION_INTERRUPTED"
    finally:
        await client.close()
