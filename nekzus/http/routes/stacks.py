"""Compose stacks: the list, one stack, and the files of managed stacks.

The list and the detail come from one read of the containers (the warm state model) and the
managed files; no route here runs compose except to check a file before it is written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from ...errors import ApiError, validation_error
from ...keys import CONFIG
from ...params import bool_query, choices_query, json_fields, name_filter, sort_query
from ...security.auth import PRINCIPAL, READ_STACKS, WRITE_STACKS, requires
from ...security.guard import refuse_foreign_read
from ...security.ratelimit import rate_pool
from ...stacks.driver import ComposeDriver, ComposeError, ComposeUnavailable, Project
from ...stacks.files import COMPOSE_FILE, ENV_FILE, StackFiles
from ...stacks.model import COMPOSE_ACTIONS, ENGINE_ACTIONS, STATUSES, Stack
from ...stacks.names import stack_name
from ...stacks.service import STACKS, Stacks
from ..idempotent import idempotent
from ..pages import page_of
from .common import summary_json
from .stack_common import find_stack, load_stacks, stack_named, stack_runtime

# What a stack is busy with while its files are checked and written.
EDIT = "edit"
# Checking a file is quick; a compose that takes longer is stuck, and a client is waiting.
VALIDATE_TIMEOUT = 60.0
_CONTAINER_FIELDS = ("id", "name", "state", "status", "image", "ports", "created")
_SORT_KEYS: Mapping[str, Callable[[Stack], Any]] = {
    "name": lambda s: s.name,
    "updatedAt": lambda s: s.updated_at,
    # From running to unknown, as the statuses are listed.
    "status": lambda s: STATUSES.index(s.status),
}


def stack_summary(stack: Stack, busy: str | None) -> dict[str, Any]:
    """One stack as the list shows it. Security: never a server path (its files, its folder)."""
    return {
        "name": stack.name,
        "status": stack.status,
        "services": len(stack.services),
        "running": stack.running_services,
        "managed": stack.is_managed,
        "updatedAt": stack.updated_at,
        "busy": busy,
    }


async def stack_detail(stacks: Stacks, stack: Stack) -> dict[str, Any]:
    """One stack with each service's containers, and the actions it supports: all of them when
    compose can read its files, else only those the Engine does alone."""
    services = []
    for service in stack.services:
        containers = []
        for c in stack.containers_of(service):
            summary = summary_json(c)
            containers.append({**{k: summary[k] for k in _CONTAINER_FIELDS}, "health": c.health})
        services.append({"name": service, "status": stack.service_status(service), "containers": containers})
    # Whether compose can read a discovered stack's files is asked of the file system: off the loop.
    readable = await asyncio.to_thread(stacks.project, stack) is not None
    actions = COMPOSE_ACTIONS if readable else ENGINE_ACTIONS
    return {
        **stack_summary(stack, stacks.busy(stack.name)),
        "services": services,
        "actions": list(actions),
    }


@requires(READ_STACKS)
@rate_pool("containers")
async def list_stacks(request: web.Request) -> web.Response:
    show_all = bool_query(request, "all")
    statuses = set(choices_query(request, "state", STATUSES))
    name = name_filter(request)
    sort, descending = sort_query(request, _SORT_KEYS)
    found = await load_stacks(request, show_all=show_all)
    chosen = [
        s
        for s in found.values()
        if (not statuses or s.status in statuses) and (name is None or name in s.name.casefold())
    ]
    if sort is not None:
        # Stable: ties keep the order by name.
        chosen.sort(key=_SORT_KEYS[sort], reverse=descending)
    page, headers = page_of(request, chosen)
    stacks = request.app[STACKS]
    return web.json_response([stack_summary(s, stacks.busy(s.name)) for s in page], headers=headers)


@requires(READ_STACKS)
@rate_pool("containers")
async def get_stack(request: web.Request) -> web.Response:
    stack = await find_stack(request)
    return web.json_response(await stack_detail(request.app[STACKS], stack))


def file_text(body: Mapping[str, Any], field: str, limit: int) -> str | None:
    """``body[field]`` as the text of a file of at most ``limit`` UTF-8 bytes; None for null or
    absent. Anything else is ``400 VALIDATION_ERROR`` naming the field."""
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise validation_error(field, f"{field} must be the file's text, a string")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        # JSON can spell a lone surrogate (\ud800), which no file can hold as UTF-8.
        raise validation_error(field, f"{field} must be Unicode text without lone surrogates") from None
    if size > limit:
        raise validation_error(field, f"{field} may be at most {limit} bytes (UTF-8); it is {size}")
    return value


def compose_text(body: Mapping[str, Any], limit: int) -> str:
    compose = file_text(body, "compose", limit)
    if compose is None or not compose.strip():
        raise validation_error("compose", "compose is required: the compose file's text, not empty")
    return compose


def _stage(folder: Path, compose: str, env: str | None) -> tuple[Path, Path]:
    """The candidate files in ``folder`` (private to the gateway's user, as the .env may hold
    secrets). The .env is staged even when there is none, empty: compose would otherwise read
    the stack's current one from its folder, which this write is about to remove."""
    staged = folder / COMPOSE_FILE
    staged.write_text(compose, encoding="utf-8")
    env_file = folder / ENV_FILE
    env_file.write_text(env or "", encoding="utf-8")
    return staged, env_file


