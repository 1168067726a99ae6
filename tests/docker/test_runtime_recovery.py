"""The gateway keeps running while its Docker daemon goes away, and recovers when it returns."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from nekzus.keys import WATCHERS
from tests.support.docker_engine import QUICK_STOP, start_sandbox, stop_sandbox
from tests.support.gateway import ClientFactory, make_config
from tests.support.wsclient import WS


@pytest.fixture
def own_daemon_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A short path (not the test's own tmp_path, named after the test): unix socket paths are
    # limited to 108 bytes.
    return tmp_path_factory.mktemp("recovery")


async def test_daemon_going_away_and_coming_back(
    gateway: ClientFactory, own_daemon_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nekzus.realtime.monitor")
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
        messages = [r.getMessage() for r in caplog.records if r.name == "nekzus.realtime.monitor"]
        assert any("unavailable" in m for m in messages)
        assert any("available again" in m for m in messages)
    finally:
        await asyncio.to_thread(stop_sandbox, own_daemon_dir)
        await asyncio.to_thread(shutil.rmtree, own_daemon_dir, True)


async def test_daemon_restart_resumes_log_streams_and_events_recover(
    gateway: ClientFactory, own_daemon_dir: Path
) -> None:
    # live-restore: the containers keep running while the daemon is away, so the log stream
    # breaks because of the daemon, not because its container stopped.
    host = await asyncio.to_thread(start_sandbox, own_daemon_dir, "--live-restore")
    config: dict[str, Any] = {
        "Image": "nekzus-test:busybox",
        "Cmd": QUICK_STOP,
        "HostConfig": {"NetworkMode": "none"},
    }
    try:
        client = await gateway(make_config(host, runtimes={"docker": {"host": host, "health_interval": 0.2}}))
        async with aiodocker.Docker(url=host) as docker:
            first = await docker.containers.run(config)
        for watcher in client.app[WATCHERS]:
            await asyncio.wait_for(watcher.watching.wait(), 15)
        ws = WS(await client.ws_connect("/api/v1/ws"))
        await ws.until("hello")
        await ws.send("container.logs.subscribe", containerId=first.id[:12], tail=0)
        await ws.until("container.logs.started")

        # The log stream waits for the daemon and resumes once it is back, saying so.
        await asyncio.to_thread(stop_sandbox, own_daemon_dir)
        await asyncio.to_thread(start_sandbox, own_daemon_dir, "--live-restore")
        await ws.until("container.logs.resumed", containerId=first.id[:12], timeout=60)
        assert not any(m["type"] in ("container.logs.ended", "container.logs.error") for m in ws.seen)
        async with aiodocker.Docker(url=host) as docker:
            second = await docker.containers.run(config)
        # The watcher reopens the event stream by itself and reports the new container.
        state = await ws.until("container.state", containerId=second.id[:12], state="running", timeout=30)
        assert state["data"]["runtime"] == "docker"
    finally:
        # Live-restored containers outlive their daemon: remove them before it stops.
        await asyncio.to_thread(start_sandbox, own_daemon_dir, "--live-restore")
        async with aiodocker.Docker(url=host) as docker:
            for made in await docker.containers.list(all=True):
                await made.delete(force=True)
        await asyncio.to_thread(stop_sandbox, own_daemon_dir)
        await asyncio.to_thread(shutil.rmtree, own_daemon_dir, True)
