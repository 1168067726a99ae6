"""JSON answers to requests aiohttp cannot parse (an 8 KB URL, 1,000 headers, bad chunking, ...).

aiohttp answers those from its connection protocol, before the application or any middleware sees
a request, with a ``text/plain`` page that quotes the offending input. The only hook is
``web.RequestHandler.handle_error``, which this module overrides; ``tests/unit/test_server.py`` checks
its signature and that it is still what answers a malformed request, and pyproject.toml bounds
aiohttp's version so that a change there is noticed before it ships.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.http_exceptions import (
    BadStatusLine,
    ContentEncodingError,
    ContentLengthError,
    InvalidHeader,
    LineTooLong,
    TransferEncodingError,
)

from ..errors import error_response

log = logging.getLogger(__name__)

# Fixed sentences by the parser's exception class: its own message quotes the client's bytes.
_SENTENCES: tuple[tuple[type[Exception], str], ...] = (
    (LineTooLong, "The request line or a header is too long"),
    (InvalidHeader, "The request has an invalid header"),
    (BadStatusLine, "The request line is not valid HTTP"),
    (TransferEncodingError, "The request body's chunked encoding is invalid"),
    (ContentLengthError, "The request body does not match its Content-Length"),
    (ContentEncodingError, "The request body's Content-Encoding cannot be decoded"),
)


def describe(status: int, exc: BaseException | None) -> tuple[str, str]:
    """The error code and a sentence for a protocol-level failure, never quoting the input."""
    # aiohttp's parser reports every malformed request as 400; it calls this with 500 only for an
    # error outside the handlers (which error_middleware turns into 500 INTERNAL_ERROR itself).
    if status >= 500:
        return "INTERNAL_ERROR", "An unexpected error occurred"
    code = "INVALID_REQUEST"
    for kind, sentence in _SENTENCES:
        if isinstance(exc, kind):
            return code, sentence
    return code, "The request is not valid HTTP"


class JsonErrorRequestHandler(web.RequestHandler):
    """aiohttp's connection protocol, answering its own errors with the gateway's JSON envelope."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
        else:
            # A client's malformed request: one line (the parser's text, quoted), no traceback.
            detail = message if message is not None else str(exc)
            log.info("refused a malformed request from %s (%d): %r", request.remote, status, detail)
        if request.writer.output_size > 0:
            # Part of a response is out already: the connection is broken, as aiohttp itself says.
            raise ConnectionError("a response was already sent; the error cannot follow it")
        code, sentence = describe(status, exc)
        response = error_response(status, code, sentence)
        response.force_close()
        return response
