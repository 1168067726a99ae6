"""Compose stack actions (deploy, start, stop, ... down) as jobs, and deleting a managed stack."""

from __future__ import annotations

from aiohttp import web

from ...errors import ApiError


async def stack_action(request: web.Request) -> web.Response:
    raise ApiError(501, "NOT_IMPLEMENTED", "Not implemented yet")


async def delete_stack(request: web.Request) -> web.Response:
    raise ApiError(501, "NOT_IMPLEMENTED", "Not implemented yet")
