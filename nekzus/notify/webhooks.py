"""Outbound webhooks: hub events POSTed to receivers, signed, persisted in data_dir, retried."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web


async def webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
