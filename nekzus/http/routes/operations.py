"""Operation records: one polled by id for a client that missed its completion event, and those
started since a time for a client back from sleep."""

from __future__ import annotations

from aiohttp import web

from ...errors import ApiError
from ...keys import CONFIG, OPERATIONS
from ...params import int_query
from ...security.auth import READ_CONTAINERS, requires
from ..pages import page_of

# Unix seconds up to the year 5138: a value beyond is no time a record can have.
MAX_SINCE = 10**11


@requires(READ_CONTAINERS)
async def list_operations(request: web.Request) -> web.Response:
    """The kept records of operations started at or after ``?since=`` (Unix seconds; default: all),
    newest first, in pages. Records name no principal, so every reader sees every operation."""
    since = int_query(request, "since", default=0, minimum=0, maximum=MAX_SINCE) or 0
    page, headers = page_of(request, request.app[OPERATIONS].started_since(since))
    return web.json_response([op.to_json() for op in page], headers=headers)


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
