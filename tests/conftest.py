"""Shared fixtures: a private Docker Engine for the session, labelled test containers, the app.

The daemon is started by scripts/docker-sandbox.sh under .sandbox/ (its own socket and data, no
bridge network, no iptables) and stopped at the end. Set NEKZUS_TEST_DOCKER_HOST to reuse a
daemon that is already running; tests only ever touch containers they created themselves.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, Any

import aiodocker
import pytest
from aiohttp.test_utils import TestClient

from nekzus.app import create_app
from nekzus.config import Config
from nekzus.events import Event, EventBus
from nekzus.keys import WATCHERS
from runtimes import RuntimeRegistry

# The real Kubernetes control plane tier's fixtures (kube_plane, kube_namespace).
from .kube_fixtures import kube_namespace, kube_plane  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
SANDBOX = ROOT / "scripts" / "docker-sandbox.sh"
TEST_IMAGE = os.environ.get("NEKZUS_TEST_IMAGE", "nekzus-test:busybox")
RUN_LABEL = "nekzus.test.run"
# Ends at once on SIGTERM (a bare `sleep` as PID 1 ignores it and waits for the kill).
QUICK_STOP = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"]


def start_sandbox(directory: Path, *daemon_args: str) -> str:
    env = {**os.environ, "NEKZUS_DOCKERD_ARGS": " ".join(daemon_args)}
    out = subprocess.run(
        ["bash", str(SANDBOX), "start", str(directory)], check=True, capture_output=True, text=True, env=env
    )
    return out.stdout.strip().splitlines()[-1]


def stop_sandbox(directory: Path) -> None:
    subprocess.run(["bash", str(SANDBOX), "stop", str(directory)], check=True, capture_output=True)


@pytest.fixture(scope="session")
def docker_host() -> Iterator[str]:
    existing = os.environ.get("NEKZUS_TEST_DOCKER_HOST")
    if existing:
        yield existing
        return
    directory = ROOT / ".sandbox" / "docker"
    host = start_sandbox(directory)
    try:
        yield host
    finally:
        stop_sandbox(directory)


DATA_DIR = ROOT / ".sandbox" / "data"
# Tests that are not about rate limits must not run into the container pool's 20-request burst.
GENEROUS_LIMITS = {"containers": {"per_minute": 60_000, "burst": 10_000}}
# Bodies must be declared JSON; tests that send raw bytes say so with these headers.
JSON = {"Content-Type": "application/json"}


def make_config(docker_host: str, **overrides: Any) -> Config:
    data: dict[str, Any] = {
        "server": {"data_dir": str(DATA_DIR), "tls": {"mode": "off"}},
        "runtimes": {"docker": {"host": docker_host, "self_id": "0" * 64}},
        "apps": [{"id": "grafana", "name": "Grafana"}, {"id": "prometheus", "name": "Prometheus"}],
        "ratelimit": GENEROUS_LIMITS,
    }
    for key, value in overrides.items():
        data[key] = value
    return Config(**data)


@pytest.fixture
def config(docker_host: str) -> Config:
    return make_config(docker_host)


ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


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


@pytest.fixture
async def client(gateway: ClientFactory, config: Config) -> TestClient[Any, Any]:
    return await gateway(config)


class Containers:
    """Creates labelled test containers (network none) and removes every one of them afterwards."""

    def __init__(self, docker: aiodocker.Docker) -> None:
        self.docker = docker
        self.run_id = uuid.uuid4().hex[:12]
        self.created: list[str] = []

    async def create(
        self,
        *,
        labels: dict[str, str] | None = None,
        cmd: list[str] | None = None,
        env: list[str] | None = None,
        start: bool = True,
        name: str | None = None,
        tty: bool = False,
    ) -> dict[str, Any]:
        config: dict[str, Any] = {
            "Image": TEST_IMAGE,
            "Cmd": cmd or QUICK_STOP,
            "Labels": {RUN_LABEL: self.run_id, **(labels or {})},
            "Env": env or [],
            "Tty": tty,
            "StopTimeout": 1,
            "HostConfig": {"NetworkMode": "none"},
        }
        container = await self.docker.containers.create(
            config, name=name or f"nekzus-test-{uuid.uuid4().hex[:10]}"
        )
        self.created.append(container.id)
        if start:
            await container.start()
        return dict(await container.show())

    async def state(self, container_id: str) -> str:
        info = await self.docker.containers.container(container_id).show()
        return str(info["State"]["Status"])

    async def cleanup(self) -> None:
        for container_id in self.created:
            try:
                await self.docker.containers.container(container_id).delete(force=True)
            except aiodocker.DockerError as exc:
                if exc.status != 404:
                    raise


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


LINKED = {"nekzus.enable": "true"}


class Heard:
    """Every event a bus publishes from now on, kept for a test to read: a listener, as the hub is."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        bus.add_listener(self.queue.put_nowait)

    async def get(self) -> Event:
        return await self.queue.get()

    def close(self) -> None:
        self.bus.remove_listener(self.queue.put_nowait)


async def next_event(sub: Heard, type_prefix: str, *, timeout: float = 15) -> Event:
    """The next event whose type starts with ``type_prefix`` (others are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            event = await sub.get()
            if event.type.startswith(type_prefix):
                return event


async def state_heard(sub: Heard, container_id: str, state: str, *, timeout: float = 15) -> Event:
    """The gateway's ``container.state`` event of one container reaching ``state``. The list is as
    fresh as that event stream: a list asked after this event shows the state."""
    async with asyncio.timeout(timeout):
        while True:
            event = await next_event(sub, "container.state")
            if event.data["containerId"] == container_id[:12] and event.data["state"] == state:
                return event


async def watching(client: TestClient[Any, Any]) -> None:
    """The state watcher has its event stream open (so direct daemon changes are seen)."""
    async with asyncio.timeout(15):
        for watcher in client.server.app[WATCHERS]:
            await watcher.watching.wait()


def read_until(stream: IO[str] | None, marker: str, what: str) -> None:
    """Reads a child process's output until a line holds ``marker`` (bounded by the test timeout);
    fails if the process ends first."""
    assert stream is not None
    for line in stream:
        if marker in line:
            return
    pytest.fail(f"{what} exited before it printed {marker!r}")
