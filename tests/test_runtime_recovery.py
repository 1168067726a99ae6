"""The gateway keeps running while its Docker daemon goes away, and recovers when it returns."""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from pathlib import Path

import pytest

from .conftest import ROOT, ClientFactory, make_config, start_sandbox, stop_sandbox


@pytest.fixture
def own_daemon_dir() -> Path:
    # A short path: unix socket paths are limited to 108 bytes.
    return ROOT / ".sandbox" / f"recovery-{uuid.uuid4().hex[:6]}"


async def test_daemon_going_away_and_coming_back(
    gateway: ClientFactory, own_daemon_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nekzus.monitor")
    host = await asyncio.to_thread(start_sandbox, own_daemon_dir)
    try:
        client = await gateway(make_config(host, runtimes={"docker": {"host": host, "health_interval": 0.2}}))
        assert (await client.get("/api/v1/containers")).status == 200
        assert (await client.get("/readyz")).status == 200

        await asyncio.to_thread(stop_sandbox, own_daemon_dir)
        resp = await client.get("/api/v1/containers")
        assert resp.status == 503
        assert (await resp.json())["error"] == "RUNTIME_UNAVAILABLE"
        assert (await client.get("/readyz")).status == 503
        assert (await (await client.get("/api/v1/health")).json())["status"] == "unhealthy"

        await asyncio.to_thread(start_sandbox, own_daemon_dir)
        # The first request after the daemon is back already succeeds: no restart, no retry loop.
        resp = await client.get("/api/v1/containers?all=true")
        assert resp.status == 200, await resp.text()
        assert (await client.get("/readyz")).status == 200
        health = await (await client.get("/api/v1/health")).json()
        assert health["status"] == "healthy"
        assert health["runtimes"]["docker"]["apiVersion"]
        messages = [r.getMessage() for r in caplog.records if r.name == "nekzus.monitor"]
        assert any("unavailable" in m for m in messages)
        assert any("available again" in m for m in messages)
    finally:
        await asyncio.to_thread(stop_sandbox, own_daemon_dir)
        await asyncio.to_thread(shutil.rmtree, own_daemon_dir, True)
