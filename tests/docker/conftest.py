"""The docker tier: the private Docker Engine (the session's ``docker_host``) and the other real
processes of the full set-up (``nekzus serve`` as a child process, redis-server, Docker Compose).

``docker`` is an Engine client of the test's own, ``runtime`` the Docker backend on the Engine;
``containers`` creates labelled test containers and removes them afterwards; ``client`` is the
gateway on the Engine with the shared settings;
``registry`` is a local image registry (tests/support/registry.py) holding the test image.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiodocker
import pytest
from aiohttp.test_utils import TestClient

from nekzus.config import Config
from nekzus.keys import EVENT_BUS
from runtimes.docker import DockerRuntime
from tests.support.docker_engine import Containers
from tests.support.fake_kube_fixtures import kube, kubeconfig  # noqa: F401
from tests.support.gateway import ClientFactory, Heard, make_config
from tests.support.netns_engine import netns_engine
from tests.support.registry import registry  # noqa: F401
from tests.support.stacks import HandProjects


@pytest.fixture
def config(docker_host: str) -> Config:
    return make_config(docker_host)


@pytest.fixture
async def client(gateway: ClientFactory, config: Config) -> TestClient[Any, Any]:
    return await gateway(config)


@pytest.fixture
async def docker(docker_host: str) -> AsyncIterator[aiodocker.Docker]:
    client = aiodocker.Docker(url=docker_host)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def containers(docker: aiodocker.Docker) -> AsyncIterator[Containers]:
    made = Containers(docker)
    try:
        yield made
    finally:
        await made.cleanup()


@pytest.fixture
async def runtime(docker_host: str) -> AsyncIterator[DockerRuntime]:
    """The Docker backend on the Engine, for the tests that call it without HTTP."""
    made = DockerRuntime(docker_host)
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture(scope="module")
def netns_docker_host() -> Iterator[str]:
    """A Docker Engine of the module's own in a network namespace of its own (networks are made there)."""
    with netns_engine() as engine:
        yield engine.host


@pytest.fixture
def hand_projects(docker_host: str, tmp_path: Path) -> Iterator[HandProjects]:
    """Compose projects started by hand (tests/support/stacks.py), each taken down afterwards."""
    made = HandProjects(docker_host, tmp_path / "projects")
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture
def heard(client: TestClient[Any, Any]) -> Iterator[Heard]:
    """Every event the gateway under test (``client``) publishes from now on."""
    listener = Heard(client.app[EVENT_BUS])
    try:
        yield listener
    finally:
        listener.close()
