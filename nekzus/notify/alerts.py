"""Alert rules: conditions over container events, stats and logs that fire and resolve alerts."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web


async def alerts_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
