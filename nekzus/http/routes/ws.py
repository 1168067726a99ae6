"""``GET /api/v1/ws``: authentication, then one reader loop per connection.

Authentication happens on the upgrade (a LAN address or ``Authorization: Bearer``) or with a
first message ``{"type": "auth", "data": {"token": …}}`` within ``websocket.auth_timeout``. Until
then the connection is not in the hub and receives nothing.

A session authenticated with a token lasts as long as the token would be accepted over HTTP
(``exp`` plus the verifier's leeway). Then the server sends ``auth.expired``: a LAN connection
carries on as anonymous LAN (the HTTP rule for an expired token from the LAN), any other is
suspended (no events, log streams wait, no new ones) and closed with 4401 unless an ``auth``
message with a fresh token arrives within ``websocket.reauth_grace``.

A client that reconnects names the last event it received (``epoch`` and ``seq``) in a ``resume``
message, in its ``auth`` message or in the upgrade's query: it is sent every kept event after it
that its subscription lets through, then ``resumed``, then the live stream; or, when those events
are gone, a ``resync`` snapshot, then the events since the snapshot, then the live stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMessage, WSMsgType, web

from nekzus import __version__
from runtimes import (
    ContainerRef,
    ContainerRuntime,
    ContainerState,
    ContainerSummary,
    NoRuntime,
    NotNamespaced,
    RuntimeFailure,
    UnknownRuntime,
)

from ... import jsoninput
from ...errors import ApiError, container_not_running, from_runtime
from ...jsoninput import InvalidJson
from ...keys import CONFIG, EVENT_BUS, REGISTRY
from ...params import is_valid_container_id, single_query
from ...realtime.events import now
from ...realtime.hub import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_TRY_AGAIN_LATER,
    HUB,
    Connection,
    OutboxClosed,
    close_socket,
    dumps,
)
from ...realtime.logrequest import CONTAINER_ID_RULE, InvalidSubscription, LogSubscription
from ...realtime.logstream import LogSession
from ...realtime.replay import Expired
from ...realtime.stacklogs import StackLogSession, StackLogSubscription
from ...realtime.statsfeed import MAX_CONTAINERS as MAX_STATS_CONTAINERS
from ...realtime.statsfeed import STATS_FEED, InvalidStatsRequest, StatsRequest, Target
from ...security.auth import (
    AUTHORITY,
    LEEWAY_SECONDS,
    PRINCIPAL,
    READ_CONTAINERS,
    READ_STACKS,
    InvalidToken,
    Principal,
    anonymous_lan,
    bearer_token,
    principal_of,
    public,
    unauthorized,
)
from ...security.guard import from_foreign_page
from ...security.ratelimit import rate_pool
from ...stacks.model import SERVICE
from .events import (
    MAX_EPOCH_LENGTH,
    MAX_FILTER_LENGTH,
    MAX_FILTERS,
    MAX_SEQ,
    seq_query,
    snapshot,
    valid_types,
)
from .stack_common import find_stack, stack_runtime
from .stack_logs import chosen_services

log = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401
CLOSE_POLICY = 1008
# A resync whose snapshot took so long that the events since it left the buffer is taken again,
# this many times at most; then the client is too slow for the stream and is closed with 1013.
RESYNC_ATTEMPTS = 3
SHAPE = 'Messages are JSON objects: {"type": "...", "data": {...}}'


class InvalidMessage(ValueError):
    """A client message that cannot be used; the text goes back in an INVALID_MESSAGE error."""


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """The last event a client received: its gateway's ``epoch`` and its ``seq``."""

    epoch: str
    seq: int


def resume_point(data: dict[str, Any], where: str) -> ResumePoint | None:
    """The ``epoch`` and ``seq`` of a message's data (None when it has neither); InvalidMessage
    when only one is given or either is not what the gateway hands out."""
    epoch, seq = data.get("epoch"), data.get("seq")
    if epoch is None and seq is None:
        return None
    if not isinstance(epoch, str) or not 0 < len(epoch) <= MAX_EPOCH_LENGTH:
        raise InvalidMessage(f"{where}: epoch must be a string of 1 to {MAX_EPOCH_LENGTH} characters")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
        raise InvalidMessage(f"{where}: seq must be a whole number from 0 to {MAX_SEQ}")
    return ResumePoint(epoch, seq)


