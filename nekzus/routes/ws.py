"""``GET /api/v1/ws``: authentication, then one reader loop per connection.

Authentication happens on the upgrade (a LAN address or ``Authorization: Bearer``) or with a
first message ``{"type": "auth", "data": {"token": …}}`` within ``websocket.auth_timeout``. Until
then the connection is not in the hub and receives nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web

from nekzus import __version__
from runtimes import NoRuntime, UnknownRuntime

from ..auth import READ_CONTAINERS, InvalidToken, Principal, bearer_token, identify, public, unauthorized
from ..errors import ApiError
from ..events import now
from ..guard import origin_allowed
from ..hub import Connection, dumps
from ..keys import AUTHORITY, CONFIG, HUB, PRINCIPAL, REGISTRY
from ..logstream import InvalidSubscription, LogSession, Subscription
from ..ratelimit import rate_pool
from .common import implied_runtime

log = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401
CLOSE_POLICY = 1008


def _same_site(request: web.Request, origin: str) -> bool:
    return origin_allowed(request, origin)


@public
@rate_pool("websocket")
async def websocket(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG]
    origin = request.headers.get("Origin")
    # A browser page on another site must not ride on a LAN client's trust.
    if origin is not None and not _same_site(request, origin):
        raise ApiError(403, "FORBIDDEN", "Cross-origin WebSocket upgrade refused")
    principal = identify(request, request.app[AUTHORITY], config.auth)
    if principal is None and bearer_token(request) is not None:
        raise unauthorized("The token is invalid or has expired", invalid=True)
    if principal is not None and not principal.allows(READ_CONTAINERS):
        raise ApiError(403, "FORBIDDEN", f"This action needs the scope {READ_CONTAINERS!r}")
    if principal is not None:
        request[PRINCIPAL] = principal  # for the access log's upgrade line

    # No permessage-deflate: a compressor per connection costs ~90 KB, and the hub writes
    # ready-made uncompressed frames to clients that keep up.
    ws = web.WebSocketResponse(
        heartbeat=config.websocket.heartbeat, max_msg_size=config.websocket.max_message, compress=False
    )
    await ws.prepare(request)
    if principal is None:
        principal = await _first_message_auth(request, ws)
        if principal is None:
            return ws
        request[PRINCIPAL] = principal
    hub = request.app[HUB]
    conn = hub.open(ws, request, principal)
    conn.send("hello", {"version": __version__})
    try:
        await _read(conn)
    finally:
        await _end_streams(conn)
        hub.forget(conn)
    return ws


async def _first_message_auth(request: web.Request, ws: web.WebSocketResponse) -> Principal | None:
    timeout = request.app[CONFIG].websocket.auth_timeout
    try:
        msg = await ws.receive(timeout=timeout)
    except TimeoutError:
        await _refuse(ws, CLOSE_UNAUTHORIZED, "UNAUTHORIZED", f"No auth message within {timeout:g} s")
        return None
    message = _parse(msg.data) if msg.type is WSMsgType.TEXT else None
    token = (
        (message or {}).get("data", {}).get("token") if message and message.get("type") == "auth" else None
    )
    if not isinstance(token, str):
        await _refuse(ws, CLOSE_UNAUTHORIZED, "UNAUTHORIZED", 'The first message must be {"type": "auth"}')
        return None
    try:
        claims = request.app[AUTHORITY].verify(token)
    except InvalidToken:
        await _refuse(ws, CLOSE_UNAUTHORIZED, "UNAUTHORIZED", "The token is invalid or has expired")
        return None
    principal = Principal(claims.subject, claims.scopes, False, True, claims.expires_at)
    if not principal.allows(READ_CONTAINERS):
        await _refuse(ws, CLOSE_POLICY, "FORBIDDEN", f"This connection needs the scope {READ_CONTAINERS!r}")
        return None
    # The hub's writer does not exist yet: this is the only message sent directly.
    await ws.send_str(dumps("auth_success", {"subject": claims.subject, "timestamp": now()}))
    return principal


async def _refuse(ws: web.WebSocketResponse, code: int, error: str, message: str) -> None:
    await ws.send_str(dumps("auth_failed", {"error": error, "message": message, "timestamp": now()}))
    await ws.close(code=code, message=error.encode())


def _parse(text: str) -> dict[str, Any] | None:
    try:
        message = json.loads(text)
    except ValueError:
        return None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return None
    data = message.get("data", {})
    if not isinstance(data, dict):
        return None
    message["data"] = data
    return message


def _invalid(conn: Connection, message: str) -> None:
    conn.send("error", {"error": "INVALID_MESSAGE", "message": message})


async def _read(conn: Connection) -> None:
    async for msg in conn.ws:
        if msg.type is WSMsgType.TEXT:
            message = _parse(msg.data)
            if message is None:
                _invalid(conn, 'Messages are JSON objects: {"type": "...", "data": {...}}')
                continue
            _handle(conn, message["type"], message["data"])
        elif msg.type is WSMsgType.BINARY:
            _invalid(conn, "Binary messages are not understood")


def _handle(conn: Connection, message_type: str, data: dict[str, Any]) -> None:
    if message_type == "subscribe":
        types = data.get("types")
        if not isinstance(types, list) or not types or not all(isinstance(t, str) and t for t in types):
            _invalid(conn, "subscribe needs data.types, a list of message types or patterns like container.*")
            return
        conn.filters = frozenset(types)
        conn.send("subscribed", {"types": sorted(conn.filters)})
    elif message_type == "container.logs.subscribe":
        _subscribe_logs(conn, data)
    elif message_type == "container.logs.unsubscribe":
        _unsubscribe_logs(conn, data)
    elif message_type == "auth":
        _reauthenticate(conn, data)
    else:
        _invalid(conn, f"Unknown message type {message_type[:64]!r}")


def _reauthenticate(conn: Connection, data: dict[str, Any]) -> None:
    token = data.get("token")
    try:
        claims = conn.request.app[AUTHORITY].verify(token if isinstance(token, str) else "")
    except InvalidToken:
        conn.send("auth_failed", {"error": "UNAUTHORIZED", "message": "The token is invalid or has expired"})
        return
    principal = Principal(claims.subject, claims.scopes, conn.principal.local, True)
    if not principal.allows(READ_CONTAINERS):
        conn.send("auth_failed", {"error": "FORBIDDEN", "message": f"The token lacks {READ_CONTAINERS!r}"})
        return
    conn.principal = principal
    conn.send("auth_success", {"subject": claims.subject})


def _subscribe_logs(conn: Connection, data: dict[str, Any]) -> None:
    try:
        sub = Subscription.from_message(data)
    except InvalidSubscription as exc:
        _invalid(conn, f"container.logs.subscribe: {exc}")
        return
    app = conn.request.app
    try:
        runtime = app[REGISTRY].get(implied_runtime(sub.runtime, sub.namespace))
    except (UnknownRuntime, NoRuntime):
        conn.send(
            "container.logs.error",
            {
                "containerId": sub.container_id,
                "error": "INVALID_RUNTIME",
                "message": "Invalid runtime specified",
            },
        )
        return
    previous = conn.streams.pop(sub.key, None)
    if previous is not None:
        previous.stop()
    elif len(conn.streams) >= app[CONFIG].websocket.max_log_streams:
        _invalid(conn, f"At most {app[CONFIG].websocket.max_log_streams} log streams per connection")
        return
    session = LogSession(conn, runtime, sub)
    task = app[HUB].spawn(session.run(), name=f"logs-{sub.container_id}-{id(conn):x}")
    session.task = task
    conn.streams[sub.key] = session

    def forget(_: object) -> None:
        if conn.streams.get(sub.key) is session:
            del conn.streams[sub.key]

    task.add_done_callback(forget)


def _unsubscribe_logs(conn: Connection, data: dict[str, Any]) -> None:
    key = (
        str(data.get("runtime") or ""),
        str(data.get("namespace") or ""),
        str(data.get("containerId") or ""),
        str(data.get("container") or ""),
    )
    session = conn.streams.pop(key, None)
    if session is None:
        _invalid(conn, "container.logs.unsubscribe: no such log stream on this connection")
        return
    session.stop()


async def _end_streams(conn: Connection) -> None:
    sessions = list(conn.streams.values())
    conn.streams.clear()
    tasks = [s.task for s in sessions if s.task is not None]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