async def _validate(
    driver: ComposeDriver, files: StackFiles, name: str, compose: str, env: str | None
) -> None:
    """``docker compose config`` on the candidate files, read as if they were in the stack's own
    folder (relative paths mean the same); ``400 INVALID_COMPOSE`` with compose's message."""
    with files.staging(name) as folder:
        staged, env_file = await asyncio.to_thread(_stage, Path(folder), compose, env)
        project = Project(name, (staged,), files.directory(name), env_file)
        try:
            await driver.run(project, ["config", "--quiet"], timeout=VALIDATE_TIMEOUT)
        except ComposeError as exc:
            raise ApiError(400, "INVALID_COMPOSE", exc.message) from exc
        except ComposeUnavailable as exc:
            raise ApiError(503, "COMPOSE_UNAVAILABLE", str(exc)) from exc


def _not_found(name: str) -> ApiError:
    return ApiError(404, "STACK_NOT_FOUND", f"Stack {name!r} does not exist")


def not_managed(name: str) -> ApiError:
    return ApiError(
        409,
        "STACK_NOT_MANAGED",
        f"Stack {name!r} was not created through the gateway: it has no files the gateway keeps",
    )


async def save_stack(
    request: web.Request, name: str, compose: str, env: str | None, *, create: bool, keep_env: bool = False
) -> Stack:
    """Check ``compose`` (and ``env``) with compose, then write them as the managed stack ``name``.

    ``create``: a new stack (``409 STACK_ALREADY_EXISTS`` when a managed or a discovered one has
    the name); else the files of an existing managed one are replaced, its ``.env`` kept when
    ``keep_env``. The stack is busy while this runs, so an action or another edit of it is
    ``409 STACK_BUSY``; nothing is written unless compose accepted the files.
    """
    stacks = request.app[STACKS]
    stack_runtime(request)  # 409 OPERATION_NOT_SUPPORTED without an Engine compose can drive
    driver = stacks.driver  # 503 COMPOSE_UNAVAILABLE before the stack is claimed
    stacks.claim(name, EDIT)
    try:
        current = await stack_named(request, name)
        if create and current is not None:
            raise ApiError(409, "STACK_ALREADY_EXISTS", f"Stack {name!r} already exists")
        if not create:
            if current is None:
                raise _not_found(name)
            if not current.is_managed:
                raise not_managed(name)
            if keep_env:
                files = await asyncio.to_thread(stacks.files.read, name)
                env = files[1] if files is not None else None
        await _validate(driver, stacks.files, name, compose, env)
        await asyncio.to_thread(stacks.files.write, name, compose, env)
    finally:
        stacks.release(name)
    return await find_stack(request, name)


@requires(WRITE_STACKS)
@rate_pool("containers")
@idempotent
async def create_stack(request: web.Request) -> web.Response:
    body = await json_fields(request, ("name", "compose", "env"), required=True)
    name = stack_name(body.get("name"))
    limit = request.app[CONFIG].stacks.max_file_bytes
    compose = compose_text(body, limit)
    env = file_text(body, "env", limit)
    stack = await save_stack(request, name, compose, env, create=True)
    return web.json_response(
        await stack_detail(request.app[STACKS], stack),
        status=201,
        headers={"Location": f"/api/v1/stacks/{name}"},
    )


@requires(WRITE_STACKS)
@rate_pool("containers")
async def replace_stack(request: web.Request) -> web.Response:
    name = stack_name(request.match_info["name"])
    body = await json_fields(request, ("compose", "env"), required=True)
    limit = request.app[CONFIG].stacks.max_file_bytes
    compose = compose_text(body, limit)
    env = file_text(body, "env", limit)
    stack = await save_stack(request, name, compose, env, create=False, keep_env="env" not in body)
    return web.json_response(await stack_detail(request.app[STACKS], stack))


@requires(READ_STACKS)
@rate_pool("containers")
async def stack_files(request: web.Request) -> web.Response:
    """The compose file and ``.env`` of a managed stack. Security: the ``.env`` may hold secrets,
    so only a caller who may also write stacks reads it; others learn only that there is one."""
    refuse_foreign_read(request, "stack files")
    stack = await find_stack(request)
    if not stack.is_managed:
        raise not_managed(stack.name)
    files = await asyncio.to_thread(request.app[STACKS].files.read, stack.name)
    if files is None:
        raise _not_found(stack.name)
    compose, env = files
    shown = request[PRINCIPAL].allows(WRITE_STACKS)
    return web.json_response(
        {
            "name": stack.name,
            "compose": compose,
            "env": env if shown else None,
            "envHidden": env is not None and not shown,
        }
    )
