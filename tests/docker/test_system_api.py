"""The host routes against the real Engine: ``GET /api/v1/system`` (what the Engine's machine is)
and ``GET /api/v1/system/stats`` (its load, disk and ``docker system df`` space), their scope
(``read:engine``), bad input, a dead Engine, and concurrent callers sharing one disk-usage walk.

The daemon is shared with other test runs, so its counts are checked against what this test
created (at least) and against themselves (the parts add up), never against exact totals.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from runtimes import factory
from runtimes.registry import RuntimeRegistry
from tests.support.docker_engine import Containers
from tests.support.gateway import ClientFactory, make_config
from tests.unit.test_errors import expect
from tests.unit.test_security import bearer, security_config, token

EVIL = "https://evil.example"


def registry(host: str) -> RuntimeRegistry:
    runtimes = RuntimeRegistry("docker")
    runtimes.add(factory.docker_runtime(host))
    return runtimes


async def test_system_describes_the_engine_and_counts_its_objects(
    client: TestClient[Any, Any], docker: aiodocker.Docker, containers: Containers
) -> None:
    await containers.create(cmd=["sleep", "60"])
    await containers.create(start=False)
    resp = await client.get("/api/v1/system")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    version = await docker.version()
    assert body["runtime"] == "docker"
    assert body["engineVersion"] == version["Version"] and body["apiVersion"] == version["ApiVersion"]
    for field in ("os", "kernel", "architecture", "storageDriver", "dockerRootDir"):
        assert isinstance(body[field], str) and body[field], field
    assert isinstance(body["cpus"], int) and body["cpus"] >= 1
    assert isinstance(body["memoryTotal"], int) and body["memoryTotal"] > 0
    counts = body["containers"]
    assert set(counts) == {"total", "running", "paused", "stopped"}
    assert counts["total"] >= 2 and counts["running"] >= 1 and counts["stopped"] >= 1
    assert counts["total"] == counts["running"] + counts["paused"] + counts["stopped"]
    assert body["images"] >= 1 and isinstance(body["volumes"], int) and body["volumes"] >= 0
    assert "platform" not in body and "nodes" not in body


async def test_stats_measure_the_local_host_and_the_engines_space(
    client: TestClient[Any, Any], containers: Containers
) -> None:
    await containers.create(cmd=["sleep", "60"])
    before = int(time.time())
    resp = await client.get("/api/v1/system/stats")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["runtime"] == "docker" and before <= body["timestamp"] <= int(time.time())
    cpu, memory, disk = body["cpu"], body["memory"], body["disk"]
    assert cpu["cores"] >= 1
    # The Engine is on a unix socket here: the gateway measures the machine itself.
    second = await (await client.get("/api/v1/system/stats")).json()
    for sample in (cpu, second["cpu"]):
        assert sample["percent"] is None or 0 <= sample["percent"] <= 100
    assert 0 < memory["used"] <= memory["total"] and 0 < memory["percent"] <= 100
    assert len(body["load"]) == 3 and all(load >= 0 for load in body["load"])
    info = await (await client.get("/api/v1/system")).json()
    assert disk["path"] == info["dockerRootDir"]
    assert 0 < disk["used"] <= disk["total"] and 0 < disk["percent"] <= 100
    space = body["space"]
    assert set(space) == {"images", "containers", "volumes", "buildCache"}
    for entry in space.values():
        assert set(entry) == {"count", "size", "reclaimable"}
        assert 0 <= entry["reclaimable"] <= max(entry["size"], 0) or entry["size"] == 0
    assert space["images"]["count"] >= 1 and space["images"]["size"] > 0
    assert space["containers"]["count"] >= 1
    assert "metrics" not in body


class CountingEngineProxy:
    """A proxy in front of the Engine, on a unix socket and on a loopback TCP port, that counts
    ``/system/df`` requests and holds each one until ``release`` is set, so a test can keep a
    walk in flight."""

    def __init__(self, engine_socket: str, directory: Path) -> None:
        self.engine_socket = engine_socket
        self.path = directory / "engine.sock"
        self.port = 0
        self.df_requests = 0
        self.df_seen = asyncio.Event()
        self.release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.path}"

    async def __aenter__(self) -> CountingEngineProxy:
        self._session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=self.engine_socket))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        # Handlers still streaming (the event stream) are cancelled when the proxy stops.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.UnixSite(self._runner, str(self.path)).start()
        tcp = web.TCPSite(self._runner, "127.0.0.1", 0)
        await tcp.start()
        self.port = self._runner.addresses[-1][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self._runner is not None and self._session is not None
        await self._session.close()  # ends the streams still open, so their handlers end too
        await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        if request.path.endswith("/system/df"):
            self.df_requests += 1
            self.df_seen.set()
            await self.release.wait()
        async with self._session.request(
            request.method, f"http://docker{request.path_qs}", data=await request.read()
        ) as upstream:
            # Streamed through as it comes: the gateway's event stream never ends.
            response = web.StreamResponse(status=upstream.status)
            response.content_type = upstream.content_type
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response


@pytest.fixture
async def proxy(docker_host: str) -> AsyncIterator[CountingEngineProxy]:
    # A short directory: a unix socket's path is limited to about 100 bytes.
    directory = Path(tempfile.mkdtemp(prefix="nkz-"))
    try:
        async with CountingEngineProxy(docker_host.removeprefix("unix://"), directory) as running:
            yield running
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def test_concurrent_stats_share_one_disk_usage_walk(
    gateway: ClientFactory, docker_host: str, proxy: CountingEngineProxy
) -> None:
    client = await gateway(make_config(docker_host), runtimes=registry(proxy.host))
    calls = [asyncio.create_task(client.get("/api/v1/system/stats")) for _ in range(5)]
    async with asyncio.timeout(15):
        await proxy.df_seen.wait()
    # Every caller waits for the one walk under way; none starts its own.
    done, _ = await asyncio.wait(calls, timeout=0.5)
    assert not done and proxy.df_requests == 1
    proxy.release.set()
    async with asyncio.timeout(30):
        responses = await asyncio.gather(*calls)
    bodies = [await r.json() for r in responses]
    assert all(r.status == 200 for r in responses)
    assert all(b["space"] == bodies[0]["space"] for b in bodies)
    # Within SPACE_SECONDS the figures are reused.
    again = await (await client.get("/api/v1/system/stats")).json()
    assert again["space"] == bodies[0]["space"] and proxy.df_requests == 1
    await client.close()  # before the proxy it streams events through


@pytest.mark.parametrize("path", ["/api/v1/system", "/api/v1/system/stats"])
async def test_read_engine_is_the_scope(gateway: ClientFactory, docker_host: str, path: str) -> None:
    remote = await gateway(security_config(docker_host))
    await expect(await remote.get(path), 401, "UNAUTHORIZED")
    for scopes in (["read:containers"], ["read:containers", "write:containers", "write:engine"]):
        body = await expect(await remote.get(path, headers=bearer(token(scopes=scopes))), 403, "FORBIDDEN")
        assert "read:engine" in body["message"]
    for scopes in (["read:engine"], ["read:*"], ["*"]):
        resp = await remote.get(path, headers=bearer(token(scopes=scopes)))
        assert resp.status == 200, await resp.text()
        assert "RateLimit-Remaining" in resp.headers  # counted in the containers pool


async def test_a_foreign_page_gets_no_cors_and_may_not_post(gateway: ClientFactory, docker_host: str) -> None:
    config = make_config(
        docker_host, server={"tls": {"mode": "off"}, "cors_origins": ["https://app.example.com"]}
    )
    client = await gateway(config)
    for path in ("/api/v1/system", "/api/v1/system/stats"):
        resp = await client.get(path, headers={"Origin": EVIL})
        assert "Access-Control-Allow-Origin" not in resp.headers
        listed = await client.get(path, headers={"Origin": "https://app.example.com"})
        assert listed.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        await expect(await client.post(path, headers={"Origin": EVIL}), 403, "ORIGIN_NOT_ALLOWED")
        await expect(await client.post(path), 405, "METHOD_NOT_ALLOWED")


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/v1/system?runtime=kubernetes", 400, "INVALID_RUNTIME"),
        ("/api/v1/system/stats?runtime=..", 400, "INVALID_RUNTIME"),
        ("/api/v1/system?runtime=%2F", 400, "INVALID_RUNTIME"),
        ("/api/v1/system/stats?runtime=" + "d" * 4000, 400, "INVALID_RUNTIME"),
        ("/api/v1/system/stats?runtime=NaN", 400, "INVALID_RUNTIME"),
        ("/api/v1/system/..%2Fstats", 404, "NOT_FOUND"),
        ("/api/v1/system%2Fstats", 404, "NOT_FOUND"),
        ("/api/v1/system/stats/" + "x" * 300, 404, "NOT_FOUND"),
    ],
)
async def test_bad_input_is_refused(client: TestClient[Any, Any], path: str, status: int, code: str) -> None:
    body = await expect(await client.get(path), status, code)
    assert "Traceback" not in body["message"]


async def test_a_dead_engine_is_runtime_unavailable(gateway: ClientFactory, tmp_path: Path) -> None:
    host = f"unix://{tmp_path}/gone.sock"
    client = await gateway(make_config(host), runtimes=registry(host))
    for path in ("/api/v1/system", "/api/v1/system/stats"):
        body = await expect(await client.get(path), 503, "RUNTIME_UNAVAILABLE")
        assert "gone.sock" in body["message"]


async def test_a_remote_engine_has_sizes_but_no_host_measurements(
    gateway: ClientFactory, docker_host: str, proxy: CountingEngineProxy
) -> None:
    # The same Engine reached over TCP, as a gateway on another machine would: the gateway cannot
    # measure that machine, so its load is null, while the Engine's own figures remain.
    proxy.release.set()
    host = f"tcp://127.0.0.1:{proxy.port}"
    client = await gateway(make_config(docker_host), runtimes=registry(host))
    resp = await client.get("/api/v1/system/stats")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["cpu"]["percent"] is None and body["cpu"]["cores"] >= 1
    assert body["memory"]["used"] is None and body["memory"]["percent"] is None
    assert body["memory"]["total"] > 0
    assert body["load"] is None and body["disk"] is None
    assert body["space"]["images"]["count"] >= 1
    await client.close()  # before the proxy it streams events through
