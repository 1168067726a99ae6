"""Request id and JSON errors: no request leaves the gateway with a plain-text or HTML error."""

from __future__ import annotations

import logging
import re
import uuid
from http import HTTPStatus

from aiohttp import web
from aiohttp.typedefs import Handler

from ..errors import ApiError, error_response
from ..keys import REQUEST_ID
from ..logsetup import request_context

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

_HTTP_CODES = {
    400: ("INVALID_REQUEST", "The request is malformed"),
    403: ("FORBIDDEN", "Forbidden"),
    404: ("NOT_FOUND", "No such endpoint"),
    405: ("METHOD_NOT_ALLOWED", "Method not allowed on this endpoint"),
    413: ("PAYLOAD_TOO_LARGE", "The request body is too large"),
}


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    # A caller's id is kept only when it is short and plain (fullmatch: not even a trailing newline),
    # so it cannot inject into logs.
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = incoming if _SAFE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    with request_context(request_id):
        response = await handler(request)
    response.headers[REQUEST_ID_HEADER] = request_id
    return response


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    code, message = _HTTP_CODES.get(exc.status, ("HTTP_ERROR", HTTPStatus(exc.status).phrase))
    response = error_response(exc.status, code, message)
    if exc.status == 405 and "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(exc)
    except Exception:
        # The record gets its request id like every line logged while the request is served.
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "INTERNAL_ERROR", "An unexpected error occurred")