def _query_resume_point(request: web.Request) -> ResumePoint | None:
    """``?epoch=&seq=`` of the upgrade; a bad value is INVALID_REQUEST before the upgrade."""
    epoch = single_query(request, "epoch")
    seq = seq_query(request, "seq")
    if epoch is None and seq is None:
        return None
    if epoch is None or seq is None or not 0 < len(epoch) <= MAX_EPOCH_LENGTH:
        raise ApiError(
            400,
            "INVALID_REQUEST",
            f"Query parameters 'epoch' (1 to {MAX_EPOCH_LENGTH} characters) and 'seq' go together",
        )
    return ResumePoint(epoch, seq)


@public
@rate_pool("websocket")
async def websocket(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG]
    # A browser page on another site must not ride on a LAN client's trust: the same rule as for
    # state-changing requests (a foreign or repeated Origin, or Sec-Fetch-Site: cross-site).
    if from_foreign_page(request):
        raise ApiError(403, "ORIGIN_NOT_ALLOWED", "Cross-origin WebSocket upgrade refused")
    principal = principal_of(request, request.app[AUTHORITY], config.auth)
    if principal is None and bearer_token(request) is not None:
        raise unauthorized("The token is invalid or has expired", invalid=True)
    if principal is not None and not principal.allows(READ_CONTAINERS):
        raise ApiError(403, "FORBIDDEN", f"This action needs the scope {READ_CONTAINERS!r}")
    if principal is not None:
        request[PRINCIPAL] = principal  # for the access log's upgrade line
    resume = _query_resume_point(request)

    # No permessage-deflate: a compressor per connection costs ~90 KB, and the hub writes
    # ready-made uncompressed frames to clients that keep up.
    ws = web.WebSocketResponse(
        heartbeat=config.websocket.heartbeat, max_msg_size=config.websocket.max_message, compress=False
    )
    await ws.prepare(request)
    try:
        await _session(request, ws, principal, resume)
    except Exception:
        # Past the upgrade, an exception reaching aiohttp would be answered with an HTTP 500
        # written into the WebSocket stream: log it and close the socket properly instead.
        log.exception("the WebSocket session of %s failed", request.remote)
        await close_socket(ws, request, CLOSE_INTERNAL_ERROR, b"internal error")
    return ws


async def _session(
    request: web.Request, ws: web.WebSocketResponse, principal: Principal | None, resume: ResumePoint | None
) -> None:
    if principal is None:
        authenticated = await _first_message_auth(request, ws)
        if authenticated is None:
            return
        principal, resume = authenticated[0], authenticated[1] or resume
        request[PRINCIPAL] = principal
    hub = request.app[HUB]
    conn = hub.open(ws, request, principal)
    # Ordering: before anything is awaited, so no live event reaches the connection ahead of its replay.
    conn.catching_up = resume is not None
    try:
        _watch_expiry(conn)
        await conn.reply("hello", {"version": __version__})
        if resume is not None:
            await _resume(conn, resume)
        await _read(conn)
    except OutboxClosed:
        pass  # the hub closed the connection (1013, 4401 or shutdown) while a reply waited
    finally:
        await _end_streams(conn)
        hub.forget(conn)


