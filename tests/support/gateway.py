"""Building the gateway under test and waiting on what it says: its configuration, the client
factory's type, and event helpers that wait with a deadline instead of sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import pytest
from aiohttp.test_utils import TestClient

from nekzus.config import Config
from nekzus.keys import WATCHERS
from nekzus.realtime.events import Event, EventBus

# Tests that are not about rate limits must not run into the container pool's 20-request burst.
GENEROUS_LIMITS = {"containers": {"per_minute": 60_000, "burst": 10_000}}
# Bodies must be declared JSON; tests that send raw bytes say so with these headers.
JSON = {"Content-Type": "application/json"}
LINKED = {"nekzus.enable": "true"}

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]

_session_data_dir: Path | None = None


def use_data_dir(path: Path) -> None:
    """Set once per session (tests/conftest.py): the gateways the tests build keep their operation
    records and secret in pytest's temporary directory, never in the checkout."""
    global _session_data_dir
    _session_data_dir = path


def data_dir() -> Path:
    """The session's gateway data directory."""
    assert _session_data_dir is not None, "tests/conftest.py sets the data directory at session start"
    return _session_data_dir


def make_config(docker_host: str, **overrides: Any) -> Config:
    data: dict[str, Any] = {
        "server": {"data_dir": str(data_dir()), "tls": {"mode": "off"}},
        "runtimes": {"docker": {"host": docker_host, "self_id": "0" * 64}},
        "apps": [{"id": "grafana", "name": "Grafana"}, {"id": "prometheus", "name": "Prometheus"}],
        "ratelimit": GENEROUS_LIMITS,
    }
    for key, value in overrides.items():
        data[key] = value
    return Config(**data)


def kubernetes_only(docker_host: str, kubeconfig: Path) -> Config:
    """A gateway whose one runtime is Kubernetes, for the engine routes that only Docker serves."""
    return make_config(
        docker_host,
        runtimes={
            "primary": "kubernetes",
            "docker": {"enabled": False},
            "kubernetes": {"enabled": True, "kubeconfig": str(kubeconfig)},
        },
    )


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
            assert event is not None, "event subscription ended"
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
        for watcher in client.app[WATCHERS]:
            await watcher.watching.wait()


def read_until(stream: IO[str] | None, marker: str, what: str) -> None:
    """Reads a child process's output until a line holds ``marker`` (bounded by the test timeout);
    fails if the process ends first."""
    assert stream is not None
    for line in stream:
        if marker in line:
            return
    pytest.fail(f"{what} exited before it printed {marker!r}")
