"""Webhook deliveries pending in a real ``nekzus serve`` killed with SIGKILL are delivered by the
next one, on the same data_dir, with the same ids and in the same order."""

from __future__ import annotations

import asyncio
import itertools
import signal
import sqlite3
from pathlib import Path

import aiohttp

from nekzus.notify.webhook_store import DB_FILE
from tests.docker.test_operations_real import Serve, serve
from tests.support.docker_engine import Containers
from tests.support.receiver import SECRET, Receiver, receiver

__all__ = ["receiver", "serve"]  # the fixtures this module uses

LOOPBACK_ALLOWED = {
    "NEKZUS_WEBHOOK_DELIVERY__ALLOW_NETWORKS": '["127.0.0.0/8"]',
    # Long waits between attempts: what is pending stays pending until the kill.
    "NEKZUS_WEBHOOK_DELIVERY__INITIAL_BACKOFF": "60",
    "NEKZUS_WEBHOOK_DELIVERY__MAX_BACKOFF": "60",
}


def stored(db: Path) -> list[tuple[str, bytes]]:
    """The deliveries on disk (id, body), in queue order, read as another process would."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        return list(connection.execute("SELECT id, body FROM deliveries ORDER BY rowid"))


async def until_stored(db: Path, *needles: bytes) -> list[str]:
    """The ids on disk once a delivery holding each of ``needles`` is committed: a write of another
    process is no event here, so the file is read every 20 ms, within a deadline."""
    async with asyncio.timeout(20):
        for _ in itertools.count():
            rows = await asyncio.to_thread(stored, db)
            if all(sum(needle in body for _, body in rows) >= needles.count(needle) for needle in needles):
                return [delivery_id for delivery_id, _ in rows]
            await asyncio.sleep(0.02)
    raise AssertionError("unreachable")


async def test_pending_deliveries_survive_a_kill_9(
    serve: tuple[Serve, list[asyncio.subprocess.Process]],
    receiver: Receiver,
    containers: Containers,
    tmp_path: Path,
) -> None:
    start, processes = serve
    receiver.down = True
    url = await start(**LOOPBACK_ALLOWED)
    async with aiohttp.ClientSession() as session:
        hook = {"name": "ops", "url": receiver.url, "events": ["container.state"], "secret": SECRET}
        async with session.post(f"{url}/api/v1/webhooks", json=hook) as resp:
            assert resp.status == 201, await resp.text()
        async with session.post(f"{url}/api/v1/webhooks/ops/test") as resp:
            assert resp.status == 202
        made = await containers.create()  # the Engine's events of it, as the gateway reports them
        for _ in range(2):
            async with session.post(f"{url}/api/v1/webhooks/ops/test") as resp:
                assert resp.status == 202
        await receiver.wait_for(1, timeout=20)
        test, container = b'"webhook.test"', made["Id"][:12].encode()
        pending = await until_stored(tmp_path / "data" / DB_FILE, test, test, test, container)
        processes[0].send_signal(signal.SIGKILL)
        await processes[0].wait()
        tried = len(receiver.received)

        receiver.down = False
        url = await start(**LOOPBACK_ALLOWED)
        got = await receiver.wait_for(tried + len(pending), timeout=30)
        after = [r for r in got[tried:] if r.headers["webhook-id"] in pending]
        # Every delivery pending at the kill, in its order; the first was tried before, same id.
        assert [r.headers["webhook-id"] for r in after] == pending
        assert got[0].headers["webhook-id"] == pending[0]
        bodies = [r.verified() for r in after]
        assert [b["type"] for b in bodies].count("webhook.test") == 3
        assert any(b["data"].get("containerId") == made["Id"][:12] for b in bodies)
        async with session.get(f"{url}/api/v1/webhooks/ops") as resp:
            shown = await resp.json()
        assert shown["source"] == "api" and "secret" not in shown
