"""The access log: one line per request on the ``nekzus.access`` logger, once its response is done.

The middleware is the outermost one, so requests refused by the others (401, 403, 404, 405, 429)
are logged with the status the client got. A WebSocket gets a line when the upgrade is answered
(101) and a second one, with the connection's whole duration, when it ends.
Every value a client chose (the path, a token's subject) is escaped by the log formatters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from ..keys import CLIENT_IP, REQUEST_ID
from ..logsetup import ACCESS_LOGGER
from ..security.auth import PRINCIPAL, Principal

log = logging.getLogger(ACCESS_LOGGER)

# Kept beside the access log, which alone reads them.
STARTED: web.RequestKey[float] = web.RequestKey("access_started", float)
UPGRADED: web.RequestKey[bool] = web.RequestKey("access_upgraded", bool)

# nginx's code for a request that ended before a response was sent (its handler was cancelled).
CLIENT_CLOSED = 499


def principal_name(principal: Principal | None) -> str:
    """The token's subject, ``lan`` for an anonymous LAN client, ``-`` when nobody was identified."""
    if principal is None:
        return "-"
    if principal.authenticated and principal.subject:
        return principal.subject
    return "lan" if principal.local else "-"


def _client(request: web.Request) -> str:
    if CLIENT_IP in request:
        ip = request[CLIENT_IP]
        return "-" if ip is None else str(ip)
    # Refused before the client address was settled: the socket peer is all there is.
    return request.remote or "-"


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return "-" if resource is None else resource.canonical


def _write(request: web.Request, status: int, **more: Any) -> None:
    fields: dict[str, Any] = {
        "method": request.method,
        "route": _route(request),
        "path": request.path,
        "status": status,
        "duration_ms": round((time.monotonic() - request[STARTED]) * 1000, 2),
        "request_id": request.get(REQUEST_ID, "-"),
        "client": _client(request),
        "principal": principal_name(request.get(PRINCIPAL)),
        **more,
    }
    log.info("%s %s %s", request.method, request.path, status, extra={"access": fields})


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[STARTED] = time.monotonic()
    response: web.StreamResponse | None = None
    status = 500
    try:
        response = await handler(request)
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    finally:
        if response is None:
            _write(request, status)
        elif isinstance(response, web.WebSocketResponse) and request.get(UPGRADED, False):
            _write(request, response.status, event="close")
        else:
            _write(request, response.status)


async def log_websocket_upgrade(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the 101 of a WebSocket is logged when sent, not when the socket closes."""
    if response.status == 101 and STARTED in request:
        request[UPGRADED] = True
        _write(request, 101, event="upgrade")
