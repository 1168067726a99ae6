"""``Idempotency-Key`` on the POST routes that start work: the header, its scope, and the replay.

``@idempotent`` goes on a handler under its ``@requires`` and ``@rate_pool`` marks, so it runs
after auth and the rate limiter (a replay is counted like any request). A request without the
header is served as before. With it, the key is scoped to the caller (the token's subject, else
the client's own address), the method and the path; the request is fingerprinted by its query
string and the raw bytes of its body, so the same JSON spelt differently is another request.
Only a 2xx answer is kept: an error started nothing, so running the request again is safe and
lets a client that fixed its body keep its key; a 5xx or 429 must be retryable.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

from aiohttp import web

from ..errors import invalid_request
from ..keys import CLIENT_IP
from ..operations.idempotency import Answer, Idempotency
from ..security.auth import PRINCIPAL

IDEMPOTENCY: web.AppKey[Idempotency] = web.AppKey("idempotency")
HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
MAX_KEY = 255
# The headers of an answer that are replayed with it; the others (request id, rate limits) are
# the retry's own.
KEPT_HEADERS = ("Content-Type", "Location")
# A key as sent bare, or as the draft's structured-field string ("..." with \" and \\ escapes).
# A bare comma is refused: it is what a proxy makes of two headers folded into one.
_BARE = re.compile(r"[\x20-\x2b\x2d-\x7e]+")
_QUOTED = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
_ESCAPE = re.compile(r'\\(["\\])')
_RULE = (
    f"Header {HEADER!r} must be one key of 1-{MAX_KEY} printable ASCII characters, bare or as a "
    "quoted string (a UUID is best), sent once"
)

H = TypeVar("H", bound=Callable[[web.Request], Awaitable[web.StreamResponse]])


def idempotency_key(request: web.Request) -> str | None:
    """The request's key, None without the header; anything malformed is 400 INVALID_REQUEST."""
    values = request.headers.getall(HEADER, [])
    if not values:
        return None
    if len(values) > 1:
        raise invalid_request(_RULE)
    value = values[0]
    quoted = _QUOTED.fullmatch(value)
    if quoted is not None:
        key = _ESCAPE.sub(r"\1", quoted.group(1))
    elif _BARE.fullmatch(value) and not value.startswith('"'):
        key = value
    else:
        raise invalid_request(_RULE)
    if not 1 <= len(key) <= MAX_KEY:
        raise invalid_request(_RULE)
    return key


def caller(request: web.Request) -> str:
    """Whose keys these are: the token's subject, else (anonymous LAN) the exact client address.
    Security: one caller's key can never name another's answer."""
    principal = request[PRINCIPAL]
    if principal.authenticated and principal.subject:
        return "sub:" + principal.subject
    return f"ip:{request[CLIENT_IP]}"


def _digest(*parts: str | bytes) -> str:
    """A hash of ``parts`` that no other split of the same bytes gives (each is length-prefixed)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", "surrogateescape") if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def _answer(response: web.StreamResponse, fingerprint: str) -> Answer | None:
    """What is kept of a response: a 2xx with its body in hand, else nothing."""
    if not isinstance(response, web.Response) or not 200 <= response.status < 300:
        return None
    body = response.body
    if not isinstance(body, bytes):
        return None
    headers = tuple((name, response.headers[name]) for name in KEPT_HEADERS if name in response.headers)
    return Answer(fingerprint, response.status, headers, body, time.time())


def _replay(answer: Answer) -> web.Response:
    response = web.Response(status=answer.status, body=answer.body, headers=dict(answer.headers))
    response.headers[REPLAYED] = "true"
    return response


def idempotent(handler: H) -> H:
    """Mark a POST handler that starts work as taking ``Idempotency-Key``."""

    @functools.wraps(handler)
    async def keyed(request: web.Request) -> web.StreamResponse:
        key = idempotency_key(request)
        if key is None:
            return await handler(request)
        scope = _digest(caller(request), request.method, request.path, key)
        fingerprint = _digest(request.query_string, await request.read())
        keys = request.app[IDEMPOTENCY]
        replay = await keys.begin(scope, fingerprint)
        if replay is not None:
            return _replay(replay)
        answer = None
        try:
            response = await handler(request)
            answer = _answer(response, fingerprint)
        finally:
            keys.settle(scope, answer)
        return response

    return cast(H, keyed)
