"""Webhook receivers for tests: a real HTTP server that keeps each delivery and answers what a
test queues, and a gateway configuration that may deliver to it on loopback, retrying fast."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from standardwebhooks.webhooks import Webhook as Verifier

from nekzus.config import Config
from tests.support.gateway import ClientFactory, make_config

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
LOOPBACK = ["127.0.0.0/8", "::1/128"]
HANG = -1  # a receiver's answer: none, until the receiver is released


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value

    def verified(self, secret: str = SECRET) -> dict[str, Any]:
        """The body, once the independent Standard Webhooks implementation accepts its signature."""
        key: str | bytes = secret if secret.startswith("whsec_") else secret.encode()
        value: dict[str, Any] = Verifier(key).verify(self.body, self.headers)
        return value


class Receiver:
    """A real HTTP server that takes deliveries: it keeps each request and answers the statuses
    queued in ``answers`` (``HANG``: none until released), then 204."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answers: deque[int] = deque()
        self.retry_after: str | None = None
        self.slow = 0.0  # seconds each answer takes: a slow receiver, by design
        self.down = False  # answers 503 to everything
        self.redirect = False  # answers 302 to everything
        self.released = asyncio.Event()
        self._changed = asyncio.Condition()
        self.server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/hook"))

    async def handle(self, request: web.Request) -> web.Response:
        got = Received(dict(request.headers), await request.read())
        async with self._changed:
            self.received.append(got)
            self._changed.notify_all()
        status = self.answers.popleft() if self.answers else 503 if self.down else 204
        if self.redirect:
            raise web.HTTPFound("/elsewhere")
        if status == HANG:
            await self.released.wait()
            status = 204
        if self.slow:
            await asyncio.sleep(self.slow)
        headers = {"Retry-After": self.retry_after} if self.retry_after and status >= 400 else {}
        return web.Response(status=status, headers=headers, text="a body nobody keeps")

    async def wait_for(self, count: int, *, timeout: float = 10) -> list[Received]:
        """The first ``count`` requests, once they have arrived."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.received) >= count)
        return self.received[:count]


@pytest.fixture
async def receiver(gateway: ClientFactory) -> AsyncIterator[Receiver]:
    """Torn down before the gateway (it depends on it), releasing any answer still held."""
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hook", found.handle)
    found.server = TestServer(app, host="127.0.0.1")
    await found.server.start_server()
    yield found
    found.released.set()
    await found.server.close()


def hook(url: str, name: str = "ops", **fields: Any) -> dict[str, Any]:
    return {"name": name, "url": url, "events": ["demo.*"], "secret": SECRET, **fields}


def webhook_config(
    docker_host: str,
    data_dir: Path,
    *,
    webhooks: list[dict[str, Any]] | None = None,
    alerts: list[dict[str, Any]] | None = None,
    **delivery: Any,
) -> Config:
    """A gateway keeping its webhooks in ``data_dir``, retrying fast, allowed to reach loopback."""
    settings = {"initial_backoff": 0.05, "max_backoff": 0.2, "allow_networks": LOOPBACK, **delivery}
    return make_config(
        docker_host,
        server={"data_dir": str(data_dir), "tls": {"mode": "off"}},
        webhooks=webhooks or [],
        alerts=alerts or [],
        webhook_delivery=settings,
    )


async def until(condition: Callable[[], Awaitable[bool]], seconds: float = 10) -> None:
    """Until ``condition`` holds: a delivery's retry or expiry is no event a test can await, so
    the API is asked again every 10 ms, within a deadline."""
    async with asyncio.timeout(seconds):
        for _ in itertools.count():
            if await condition():
                return
            await asyncio.sleep(0.01)


async def shown(client: TestClient[Any, Any], name: str = "ops") -> dict[str, Any]:
    resp = await client.get(f"/api/v1/webhooks/{name}")
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body
