"""``POST /api/v1/hooks/{token}``: a deploy hook called by a CI (see nekzus/notify/hooks.py).

The token is the caller's only credential, so the route is public and every way of not having a
hook (an unknown, revoked or malformed token, hooks turned off) is one and the same 404. A known
token starts the operation its hook names through the REST action's own code, and is answered
as that action is, errors included.
"""

from __future__ import annotations

from aiohttp import web

from runtimes import ContainerRef
from runtimes.engine.creation import ContainerCreator

from ...errors import ApiError, invalid_request
from ...notify.hooks import HOOKS, PATH_PREFIX, Hook, signature_problem
from ...params import DEFAULT_TIMEOUT
from ...security.auth import public
from ...security.ratelimit import rate_pool
from ...stacks.actions import StackAction
from .common import capable_runtime, runtime_for
from .containers import start_container_action
from .create import start_update
from .stack_actions import start_stack_action
from .stack_common import find_stack

# The stack action each stack hook action is; pull-and-deploy is one deploy that pulls first.
_STACK_ACTIONS = {
    "deploy": StackAction("deploy"),
    "pull-and-deploy": StackAction("deploy", pull=True),
    "restart": StackAction("restart"),
}


def _no_hook() -> ApiError:
    return ApiError(404, "HOOK_NOT_FOUND", "No deploy hook answers at this address")


@public
@rate_pool("hooks")
async def call_hook(request: web.Request) -> web.Response:
    store = request.app[HOOKS]
    hook = None if store is None else await store.find(request.match_info["token"])
    if store is None or hook is None:
        raise _no_hook()
    # Read whole even when unsigned, so every hook's body is bounded alike (413 past the app's size).
    body = await request.read()
    if hook.secret is not None:
        problem = signature_problem(request.headers, body, hook.secret)
        if problem is not None:
            raise ApiError(
                401,
                "HOOK_SIGNATURE_INVALID",
                problem,
                headers={"WWW-Authenticate": 'HMAC-SHA256 realm="nekzus-hooks"'},
            )
    await store.used(hook)
    if request.query_string:
        # The REST code below reads ?runtime= and ?namespace=: a hook's target is fixed, not the caller's.
        raise invalid_request("A deploy hook takes no query: its target and action are fixed when it is made")
    return await _start(request, hook)


async def _start(request: web.Request, hook: Hook) -> web.Response:
    if hook.kind == "stack":
        stack = await find_stack(request, hook.target)
        return await start_stack_action(request, stack, _STACK_ACTIONS[hook.action])
    if hook.action == "update":
        creator = capable_runtime(request, ContainerCreator, "container updates")  # type: ignore[type-abstract]
        return await start_update(request, creator, hook.target)
    runtime = runtime_for(request)
    return await start_container_action(
        request, runtime, ContainerRef(hook.target), "restart", timeout=DEFAULT_TIMEOUT
    )


def add_routes(r: web.UrlDispatcher) -> None:
    """Register the routes of hooks."""
    # Everything under the prefix, slashes and empty included, so that no token, however
    # malformed, reaches another 404 than the one of an unknown token.
    r.add_post(PATH_PREFIX + "{token:.*}", call_hook)
