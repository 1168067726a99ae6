"""The tests of tls cli that need no daemon (unit tier); the story and the other tests are in
tests/docker/test_tls_cli.py.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from tests.support.gateway import ClientFactory, make_config
from tests.unit.test_security import registry


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env_for(data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEKZUS_")}
    env.update(
        NEKZUS_SERVER__DATA_DIR=str(data_dir),
        NEKZUS_SERVER__PORT=str(port),
        NEKZUS_RUNTIMES__DOCKER__HOST=f"unix://{data_dir}/no-daemon.sock",
        **extra,
    )
    return env


async def test_cors_only_for_configured_origins(gateway: ClientFactory, docker_host: str) -> None:
    config = make_config(
        docker_host, server={"cors_origins": ["https://app.example.com"], "tls": {"mode": "off"}}
    )
    client = await gateway(config, runtimes=registry())
    preflight = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "Authorization"}  # fmt: skip
    resp = await client.options("/api/v1/containers/batch", headers=preflight)
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    resp = await client.get("/api/v1/containers", headers={"Origin": "https://app.example.com"})
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "RateLimit-Remaining" in resp.headers["Access-Control-Expose-Headers"]
    resp = await client.get("/api/v1/containers", headers={"Origin": "https://evil.example.net"})
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await client.options(
        "/api/v1/containers/batch", headers={**preflight, "Origin": "https://evil.example.net"}
    )
    assert resp.status == 403
    assert (await resp.json())["error"] == "FORBIDDEN"
    assert "Access-Control-Allow-Origin" not in resp.headers
