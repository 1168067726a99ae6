"""Inbound deploy hooks: secret tokens, stored hashed in data_dir, each naming one target and action."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web


async def hooks_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
