"""The served certificate, the credential commands, and CORS."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nekzus.security.auth import hash_api_key
from nekzus.security.tls import fingerprint, generate_self_signed
from tests.support import ROOT
from tests.support.gateway import ClientFactory, make_config
from tests.unit.test_security import REMOTE_ONLY, bearer, registry, rsa_keys
from tests.unit.test_tls_cli import env_for, free_port

FINGERPRINT = re.compile(r"SHA-256 fingerprint ([0-9A-F:]{95})")


class Served:
    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port
        self.log: list[str] = []

    async def wait_for_line(self, pattern: re.Pattern[str]) -> re.Match[str]:
        assert self.process.stderr is not None
        async with asyncio.timeout(30):
            while True:
                line = (await self.process.stderr.readline()).decode()
                assert line, "the gateway exited:\n" + "".join(self.log)
                self.log.append(line)
                match = pattern.search(line)
                if match:
                    return match


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Any]:
    processes: list[asyncio.subprocess.Process] = []

    async def start(**extra: str) -> Served:
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nekzus", "serve",
            cwd=ROOT, env=env_for(tmp_path, port, **extra),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        processes.append(process)
        return Served(process, port)

    yield start
    for process in processes:
        if process.returncode is None:
            process.terminate()
            async with asyncio.timeout(20):
                await process.wait()


def served_certificate(port: int) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


async def test_auto_tls_serves_https_and_logs_the_served_fingerprint(serve: Any, tmp_path: Path) -> None:
    served = await serve()
    logged = (await served.wait_for_line(FINGERPRINT)).group(1)
    await served.wait_for_line(re.compile(r"Running on https://"))
    der = await asyncio.to_thread(served_certificate, served.port)
    assert hashlib.sha256(der).hexdigest().upper() == logged.replace(":", "")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"https://127.0.0.1:{served.port}/healthz", ssl=False) as resp:
            assert resp.status == 200
        with pytest.raises(aiohttp.ClientError):
            # Verified TLS fails: the certificate is self-signed (apps pin the fingerprint instead).
            await session.get(f"https://127.0.0.1:{served.port}/healthz")
    key = tmp_path / "tls" / "key.pem"
    assert key.stat().st_mode & 0o777 == 0o600


async def test_auto_tls_reuses_its_certificate(serve: Any) -> None:
    first = await serve()
    a = (await first.wait_for_line(FINGERPRINT)).group(1)
    first.process.terminate()
    await first.process.wait()
    second = await serve()
    assert (await second.wait_for_line(FINGERPRINT)).group(1) == a


async def test_tls_from_files(serve: Any, tmp_path: Path) -> None:
    cert_pem, key_pem = generate_self_signed("127.0.0.1")
    (tmp_path / "c.pem").write_bytes(cert_pem)
    (tmp_path / "k.pem").write_bytes(key_pem)
    served = await serve(
        NEKZUS_SERVER__TLS__MODE="files",
        NEKZUS_SERVER__TLS__CERT=str(tmp_path / "c.pem"),
        NEKZUS_SERVER__TLS__KEY=str(tmp_path / "k.pem"),
    )
    assert (await served.wait_for_line(FINGERPRINT)).group(1) == fingerprint(cert_pem)
    await served.wait_for_line(re.compile(r"Running on https://"))
    der = await asyncio.to_thread(served_certificate, served.port)
    assert hashlib.sha256(der).hexdigest().upper() == fingerprint(cert_pem).replace(":", "")


async def test_plain_http_when_tls_is_off(serve: Any) -> None:
    served = await serve(NEKZUS_SERVER__TLS__MODE="off")
    await served.wait_for_line(re.compile(r"Running on http://"))
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{served.port}/healthz") as resp,
    ):
        assert resp.status == 200


async def test_served_gateway_answers_only_to_its_names(serve: Any) -> None:
    # A real start with TLS auto: localhost and the configured name are served, others refused.
    served = await serve(NEKZUS_SERVER__ALLOWED_HOSTS='["nas.example.com"]')
    await served.wait_for_line(re.compile(r"Running on https://"))
    url = f"https://127.0.0.1:{served.port}/api/v1/containers"
    async with aiohttp.ClientSession() as session:
        for host, status in (
            ("evil.example", 421),
            (f"localhost:{served.port}", 503),
            ("NAS.example.com", 503),
        ):
            async with session.get(url, ssl=False, headers={"Host": host}) as resp:
                # 503: allowed, and then the Docker daemon is missing.
                assert resp.status == status, (host, await resp.text())
    await served.wait_for_line(re.compile(r"for the host 'evil\.example', not in server\.allowed_hosts"))


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nekzus", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_short_secret_refuses_to_start(tmp_path: Path) -> None:
    result = run_cli("serve", env=env_for(tmp_path, free_port(), NEKZUS_AUTH__JWT_SECRET="too-short"))
    assert result.returncode == 2
    assert "auth.jwt_secret" in result.stderr and "32 bytes" in result.stderr
    (tmp_path / "jwt_secret").write_text("short\n")
    result = run_cli("serve", env=env_for(tmp_path, free_port(), NEKZUS_SERVER__TLS__MODE="off"))
    assert result.returncode == 2
    assert "auth.jwt_secret" in result.stderr


def test_api_keys_without_a_signing_key_exit_2_naming_the_keys(tmp_path: Path) -> None:
    public_path, _ = rsa_keys(tmp_path)
    env = {
        "NEKZUS_AUTH__JWT_ALGORITHM": "RS256",
        "NEKZUS_AUTH__JWT_PUBLIC_KEY": str(public_path),
        "NEKZUS_AUTH__API_KEYS": json.dumps([{"name": "phone", "sha256": hash_api_key("nkz_x")}]),
    }
    result = run_cli("serve", env=env_for(tmp_path, free_port(), **env))
    assert result.returncode == 2, result.stderr
    assert "auth.api_keys needs auth.jwt_private_key with RS256" in result.stderr
    assert "Traceback" not in result.stderr


def serve_with_tls_files(tmp_path: Path, cert_pem: bytes, key_pem: bytes) -> subprocess.CompletedProcess[str]:
    """``nekzus serve`` with TLS mode ``files`` on these contents (expected to refuse to start)."""
    (tmp_path / "c.pem").write_bytes(cert_pem)
    (tmp_path / "k.pem").write_bytes(key_pem)
    env = env_for(
        tmp_path,
        free_port(),
        NEKZUS_SERVER__TLS__MODE="files",
        NEKZUS_SERVER__TLS__CERT=str(tmp_path / "c.pem"),
        NEKZUS_SERVER__TLS__KEY=str(tmp_path / "k.pem"),
    )
    return run_cli("serve", env=env)


def test_mismatched_tls_key_and_certificate_refuse_to_start(tmp_path: Path) -> None:
    cert_pem, _ = generate_self_signed("127.0.0.1")
    _, other_key = generate_self_signed("127.0.0.1")
    result = serve_with_tls_files(tmp_path, cert_pem, other_key)
    assert result.returncode == 2 and "server.tls: cannot load" in result.stderr
    assert "Traceback" not in result.stderr


def test_unusable_tls_files_refuse_to_start(tmp_path: Path) -> None:
    result = serve_with_tls_files(tmp_path, b"not a certificate", b"not a key")
    assert result.returncode == 2 and "server.tls" in result.stderr


async def test_cli_token_is_accepted_by_the_gateway(
    gateway: ClientFactory, docker_host: str, tmp_path: Path
) -> None:
    result = run_cli(
        "token", "create", "--subject", "ops", "--scopes", "read:* write:*", "--ttl", "30m",
        env=env_for(tmp_path, 1),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    tok = result.stdout.strip()
    config = make_config(
        docker_host, server={"data_dir": str(tmp_path), "tls": {"mode": "off"}}, auth=REMOTE_ONLY
    )
    client = await gateway(config, runtimes=registry())
    valid = await (await client.get("/api/v1/auth/validate", headers=bearer(tok))).json()
    assert valid["subject"] == "ops" and valid["scopes"] == ["read:*", "write:*"]
    assert (await client.get("/api/v1/containers", headers=bearer(tok))).status == 200
    bad_ttl = run_cli(
        "token", "create", "--subject", "x", "--scopes", "read:*", "--ttl", "soon", env=env_for(tmp_path, 1)
    )
    assert bad_ttl.returncode == 2 and "duration" in bad_ttl.stderr


def test_cli_apikey_prints_key_and_config_line(tmp_path: Path) -> None:
    result = run_cli(
        "apikey", "create", "--name", "phone", "--scopes", "read:containers", env=dict(os.environ)
    )
    assert result.returncode == 0
    lines = result.stdout.strip().splitlines()
    key, entry = lines[0], lines[-1]
    assert key.startswith("nkz_") and len(key) > 40
    assert hashlib.sha256(key.encode()).hexdigest() in entry
    assert key not in entry
    (tmp_path / "c.yaml").write_text("auth:\n  api_keys:\n  " + entry + "\n")
    from nekzus.config import load_config

    loaded = load_config(tmp_path / "c.yaml").auth.api_keys[0]
    assert (loaded.name, loaded.scopes) == ("phone", ["read:containers"])


def test_an_unusable_rate_limit_storage_exits_2_naming_the_key(tmp_path: Path) -> None:
    env = env_for(tmp_path, free_port(), NEKZUS_RATELIMIT__STORAGE="redis+sentinel://localhost:26379")
    result = run_cli("serve", env=env)
    assert result.returncode == 2, result.stderr
    assert "ratelimit.storage: 'service_name' not provided" in result.stderr
    assert "Traceback" not in result.stderr
