"""Rate limits with the ``limits`` package: a moving window per pool and client.

A pool of "N per minute with a burst of B" is the moving window "B requests in any B×60/N
seconds". For the container pool (30/min, burst 20) that is 20 requests in any 40 seconds: a
client may send 20 requests back to back; each later request is allowed once the oldest of the
last 20 is 40 s old, which over time is 30 per minute. The key is the JWT subject for
authenticated callers, otherwise the client address (an IPv6 /64); the source port never counts.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import ConfigurationError
from limits.storage import storage_from_string

from ..client_address import rate_key
from ..config import ConfigError, RateLimitConfig
from ..errors import ApiError
from ..keys import CLIENT_IP
from .auth import PRINCIPAL, Principal

POOLS = ("containers", "login", "websocket", "hooks")
LIMITER: web.AppKey[RateLimiter | None] = web.AppKey("limiter")
RATE_DECISION: web.RequestKey[RateDecision] = web.RequestKey("rate_decision")
H = TypeVar("H", bound=Callable[..., Awaitable[web.StreamResponse]])


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }


class SweptMemoryStorage(MemoryStorage):
    """``limits``' in-memory storage, with expired entries swept on a timer.

    The stock storage starts a clean-up pass after every hit, and that pass hands each key to a
    worker thread: with a thousand clients the passes never stop and keep a CPU busy. Here the
    per-hit scheduling is switched off and one task sweeps every ``SWEEP_SECONDS`` in the loop.
    The window arithmetic is untouched: a stale entry only costs memory until the next sweep.
    """

    STORAGE_SCHEME = ["async+nekzus-memory"]  # noqa: RUF012 - the base class declares it so
    SWEEP_SECONDS = 10.0

    async def _MemoryStorage__schedule_expiry(self) -> None:  # overrides the private per-hit hook
        return None

    def sweep(self, now: float) -> None:
        """Drop expired entries (no awaits: atomic with respect to the hits in the loop)."""
        for key, entries in list(self.events.items()):
            alive = [entry for entry in entries if entry.expiry > now]
            if alive:
                self.events[key] = alive
            else:
                del self.events[key]
                self.locks.pop(key, None)
        for key, expiry in list(self.expirations.items()):
            if expiry <= now:
                self.storage.pop(key, None)
                del self.expirations[key]
                self.locks.pop(key, None)

    async def run_sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.SWEEP_SECONDS)
            self.sweep(time.time())


class RateLimiter:
    def __init__(self, config: RateLimitConfig) -> None:
        storage: Storage
        if config.storage.startswith("memory://"):
            storage = SweptMemoryStorage()
        else:
            try:
                shared = storage_from_string("async+" + config.storage)
            except ConfigurationError as exc:
                # A malformed URI, or the redis client not installed: stop the start, naming the key.
                raise ConfigError(
                    f"ratelimit.storage: {exc} (a redis:// storage needs nekzus[redis] installed)"
                ) from exc
            assert isinstance(shared, Storage)
            storage = shared
        self._storage = storage
        self._strategy = MovingWindowRateLimiter(self._storage)
        self._sweeper: asyncio.Task[None] | None = None
        self._items: dict[str, RateLimitItem] = {
            pool: RateLimitItemPerSecond(rate.burst, rate.window_seconds)
            for pool, rate in (
                ("containers", config.containers),
                ("login", config.login),
                ("websocket", config.websocket),
                ("hooks", config.hooks),
            )
        }

    def start(self) -> None:
        if isinstance(self._storage, SweptMemoryStorage):
            self._sweeper = asyncio.get_running_loop().create_task(
                self._storage.run_sweeper(), name="ratelimit-sweeper"
            )

    async def hit(self, pool: str, key: str) -> RateDecision:
        item = self._items[pool]
        allowed = await self._strategy.hit(item, pool, key)
        stats = await self._strategy.get_window_stats(item, pool, key)
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        return RateDecision(allowed, item.amount, stats.remaining, reset)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)


def rate_pool(pool: str) -> Callable[[H], H]:
    """Mark a handler as counted in ``pool``."""
    assert pool in POOLS

    def mark(handler: H) -> H:
        handler.rate_pool = pool  # type: ignore[attr-defined]
        return handler

    return mark


def client_key(request: web.Request, pool: str) -> str:
    if pool == "hooks":
        # Per token, known or not: a limit that told them apart would tell which tokens exist.
        token = request.match_info.get("token", "")
        return "hook:" + hashlib.sha256(token.encode()).hexdigest()
    principal: Principal | None = request.get(PRINCIPAL)
    # Login is limited per address: the caller has no principal yet.
    if pool != "login" and principal is not None and principal.authenticated and principal.subject:
        return "sub:" + principal.subject
    return "ip:" + rate_key(request[CLIENT_IP])


@web.middleware
async def ratelimit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    limiter = request.app[LIMITER]
    pool = getattr(request.match_info.handler, "rate_pool", None)
    if limiter is None or pool is None:
        return await handler(request)
    decision = await limiter.hit(pool, client_key(request, pool))
    request[RATE_DECISION] = decision
    if not decision.allowed:
        raise ApiError(
            429,
            "RATE_LIMITED",
            f"Too many requests: try again in {max(decision.reset_seconds, 1)} s",
            headers={"Retry-After": str(max(decision.reset_seconds, 1))},
        )
    return await handler(request)


async def add_rate_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every response on a limited route says where the caller stands, error responses too."""
    decision = request.get(RATE_DECISION)
    if decision is not None:
        response.headers.update(decision.headers())