async def _first_message_auth(
    request: web.Request, ws: web.WebSocketResponse
) -> tuple[Principal, ResumePoint | None] | None:
    """The principal of the first ``auth`` message and where it asks to resume, or None once the
    connection is refused.

    A message that is not JSON of the right shape gets INVALID_MESSAGE and the wait goes on
    (until the same deadline); a well-formed message of another type is refused with 4401.
    """
    timeout = request.app[CONFIG].websocket.auth_timeout
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            msg = await ws.receive(timeout=max(deadline - asyncio.get_running_loop().time(), 0.001))
        except TimeoutError:
            await _refuse(
                request, ws, CLOSE_UNAUTHORIZED, "UNAUTHORIZED", f"No auth message within {timeout:g} s"
            )
            return None
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return None
        try:
            message_type, data = _parse(msg)
            resume = resume_point(data, "auth") if message_type == "auth" else None
        except InvalidMessage as exc:
            await ws.send_str(
                dumps("error", {"error": "INVALID_MESSAGE", "message": str(exc), "timestamp": now()})
            )
            continue
        break
    token = data.get("token") if message_type == "auth" else None
    if not isinstance(token, str):
        await _refuse(
            request, ws, CLOSE_UNAUTHORIZED, "UNAUTHORIZED", 'The first message must be {"type": "auth"}'
        )
        return None
    try:
        claims = request.app[AUTHORITY].verify(token)
    except InvalidToken:
        await _refuse(request, ws, CLOSE_UNAUTHORIZED, "UNAUTHORIZED", "The token is invalid or has expired")
        return None
    principal = Principal(claims.subject, claims.scopes, False, True, claims.expires_at)
    if not principal.allows(READ_CONTAINERS):
        await _refuse(
            request, ws, CLOSE_POLICY, "FORBIDDEN", f"This connection needs the scope {READ_CONTAINERS!r}"
        )
        return None
    # The hub's writer does not exist yet: until here, messages go straight to the socket.
    await ws.send_str(
        dumps("auth_success", {"subject": claims.subject, "expiresAt": claims.expires_at, "timestamp": now()})
    )
    return principal, resume


async def _refuse(
    request: web.Request, ws: web.WebSocketResponse, code: int, error: str, message: str
) -> None:
    await ws.send_str(dumps("auth_failed", {"error": error, "message": message, "timestamp": now()}))
    await close_socket(ws, request, code, error.encode())


