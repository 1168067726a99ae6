"""Compose stack actions (deploy, start, stop, ... down) as jobs, and deleting a managed stack.

An action is checked whole before it is accepted (its body, the stack, the services it names, who
may run it, whether the stack is free), then claimed, so a second action on the stack is refused
with ``409 STACK_BUSY`` rather than queued; the job frees the stack when it ends.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from runtimes import ContainerRuntime, RuntimeFailure

from ...errors import ApiError, validation_error
from ...keys import OPERATIONS, SELF_CONTAINER_ID, STATE
from ...linking import is_self
from ...operations.tracker import JobProgress
from ...params import bool_query, json_fields, timeout_value
from ...realtime.state import StateModels
from ...security.auth import WRITE_STACKS, requires
from ...security.ratelimit import rate_pool
from ...stacks.actions import (
    ENGINE_ACTIONS,
    HALTING,
    ProgressEvents,
    StackAction,
    job_text,
    run_compose,
    run_on_engine,
    stack_job,
)
from ...stacks.driver import Project
from ...stacks.model import Stack, project_of
from ...stacks.names import stack_name
from ...stacks.service import STACKS
from ..idempotent import idempotent
from .common import accepted
from .stack_common import find_stack, stack_runtime

log = logging.getLogger(__name__)

_FIELDS = {
    "deploy": ("services", "removeOrphans"),
    "stop": ("services", "timeout"),
    "restart": ("services", "timeout"),
    "down": ("services", "volumes", "removeOrphans"),
}


def _flag(body: dict[str, Any], field: str) -> bool:
    value = body.get(field, False)
    if not isinstance(value, bool):
        raise validation_error(field, f"{field} must be true or false")
    return value


def _services(value: Any, stack: Stack) -> tuple[str, ...]:
    """The services a body names, each one of the stack's, duplicates dropped; none named: all."""
    if value is None:
        return ()
    if not isinstance(value, list) or not value:
        raise validation_error(
            "services", "services must be a non-empty list of service names; leave it out for every service"
        )
    for i, service in enumerate(value):
        if not isinstance(service, str) or service not in stack.services:
            raise validation_error(
                f"services[{i}]",
                f"services[{i}] must name a service of stack {stack.name!r}: {', '.join(stack.services)}",
            )
    return tuple(dict.fromkeys(value))


def _not_managed(name: str, what: str) -> ApiError:
    return ApiError(
        409,
        "STACK_NOT_MANAGED",
        f"Stack {name!r} cannot be {what}: its compose files are not readable by the gateway, so only "
        "start, stop, restart, pause and unpause (through the Engine) are possible",
    )


def _refuse_self(request: web.Request, stack: Stack, action: StackAction) -> None:
    """Security: an action that stops, freezes or recreates containers never reaches the gateway's
    own (it would end the gateway in the middle of the job)."""
    self_id = request.app[SELF_CONTAINER_ID]
    if action.action in HALTING and any(is_self(c, self_id) for c in action.chosen(stack)):
        raise ApiError(
            403,
            "FORBIDDEN",
            f"Stack {stack.name!r} holds the gateway's own container: the gateway does not "
            f"{job_text(action.action).verb} itself",
        )


async def _expect_changes(state: StateModels, runtime: ContainerRuntime, stack: Stack) -> None:
    """Have the state model re-read every container the action may have made, changed or removed
    (those of the stack before it, and those the Engine has of it now), so a list asked after the
    completion event shows the stack as the action left it."""
    ids = {c.id for c in stack.containers}
    try:
        now = await runtime.list_containers()
    except RuntimeFailure as exc:
        log.info("re-reading stack %s after its action failed: %s", stack.name, exc)
    else:
        ids.update(c.id for c in now if project_of(c) == stack.name)
    state.expect(runtime.name, ids)


def _submit(request: web.Request, stack: Stack, action: StackAction, project: Project | None) -> web.Response:
    """Claim the stack and start the job: through compose with ``project``, else the Engine."""
    stacks = request.app[STACKS]
    runtime = stack_runtime(request)
    driver = stacks.driver if project is not None else None
    self_id = request.app[SELF_CONTAINER_ID]
    name = stack.name

    async def work(progress: JobProgress) -> None:
        try:
            if driver is not None and project is not None:
                events = ProgressEvents(progress.publish, stack, action.action)
                await run_compose(driver, project, action, events)
                if action.action == "delete":
                    await asyncio.to_thread(stacks.files.delete, name)
            else:
                await run_on_engine(runtime, stack, action, progress.publish, self_id=self_id)
        finally:
            # Ordering: before the end is announced, however the work ended.
            await _expect_changes(request.app[STATE], runtime, stack)

    result = {
        "stack": name,
        "services": list(action.services or stack.services),
        "via": "compose" if project is not None else "engine",
    }
    stacks.claim(name, action.action)
    try:
        op = request.app[OPERATIONS].submit_job(
            runtime=runtime.name,
            resource="stack",
            action=action.action,
            target=name,
            key=f"stack:{name}",
            text=job_text(action.action),
            work=stack_job(stacks, name, work, result),
        )
    except BaseException:
        stacks.release(name)
        raise
    return accepted(op, {"stack": name, "action": action.action})


@requires(WRITE_STACKS)
@rate_pool("containers")
@idempotent
async def stack_action(request: web.Request) -> web.Response:
    verb = request.match_info["action"]
    stack_name(request.match_info["name"])
    body = await json_fields(request, _FIELDS.get(verb, ("services",)), required=False)
    remove_orphans = _flag(body, "removeOrphans")
    volumes = _flag(body, "volumes")
    timeout = timeout_value(body["timeout"]) if "timeout" in body else None
    stack = await find_stack(request)
    action = StackAction(verb, _services(body.get("services"), stack), remove_orphans, volumes, timeout)
    return await start_stack_action(request, stack, action)


async def start_stack_action(request: web.Request, stack: Stack, action: StackAction) -> web.Response:
    """The checks of ``action`` on ``stack`` that need no body (compose can read its files, the
    gateway's own container is spared), then its submission: the REST action and a deploy hook
    start a stack action through here alike."""
    verb = action.action
    project = await asyncio.to_thread(request.app[STACKS].project, stack)
    if project is None and verb not in ENGINE_ACTIONS:
        raise _not_managed(stack.name, {"deploy": "deployed", "pull": "pulled"}.get(verb, "taken down"))
    _refuse_self(request, stack, action)
    return _submit(request, stack, action, project)


@requires(WRITE_STACKS)
@rate_pool("containers")
async def delete_stack(request: web.Request) -> web.StreamResponse:
    down = bool_query(request, "down")
    volumes = bool_query(request, "volumes")
    stack = await find_stack(request)
    name = stack.name
    if stack.managed is None:
        raise ApiError(
            409,
            "STACK_NOT_MANAGED",
            f"Stack {name!r} is not managed by the gateway: it keeps no files of it to delete",
        )
    stacks = request.app[STACKS]
    if stack.containers:
        if not down:
            raise ApiError(
                409,
                "STACK_IN_USE",
                f"Stack {name!r} has {len(stack.containers)} container(s): take it down first, or "
                "delete it with ?down=true (and ?volumes=true to remove its volumes too)",
            )
        action = StackAction("delete", volumes=volumes)
        _refuse_self(request, stack, action)
        return _submit(request, stack, action, stack.managed.project())
    stacks.claim(name, "delete")
    try:
        await asyncio.to_thread(stacks.files.delete, name)
    finally:
        stacks.release(name)
    return web.Response(status=204)
