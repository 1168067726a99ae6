"""The tests of url fields that need the private Docker Engine (docker tier); the story and the other
tests are in tests/kube_fake/test_url_fields.py, tests/unit/test_url_fields.py.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from runtimes import ContainerRef, NotFound
from runtimes.docker import DockerRuntime
from tests.kube_fake.test_url_fields import HOSTILE, check_paths, walk_http, walk_ws
from tests.support.gateway import ClientFactory, make_config

# Docker ids and names as the Engine may receive them; image ids come from the Engine itself.
_ID = r"[A-Za-z0-9][A-Za-z0-9_.-]*"


DOCKER_PATHS = [
    re.compile(p)
    for p in (
        r"(?:/v[0-9.]+)?/(?:_ping|version|info|events)",
        r"/v[0-9.]+/containers/json",
        rf"/v[0-9.]+/containers/{_ID}/(?:json|stats|logs|start|stop|restart|unpause)",
        r"/v[0-9.]+/images/sha256%3A[0-9a-f]{64}/json",
    )
]


class EngineRecorder:
    """A pass-through proxy on a unix socket in front of the Docker Engine, recording raw paths."""

    def __init__(self, upstream: str, directory: Path) -> None:
        self.paths: list[str] = []
        self.socket = directory / "engine.sock"
        self._upstream = upstream.removeprefix("unix://")
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=self._upstream))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.UnixSite(self._runner, str(self.socket)).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.raw_path)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")}
        async with self._session.request(
            request.method,
            URL("http://docker" + request.raw_path, encoded=True),
            headers=headers,
            data=await request.read() or None,
            timeout=aiohttp.ClientTimeout(total=None),
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for name in ("Content-Type", "Api-Version", "Docker-Experimental", "Ostype"):
                if name in upstream.headers:
                    response.headers[name] = upstream.headers[name]
            await response.prepare(request)
            async for data in upstream.content.iter_any():
                await response.write(data)
            await response.write_eof()
            return response


@pytest.fixture
async def engine(docker_host: str) -> AsyncIterator[EngineRecorder]:
    with tempfile.TemporaryDirectory(prefix="nkz-") as directory:  # a unix socket path is short
        proxy = EngineRecorder(docker_host, Path(directory))
        await proxy.start()
        try:
            yield proxy
        finally:
            await proxy.close()


async def test_hostile_values_never_reach_the_docker_engine(
    gateway: ClientFactory, engine: EngineRecorder
) -> None:
    client = await gateway(make_config(engine.host))
    await walk_http(client, None)
    await walk_ws(client, None)
    check_paths(engine.paths, DOCKER_PATHS)


async def test_the_docker_runtime_keeps_unchecked_values_out_of_its_urls(engine: EngineRecorder) -> None:
    runtime = DockerRuntime(engine.host)
    try:
        for value in HOSTILE:
            with pytest.raises(NotFound):
                await runtime.get(ContainerRef(value))
            with pytest.raises(NotFound):
                await runtime.stats(ContainerRef(value))
    finally:
        await runtime.close()
    # Only the one value Docker could have as a name was asked for (the Engine had none).
    assert {p.split("/")[3] for p in engine.paths if "/containers/" in p} == {"x" * 300}
    check_paths(engine.paths, DOCKER_PATHS)
