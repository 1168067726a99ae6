"""Log output: one handler on the root logger, text or JSON lines, each record tagged with its request.

A record is always one line (a traceback follows it indented in text, inside the object in JSON),
so nothing a client sends — a path, a token's subject, an exception message — can forge a line.
The request id of the request being handled travels in a context variable, so every record logged
while serving it (and by the tasks it starts) carries the id the client got in ``X-Request-ID``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from .config import LoggingConfig

ACCESS_LOGGER = "nekzus.access"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_current_request_id: ContextVar[str | None] = ContextVar("nekzus_request_id", default=None)

# Everything str.splitlines() breaks on, and the other control characters, written as escapes.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))} | {
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}
# Printable ASCII but the space, the quote and the backslash: written bare in a key=value pair.
_PLAIN = re.compile(r"[!#-\[\]-~]+")


@contextmanager
def request_context(request_id: str) -> Iterator[None]:
    """Tag every record logged inside the block (and in tasks started there) with ``request_id``."""
    token = _current_request_id.set(request_id)
    try:
        yield
    finally:
        _current_request_id.reset(token)


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped."""
    return text.translate(_CONTROL)


def logfmt_value(value: object) -> str:
    """A ``key=value`` value: bare when it is plain printable ASCII, else quoted with JSON escapes."""
    text = str(value)
    if _PLAIN.fullmatch(text):
        return text
    return json.dumps(text)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to a record logged while a request is served (an explicit one wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = _current_request_id.get()
        return True


def _access_fields(record: logging.LogRecord) -> Mapping[str, Any] | None:
    fields = getattr(record, "access", None)
    return fields if isinstance(fields, Mapping) else None


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message request_id=…``; an access record's message is ``key=value`` pairs."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        fields = _access_fields(record)
        if fields is not None:
            record.message = " ".join(f"{key}={logfmt_value(value)}" for key, value in fields.items())
        else:
            record.message = one_line(record.message)
            request_id = getattr(record, "request_id", None)
            if request_id:
                record.message += f" request_id={logfmt_value(request_id)}"
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        lines = [self.formatMessage(record)]
        # Tracebacks are indented, so only a record's first line starts at the margin with its time.
        if record.exc_info:
            lines.append(_indent(self.formatException(record.exc_info)))
        elif record.exc_text:
            lines.append(_indent(record.exc_text))
        if record.stack_info:
            lines.append(_indent(self.formatStack(record.stack_info)))
        return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, request_id, the access fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        fields = _access_fields(record)
        if fields is not None:
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # ensure_ascii: every control and line-separator character leaves as an escape.
        return json.dumps(entry, ensure_ascii=True, default=str)


def configure_logging(config: LoggingConfig, stream: TextIO | None = None) -> logging.Handler:
    """Send every record to ``stream`` (stderr) in the configured format; the handler it installed.

    The access log is written at INFO whatever ``logging.level`` says: ``logging.access_log``
    is its switch, and the level governs the application's own messages.
    """
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    logging.basicConfig(level=config.level, handlers=[handler], force=True)
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO)
    return handler
