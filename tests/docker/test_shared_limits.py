"""Several gateway replicas share one rate limit through Redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway import ClientFactory, read_until
from tests.unit.test_security import bearer, registry, security_config, token


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server = shutil.which("redis-server")
    assert server, "redis-server is needed (apt-get install redis-server)"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [
            server,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        read_until(process.stdout, "Ready to accept connections", "redis-server")
        yield f"redis://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()


async def test_replicas_share_the_container_pool(
    gateway: ClientFactory, docker_host: str, redis_url: str
) -> None:
    config = security_config(
        docker_host, ratelimit={"storage": redis_url, "containers": {"per_minute": 30, "burst": 20}}
    )
    first = await gateway(config, runtimes=registry())
    second = await gateway(config, runtimes=registry())
    headers = bearer(token(sub=f"replica-test-{id(first)}"))
    statuses = []
    for n in range(20):
        replica = first if n % 2 else second
        statuses.append((await replica.get("/api/v1/containers", headers=headers)).status)
    assert statuses == [200] * 20
    for replica in (first, second):
        resp = await replica.get("/api/v1/containers", headers=headers)
        assert resp.status == 429
        assert (await resp.json())["error"] == "RATE_LIMITED"
