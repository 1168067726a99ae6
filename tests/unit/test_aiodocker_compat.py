"""What runtimes/docker/aiodocker_compat.py relies on in aiodocker's private request methods.

These fail on an aiodocker release that renames the methods, changes their parameters, or stops
adding the API version, raising DockerError for an error answer, or reporting a dead socket as 900.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import pytest
from aiohttp import web

from runtimes.docker import aiodocker_compat

TIMEOUT = aiohttp.ClientTimeout(total=10)


@pytest.mark.parametrize(
    ("method", "keywords"),
    [
        (aiodocker.Docker._query, {"params", "timeout", "versioned_api"}),
        (aiodocker.Docker._query_json, {"params", "timeout", "versioned_api", "data"}),
    ],
)
def test_the_private_methods_take_what_the_module_passes(
    method: Callable[..., Any], keywords: set[str]
) -> None:
    parameters = inspect.signature(method).parameters
    assert list(parameters)[:3] == ["self", "path", "method"]
    assert {name for name in keywords if parameters[name].kind is inspect.Parameter.KEYWORD_ONLY} == keywords


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[tuple[aiodocker.Docker, list[str]]]:
    """A fake Engine on a unix socket, and the paths it was asked for."""
    asked: list[str] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        asked.append(f"{request.method} {request.path_qs}")
        if request.path == "/version":
            return web.json_response({"ApiVersion": "1.47"})
        if request.path == "/v1.47/containers/json":
            return web.json_response([{"Id": "abc"}])
        if request.path == "/v1.47/containers/abc/start":
            return web.Response(status=304)
        if request.path == "/v1.47/containers/abc/logs":
            asked.append(f"HTTP/{request.version.major}.{request.version.minor}")
            return web.Response(body=b"frames" * 1000)
        # As the Engine sends it: no charset, which aiodocker's check compares exactly.
        body = json.dumps({"message": "No such container: gone"}).encode()
        return web.Response(body=body, status=404, headers={"Content-Type": "application/json"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    socket = tmp_path / "engine.sock"
    await web.UnixSite(runner, str(socket)).start()
    docker = aiodocker.Docker(url=f"unix://{socket}")
    try:
        yield docker, asked
    finally:
        await docker.close()
        await runner.cleanup()


async def test_a_versioned_json_query_asks_the_negotiated_version(
    engine: tuple[aiodocker.Docker, list[str]],
) -> None:
    docker, asked = engine
    version = await aiodocker_compat.query_json(
        docker, "version", params={}, timeout=TIMEOUT, versioned=False
    )
    assert version == {"ApiVersion": "1.47"}
    listed = await aiodocker_compat.query_json(
        docker, "containers/json", params={"all": "1"}, timeout=TIMEOUT
    )
    assert listed == [{"Id": "abc"}]
    assert asked[-1] == "GET /v1.47/containers/json?all=1"


async def test_a_raw_query_hands_back_a_304_unraised(engine: tuple[aiodocker.Docker, list[str]]) -> None:
    docker, asked = engine
    async with aiodocker_compat.query(
        docker, "containers/abc/start", "POST", params={}, timeout=TIMEOUT
    ) as response:
        assert response.status == 304
        assert await response.read() == b""
    assert asked[-1] == "POST /v1.47/containers/abc/start"


async def test_an_error_answer_is_a_docker_error_with_the_engines_message(
    engine: tuple[aiodocker.Docker, list[str]],
) -> None:
    docker, _ = engine
    with pytest.raises(aiodocker.DockerError) as raised:
        await aiodocker_compat.query_json(docker, "containers/gone/json", params={}, timeout=TIMEOUT)
    assert (raised.value.status, raised.value.message) == (404, "No such container: gone")
    with pytest.raises(aiodocker.DockerError) as raised:
        async with aiodocker_compat.query(docker, "containers/gone/stop", "POST", params={}, timeout=TIMEOUT):
            pass
    assert raised.value.status == 404


async def test_a_query_until_close_asks_in_http_1_0_and_fails_as_a_query(
    engine: tuple[aiodocker.Docker, list[str]],
) -> None:
    docker, asked = engine
    unframed = aiodocker_compat.unframed_session(docker)
    try:
        async with aiodocker_compat.query_until_close(
            docker, unframed, "containers/abc/logs", params={"stdout": "1"}, timeout=TIMEOUT
        ) as response:
            assert await response.read() == b"frames" * 1000
        assert asked[-2:] == ["GET /v1.47/containers/abc/logs?stdout=1", "HTTP/1.0"]
        with pytest.raises(aiodocker.DockerError) as raised:
            async with aiodocker_compat.query_until_close(
                docker, unframed, "containers/gone/logs", params={}, timeout=TIMEOUT
            ):
                pass
        assert (raised.value.status, raised.value.message) == (404, "No such container: gone")
    finally:
        await unframed.close()
    # The connections are still the client's: closing the session left them open.
    assert not docker.connector.closed


async def test_a_dead_socket_is_status_900(tmp_path: Path) -> None:
    docker = aiodocker.Docker(url=f"unix://{tmp_path / 'nobody.sock'}")
    try:
        with pytest.raises(aiodocker.DockerError) as raised:
            await aiodocker_compat.query_json(docker, "version", params={}, timeout=TIMEOUT, versioned=False)
        assert raised.value.status == 900
        docker.api_version = "v1.47"  # no version to ask first: the query itself meets the dead socket
        unframed = aiodocker_compat.unframed_session(docker)
        with pytest.raises(aiodocker.DockerError) as raised:
            async with aiodocker_compat.query_until_close(
                docker, unframed, "containers/abc/logs", params={}, timeout=TIMEOUT
            ):
                pass
        assert raised.value.status == 900
        await unframed.close()
    finally:
        await docker.close()