def _parse(msg: WSMessage) -> tuple[str, dict[str, Any]]:
    """(type, data) of a client message, or InvalidMessage saying what is wrong with it."""
    if msg.type is WSMsgType.BINARY:
        raise InvalidMessage("Binary messages are not understood")
    if msg.type is not WSMsgType.TEXT:
        raise InvalidMessage(SHAPE)
    try:
        message = jsoninput.loads(msg.data)
    except InvalidJson as exc:
        raise InvalidMessage(f"The message is {exc}. {SHAPE}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise InvalidMessage(SHAPE)
    data = message.get("data", {})
    if not isinstance(data, dict):
        raise InvalidMessage(f"data must be an object. {SHAPE}")
    return message["type"], data


# -- the session's lifetime ----------------------------------------------------------------------


def _watch_expiry(conn: Connection) -> None:
    """Schedule the end of the session's token, or nothing for a session without one.

    The moment is ``exp`` plus the verifier's leeway: the token stops working on the WebSocket
    exactly when the HTTP API starts refusing it.
    """
    expires_at = conn.principal.expires_at
    if expires_at is None:
        conn.set_deadline(None)
        return
    conn.set_deadline(expires_at + LEEWAY_SECONDS - time.time(), lambda: _expire(conn))


def _expire(conn: Connection) -> None:
    principal = conn.principal
    notice: dict[str, Any] = {"subject": principal.subject, "expiresAt": principal.expires_at}
    if principal.local:
        # The HTTP rule: an expired token from the LAN is anonymous LAN, not an error.
        conn.principal = anonymous_lan()
        conn.notify(
            "auth.expired",
            {
                **notice,
                "closesIn": None,
                "anonymous": True,
                "message": "The token has expired: the connection continues as an anonymous LAN client",
            },
        )
        return
    grace = conn.request.app[CONFIG].websocket.reauth_grace
    # Security: from here on the session receives no events and its log streams wait.
    conn.suspend()
    conn.notify(
        "auth.expired",
        {
            **notice,
            "closesIn": grace,
            "anonymous": False,
            "message": (
                f'The token has expired: send {{"type": "auth"}} with a fresh token within {grace:g} s, '
                f"or the connection closes with {CLOSE_UNAUTHORIZED}"
            ),
        },
    )
    hub = conn.request.app[HUB]
    conn.set_deadline(grace, lambda: hub.end(conn, CLOSE_UNAUTHORIZED, b"token expired"))


async def _reauthenticate(conn: Connection, data: dict[str, Any]) -> None:
    """Replace the session's principal by a fresh token's; this also lifts an expiry's suspension.
    With ``epoch`` and ``seq``, the connection then resumes from there."""
    resume = resume_point(data, "auth")
    token = data.get("token")
    try:
        claims = conn.request.app[AUTHORITY].verify(token if isinstance(token, str) else "")
    except InvalidToken:
        await conn.reply(
            "auth_failed", {"error": "UNAUTHORIZED", "message": "The token is invalid or has expired"}
        )
        return
    principal = Principal(claims.subject, claims.scopes, conn.principal.local, True, claims.expires_at)
    if not principal.allows(READ_CONTAINERS):
        await conn.reply(
            "auth_failed", {"error": "FORBIDDEN", "message": f"The token lacks {READ_CONTAINERS!r}"}
        )
        return
    conn.principal = principal
    _watch_expiry(conn)
    await conn.reply("auth_success", {"subject": claims.subject, "expiresAt": claims.expires_at})
    # After the reply: whatever the suspension held back follows the auth_success.
    conn.resume()
    if resume is not None:
        await _resume(conn, resume)


# -- resuming the event stream -------------------------------------------------------------------


async def _resume_message(conn: Connection, data: dict[str, Any]) -> None:
    if set(data) - {"epoch", "seq"}:
        raise InvalidMessage("resume takes only epoch and seq")
    point = resume_point(data, "resume")
    if point is None:
        raise InvalidMessage("resume needs epoch and seq: those of the last event received")
    await _resume(conn, point)


async def _resume(conn: Connection, point: ResumePoint) -> None:
    """Replay what the client missed after ``point``, or resync it; then it is live again.

    Whatever happens (a refusal, a failed snapshot, the connection closing), the connection
    leaves here live, so it is never left deaf.
    """
    # Ordering: live events pass the connection by from here; the buffer holds them for it.
    conn.catching_up = True
    try:
        if conn.suspended:
            await conn.reply(
                "error",
                {
                    "error": "UNAUTHORIZED",
                    "message": 'The token has expired: send {"type": "auth"} with a fresh token first',
                },
            )
            return
        hub = conn.request.app[HUB]
        replay = hub.replay
        # The mark between the live events the connection may have had before (a resume message
        # arrives on a live connection) and the replay, which sends those again in their place.
        await conn.reply("resuming", {"seq": point.seq})

        def resumed(seq: int, replayed: int) -> str:
            return dumps(
                "resumed", {"epoch": replay.epoch, "seq": seq, "replayed": replayed, "timestamp": now()}
            )

        try:
            replay.check(point.epoch, point.seq)
            await hub.catch_up(conn, point.seq, resumed)
        except Expired:
            await _resync(conn)
    finally:
        conn.catching_up = False


async def _resync(conn: Connection) -> None:
    """Send a snapshot and the current ``seq``, then every event since the snapshot began.

    The snapshot is read after its ``seq`` is noted, so an event it already shows may follow it
    again (harmless: events say what a thing is now), but none is missed.
    """
    hub = conn.request.app[HUB]
    replay = hub.replay
    for _ in range(RESYNC_ATTEMPTS):
        mark = replay.seq
        try:
            state = await snapshot(conn.request)
        except ApiError as exc:
            await conn.reply("error", {"error": exc.code, "message": exc.message})
            return
        message = {"epoch": replay.epoch, "seq": mark, **state, "timestamp": now()}
        await conn.outbox.put_log(dumps("resync", message))
        if not replay.max_events:
            return  # no buffer to catch up from (documented: events during the snapshot are missed)
        try:
            await hub.catch_up(conn, mark)
            return
        except Expired:
            continue
    hub.end(conn, CLOSE_TRY_AGAIN_LATER, b"too slow")


# -- messages ------------------------------------------------------------------------------------


async def _read(conn: Connection) -> None:
    """Answer each message in turn; a defect in one answer never ends the connection.

    Each answer waits for room in the outbox, so a client that sends faster than it reads is
    simply read more slowly.
    """
    failures = 0
    async for msg in conn.ws:
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            continue  # an ERROR: aiohttp has closed the connection, and the loop ends next
        try:
            try:
                message_type, data = _parse(msg)
                await _handle(conn, message_type, data)
            except InvalidMessage as exc:
                await _invalid(conn, str(exc))
        except OutboxClosed:
            raise
        except Exception:
            failures += 1
            if failures == 1:  # once per connection: a client repeating the message cannot flood the log
                log.exception("a WebSocket message from %s could not be handled", conn.peer)
            await conn.reply(
                "error", {"error": "INTERNAL_ERROR", "message": "The message could not be handled"}
            )


async def _invalid(conn: Connection, message: str) -> None:
    await conn.reply("error", {"error": "INVALID_MESSAGE", "message": message})


async def _handle(conn: Connection, message_type: str, data: dict[str, Any]) -> None:
    if message_type == "subscribe":
        await _subscribe(conn, data)
    elif message_type == "container.logs.subscribe":
        await _subscribe_logs(conn, data)
    elif message_type == "container.logs.unsubscribe":
        await _unsubscribe_logs(conn, data)
    elif message_type == "stack.logs.subscribe":
        await _subscribe_stack_logs(conn, data)
    elif message_type == "stack.logs.unsubscribe":
        await _unsubscribe_stack_logs(conn, data)
    elif message_type == "container.stats.subscribe":
        await _subscribe_stats(conn, data)
    elif message_type == "container.stats.unsubscribe":
        await _unsubscribe_stats(conn, data)
    elif message_type == "auth":
        await _reauthenticate(conn, data)
    elif message_type == "resume":
        await _resume_message(conn, data)
    else:
        raise InvalidMessage(f"Unknown message type {message_type[:64]!r}")


async def _subscribe(conn: Connection, data: dict[str, Any]) -> None:
    types = data.get("types")
    if not valid_types(types):
        raise InvalidMessage(
            f"subscribe needs data.types, a list of 1 to {MAX_FILTERS} message types or patterns "
            f"like container.* (each at most {MAX_FILTER_LENGTH} characters)"
        )
    conn.filters = frozenset(types)
    await conn.reply("subscribed", {"types": sorted(conn.filters)})


async def _subscribe_logs(conn: Connection, data: dict[str, Any]) -> None:
    try:
        sub = LogSubscription.from_message(data)
    except InvalidSubscription as exc:
        raise InvalidMessage(f"container.logs.subscribe: {exc}") from None
    if conn.suspended:
        await conn.reply(
            "container.logs.error",
            {
                "containerId": sub.container_id,
                "error": "UNAUTHORIZED",
                "message": 'The token has expired: send {"type": "auth"} with a fresh token first',
            },
        )
        return
    app = conn.request.app
    try:
        runtime = app[REGISTRY].addressed(sub.runtime, sub.namespace)
    except NotNamespaced as exc:
        await _runtime_refused(conn, sub, str(exc))
        return
    except (UnknownRuntime, NoRuntime):
        await _runtime_refused(conn, sub, "Invalid runtime specified")
        return
    # The runtime's own id rules, also when it is the primary one the message did not name.
    if not is_valid_container_id(sub.container_id, runtime=runtime):
        raise InvalidMessage(f"container.logs.subscribe: {CONTAINER_ID_RULE}")
    previous = conn.streams.pop(sub.key, None)
    if previous is not None:
        await _stop(conn, previous)
    elif _stream_count(conn) >= app[CONFIG].websocket.max_log_streams:
        raise InvalidMessage(f"At most {app[CONFIG].websocket.max_log_streams} log streams per connection")
    session = LogSession(conn, runtime, sub)
    task = app[HUB].spawn(session.run(), name=f"logs-{sub.container_id}-{id(conn):x}")
    session.task = task
    conn.streams[sub.key] = session

    def forget(_: object) -> None:
        if conn.streams.get(sub.key) is session:
            del conn.streams[sub.key]

    task.add_done_callback(forget)


async def _runtime_refused(conn: Connection, sub: LogSubscription, message: str) -> None:
    await conn.reply(
        "container.logs.error",
        {"containerId": sub.container_id, "error": "INVALID_RUNTIME", "message": message},
    )


async def _unsubscribe_logs(conn: Connection, data: dict[str, Any]) -> None:
    values = []
    for name in ("runtime", "namespace", "containerId", "container"):
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidMessage(f"container.logs.unsubscribe: {name} must be a string")
        values.append(value or "")
    session = conn.streams.pop((values[0], values[1], values[2], values[3]), None)
    if session is None:
        raise InvalidMessage("container.logs.unsubscribe: no such log stream on this connection")
    await _stop(conn, session)


async def _stop(conn: Connection, session: LogSession) -> None:
    """End a stream for the client, answering ``container.logs.ended`` after its last line.

    A stream that ended on its own meanwhile has already said so: no second ``ended``.
    """
    if await session.stop():
        await conn.reply("container.logs.ended", session.ended())


def _stream_count(conn: Connection) -> int:
    """Log streams of the connection, a followed stack counting as one (it follows a bounded
    number of containers)."""
    return len(conn.streams) + len(conn.stack_streams)


async def _subscribe_stack_logs(conn: Connection, data: dict[str, Any]) -> None:
    try:
        sub = StackLogSubscription.from_message(data)
    except InvalidSubscription as exc:
        raise InvalidMessage(f"stack.logs.subscribe: {exc}") from None
    # Security: the connection lets in readers of containers; a stack's logs need read:stacks too.
    if not conn.principal.allows(READ_STACKS):
        await _stack_refused(conn, sub.stack, "FORBIDDEN", f"This action needs the scope {READ_STACKS!r}")
        return
    if conn.suspended:
        await _stack_refused(
            conn,
            sub.stack,
            "UNAUTHORIZED",
            'The token has expired: send {"type": "auth"} with a fresh token first',
        )
        return
    request = conn.request
    try:
        runtime = stack_runtime(request)
        stack = await find_stack(request, sub.stack)
        services = chosen_services(stack, sub.services)
    except ApiError as exc:
        await _stack_refused(conn, sub.stack, exc.code, exc.message)
        return
    previous = conn.stack_streams.pop(stack.name, None)
    if previous is not None:
        await _stop_stack(conn, previous)
    elif _stream_count(conn) >= request.app[CONFIG].websocket.max_log_streams:
        raise InvalidMessage(
            f"At most {request.app[CONFIG].websocket.max_log_streams} log streams per connection"
        )
    chosen = set(services)

    async def containers() -> list[tuple[str, ContainerSummary]]:
        try:
            current = await find_stack(request, stack.name)
        except ApiError as exc:
            if exc.status == 404:
                return []  # every container is gone for now (a down before an up): wait for new ones
            raise
        return [(c.labels.get(SERVICE, ""), c) for c in current.containers if c.labels.get(SERVICE) in chosen]

    hub = request.app[HUB]
    session = StackLogSession(conn, runtime, sub, services, containers, request.app[EVENT_BUS], hub.spawn)
    session.task = hub.spawn(session.run(), name=f"stack-logs-{stack.name}-{id(conn):x}")
    conn.stack_streams[stack.name] = session

    def forget(_: object) -> None:
        if conn.stack_streams.get(stack.name) is session:
            del conn.stack_streams[stack.name]

    session.task.add_done_callback(forget)


async def _stack_refused(conn: Connection, stack: str, error: str, message: str) -> None:
    await conn.reply("stack.logs.error", {"stack": stack, "error": error, "message": message})


async def _unsubscribe_stack_logs(conn: Connection, data: dict[str, Any]) -> None:
    stack = data.get("stack")
    if not isinstance(stack, str):
        raise InvalidMessage("stack.logs.unsubscribe: stack must be a string")
    session = conn.stack_streams.pop(stack, None)
    if session is None:
        raise InvalidMessage("stack.logs.unsubscribe: no such stack log stream on this connection")
    await _stop_stack(conn, session)


async def _stop_stack(conn: Connection, session: StackLogSession) -> None:
    """End a stack's stream for the client, answering ``stack.logs.ended`` after its last line."""
    await session.stop()
    await conn.reply("stack.logs.ended", session.ended())


async def _end_streams(conn: Connection) -> None:
    conn.request.app[STATS_FEED].unwatch(conn)
    sessions = list(conn.streams.values())
    stack_sessions = list(conn.stack_streams.values())
    conn.streams.clear()
    conn.stack_streams.clear()
    tasks = [s.task for s in sessions if s.task is not None]
    tasks += [s.task for s in stack_sessions if s.task is not None]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# -- live stats ----------------------------------------------------------------------------------


async def _subscribe_stats(conn: Connection, data: dict[str, Any]) -> None:
    """Follow containers' stats, replacing the connection's previous stats subscription.

    The message is checked whole before anything changes; a container that cannot be followed
    (unknown, not running, on a runtime without a stats stream) gets its own
    ``container.stats.error`` and the others are followed.
    """
    try:
        req = StatsRequest.from_message(data)
    except InvalidStatsRequest as exc:
        raise InvalidMessage(f"container.stats.subscribe: {exc}") from None
    if conn.suspended:
        await _stats_refused(
            conn, "", "UNAUTHORIZED", 'The token has expired: send {"type": "auth"} with a fresh token first'
        )
        return
    app = conn.request.app
    feed = app[STATS_FEED]
    if req.linked:
        watch = feed.watch(conn, req.interval, linked=True)
        try:
            await feed.follow_now(watch)
        except (ApiError, RuntimeFailure) as exc:
            feed.unwatch(conn)
            error = exc if isinstance(exc, ApiError) else from_runtime(exc)
            await _stats_refused(conn, "", error.code, error.message)
            return
    else:
        try:
            runtime = app[REGISTRY].addressed(req.runtime, req.namespace)
        except NotNamespaced as exc:
            await _stats_refused(conn, "", "INVALID_RUNTIME", str(exc))
            return
        except (UnknownRuntime, NoRuntime):
            await _stats_refused(conn, "", "INVALID_RUNTIME", "Invalid runtime specified")
            return
        if not all(is_valid_container_id(cid, runtime=runtime) for cid in req.container_ids):
            raise InvalidMessage(f"container.stats.subscribe: {CONTAINER_ID_RULE}")
        if feed.streams(runtime.name) is None:
            await _stats_refused(
                conn,
                "",
                "OPERATION_NOT_SUPPORTED",
                f"The {runtime.name} runtime has no live stats stream: "
                "use GET /api/v1/containers/{id}/stats",
            )
            return
        found = await asyncio.gather(
            *(_stats_target(conn, runtime, cid, req.namespace) for cid in req.container_ids)
        )
        watch = feed.watch(conn, req.interval, linked=False)
        for target in found:
            if target is not None:
                watch.follow(target)
    await conn.reply(
        "container.stats.subscribed",
        {"containerIds": watch.container_ids, "linked": req.linked, "interval": req.interval},
    )


async def _stats_target(
    conn: Connection, runtime: ContainerRuntime, cid: str, namespace: str
) -> Target | None:
    """The running container ``cid`` names, else None once the client is told why not."""
    try:
        current = await runtime.get(ContainerRef(cid, namespace))
    except RuntimeFailure as exc:
        error = from_runtime(exc, container_id=cid, reading=True)
        await _stats_refused(conn, cid, error.code, error.message)
        return None
    if current.state is not ContainerState.RUNNING:
        error = container_not_running(cid)
        await _stats_refused(conn, cid, error.code, error.message)
        return None
    return Target.of(current)


async def _stats_refused(conn: Connection, cid: str, error: str, message: str) -> None:
    await conn.reply(
        "container.stats.error", {"containerId": cid or None, "error": error, "message": message}
    )


async def _unsubscribe_stats(conn: Connection, data: dict[str, Any]) -> None:
    """Stop following some containers (``containerIds``) or, without them, every one."""
    unknown = sorted(k for k in data if k != "containerIds")
    if unknown:
        raise InvalidMessage(f"container.stats.unsubscribe: unknown field {unknown[0][:64]!r}")
    ids = data.get("containerIds")
    if ids is not None and (
        not isinstance(ids, list)
        or not 0 < len(ids) <= MAX_STATS_CONTAINERS
        or not all(is_valid_container_id(i) for i in ids)
    ):
        raise InvalidMessage(
            f"container.stats.unsubscribe: containerIds must be a list of 1 to {MAX_STATS_CONTAINERS} "
            "container ids (or leave it out to stop every one)"
        )
    feed = conn.request.app[STATS_FEED]
    watch = feed.watch_of(conn)
    if watch is None:
        raise InvalidMessage("container.stats.unsubscribe: no stats subscription on this connection")
    if ids is None:
        removed = watch.container_ids
        feed.unwatch(conn)
    elif watch.linked:
        raise InvalidMessage(
            "container.stats.unsubscribe: a linked subscription ends whole (leave containerIds out)"
        )
    else:
        removed = sorted(watch.remove(set(ids)))
    await conn.reply("container.stats.unsubscribed", {"containerIds": removed})
