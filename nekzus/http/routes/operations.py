"""Polling an operation for a client that missed its completion event."""

from __future__ import annotations

from aiohttp import web

from ...errors import ApiError
from ...keys import CONFIG, OPERATIONS
from ...security.auth import READ_CONTAINERS, requires


@requires(READ_CONTAINERS)
async def get_operation(request: web.Request) -> web.Response:
    op = request.app[OPERATIONS].get(request.match_info["operation_id"])
    if op is None:
        retention = request.app[CONFIG].operations.retention_seconds
        raise ApiError(
            404,
            "OPERATION_NOT_FOUND",
            f"No such operation (finished records are kept for {retention // 60} minutes)",
        )
    return web.json_response(op.to_json())
