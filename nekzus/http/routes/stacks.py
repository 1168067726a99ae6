"""Compose stacks: the list, one stack, and the files of managed stacks."""

from __future__ import annotations

from aiohttp import web

from ...errors import ApiError


async def list_stacks(request: web.Request) -> web.Response:
    raise ApiError(501, "NOT_IMPLEMENTED", "Not implemented yet")


async def get_stack(request: web.Request) -> web.Response:
    raise ApiError(501, "NOT_IMPLEMENTED", "Not implemented yet")


async def create_stack(request: web.Request) -> web.Response:
    raise ApiError(501, "NOT_IMPLEMENTED", "Not implemented yet")


async def replace_stack(request: web.Request) -> web.Response:
    raise ApiError(501, "NOT_IMPLEMENTED", "Not implemented yet")


async def stack_files(request: web.Request) -> web.Response:
    raise ApiError(501, "NOT_IMPLEMENTED", "Not implemented yet")
