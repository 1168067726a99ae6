"""What the stack routes share: the Engine stacks live on, and the stacks it holds now."""

from __future__ import annotations

import asyncio

from aiohttp import web

from runtimes import ContainerRuntime, ContainerSummary
from runtimes.engine.compose import ComposeEngine

from ...errors import ApiError
from ...keys import LINKER, STATE
from ...stacks.model import Stack, group_stacks, project_of
from ...stacks.names import stack_name
from ...stacks.service import STACKS
from .common import capable_runtime, list_from


def stack_runtime(request: web.Request) -> ContainerRuntime:
    """The runtime whose Engine compose drives (Docker); others answer 409 OPERATION_NOT_SUPPORTED."""
    runtime = capable_runtime(request, ComposeEngine, "compose stacks")  # type: ignore[type-abstract]
    assert isinstance(runtime, ContainerRuntime)
    return runtime


async def _containers(request: web.Request) -> list[ContainerSummary]:
    """One read of the containers stacks are made of (the warm state model when there is one)."""
    return await list_from([stack_runtime(request)], "", request.app[STATE].models)


async def load_stacks(request: web.Request, *, show_all: bool = True) -> dict[str, Stack]:
    """Every stack, from the containers and the managed stacks' files. Without ``show_all`` only
    the stacks a client sees in a list: the managed ones, and those with at least one linked
    container (the containers' own rule)."""
    files = request.app[STACKS].files
    containers, managed = await asyncio.gather(_containers(request), asyncio.to_thread(files.all))
    found = group_stacks(containers, managed)
    if show_all:
        return found
    link = request.app[LINKER]
    return {
        name: stack
        for name, stack in found.items()
        if stack.is_managed or any(link.is_linked(c) for c in stack.containers)
    }


async def stack_named(request: web.Request, name: str) -> Stack | None:
    """The stack called ``name`` (a valid name), None when there is none: only its own files are
    read, not every managed stack's."""
    files = request.app[STACKS].files
    containers, managed = await asyncio.gather(_containers(request), asyncio.to_thread(files.get, name))
    own = [c for c in containers if project_of(c) == name]
    return group_stacks(own, [] if managed is None else [managed]).get(name)


async def find_stack(request: web.Request, name: str | None = None) -> Stack:
    """The stack the path names (linked or not, like one container), else ``404 STACK_NOT_FOUND``;
    a name that cannot be a stack's is ``400 INVALID_STACK_NAME``."""
    wanted = stack_name(request.match_info["name"] if name is None else name)
    stack = await stack_named(request, wanted)
    if stack is None:
        raise ApiError(404, "STACK_NOT_FOUND", f"Stack {wanted!r} does not exist")
    return stack
