"""A stack's logs: its services' lines merged in time order, with the container logs' search."""

from __future__ import annotations

from aiohttp import web

from ...errors import ApiError


async def stack_logs(request: web.Request) -> web.StreamResponse:
    raise ApiError(501, "NOT_IMPLEMENTED", "Not implemented yet")
