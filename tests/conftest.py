"""Session-wide fixtures and the tiers.

A test's tier is the directory it lives in (unit, docker, kube_fake, kube_real): the hook below
gives every test the marker of its directory, so ``-m unit`` selects the tier that needs no daemon.
The private Docker Engine is started by scripts/docker-sandbox.sh in pytest's temporary directory
(its own socket and data, no bridge network, no iptables) and stopped at the end. Set
NEKZUS_TEST_DOCKER_HOST to reuse a daemon that is already running; tests only ever touch
containers they created themselves.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from nekzus.config import Config
from nekzus.http.app import create_app
from runtimes import RuntimeRegistry
from tests.support.docker_engine import start_sandbox, stop_sandbox
from tests.support.gateway import ClientFactory, use_data_dir

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "docker", "kube_fake", "kube_real")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = item.path.relative_to(TESTS).parts[0]
        if tier not in TIERS:
            tiers = ", ".join(f"tests/{name}" for name in TIERS)
            raise pytest.UsageError(f"{item.nodeid}: a test belongs in one tier's directory: {tiers}")
        item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session", autouse=True)
def gateway_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data")
    use_data_dir(path)
    return path


@pytest.fixture(scope="session")
def docker_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get("NEKZUS_TEST_DOCKER_HOST")
    if existing:
        yield existing
        return
    directory = tmp_path_factory.mktemp("docker")
    host = start_sandbox(directory)
    try:
        yield host
    finally:
        stop_sandbox(directory)


@pytest.fixture
async def gateway(aiohttp_client: Any) -> AsyncIterator[ClientFactory]:
    """Builds the app with create_app and checks on teardown that it left no task behind."""
    clients: list[TestClient[Any, Any]] = []

    async def make(config: Config, *, runtimes: RuntimeRegistry | None = None) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = await aiohttp_client(create_app(config, runtimes=runtimes))
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not leaked, f"tasks left running after shutdown: {leaked}"
