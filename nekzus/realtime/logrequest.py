"""What a client asks of a log tail: which container, how much history, from when, in which form.

The one parser of a ``container.logs.subscribe`` message; what it refuses it says why, for the
client's error reply.
"""

from __future__ import annotations

import calendar
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from ..params import is_valid_container_id, is_valid_container_name, is_valid_namespace

DEFAULT_TAIL = 100
MAX_TAIL = 1000
_RFC3339 = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{1,9}))?(Z|[+-][0-9]{2}:[0-9]{2})"
)
# The last second of 9999-12-31: the same end of time as RFC 3339's four-digit years.
MAX_SINCE = 253_402_300_799
_SINCE_FORMS = "since must be an RFC 3339 time or Unix seconds"
CONTAINER_ID_RULE = (
    "containerId must be a container id or name (for Kubernetes, a pod name or deployment/name)"
)


class InvalidSubscription(ValueError):
    """A subscribe message whose fields cannot be used; the text goes back to the client."""


def parse_since(value: Any) -> tuple[int, int]:
    """(seconds, nanoseconds) of an RFC 3339 time or a number of Unix seconds, 1970 to 9999.

    Every refusal is InvalidSubscription naming ``since``: NaN, infinities, impossible dates and
    times out of range never reach the runtime (nor escape as ValueError or OverflowError).
    """
    if isinstance(value, bool):
        raise InvalidSubscription(_SINCE_FORMS)
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidSubscription("since must be a finite number of seconds")
    if isinstance(value, int | float):
        if value < 0:
            raise InvalidSubscription("since must not be negative")
        if value > MAX_SINCE:
            raise InvalidSubscription("since must not be after the year 9999")
        return int(value), round((value - int(value)) * 1e9)
    if not isinstance(value, str):
        raise InvalidSubscription(_SINCE_FORMS)
    text = value.strip()
    if re.fullmatch(r"[0-9]{1,12}(\.[0-9]{1,9})?", text):
        whole, _, frac = text.partition(".")
        seconds, nanos = int(whole), int(frac.ljust(9, "0")) if frac else 0
    elif match := _RFC3339.fullmatch(text):
        base, frac, zone = match.groups()
        try:
            seconds = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            raise InvalidSubscription(f"since {text[:40]!r} is not a valid date and time") from None
        if zone != "Z":
            hours, minutes = int(zone[1:3]), int(zone[4:6])
            if hours > 23 or minutes > 59:
                raise InvalidSubscription(f"since {text[:40]!r} has an impossible time zone offset")
            seconds -= (1 if zone[0] == "+" else -1) * (hours * 3600 + minutes * 60)
        nanos = int((frac or "0").ljust(9, "0"))
    else:
        raise InvalidSubscription(_SINCE_FORMS)
    if not 0 <= seconds <= MAX_SINCE:
        raise InvalidSubscription("since must be between 1970 and the year 9999")
    return seconds, nanos


def tail_of(data: dict[str, Any]) -> int:
    """The ``tail`` of a subscribe message: lines of history, at most ``MAX_TAIL``."""
    tail = data.get("tail", DEFAULT_TAIL)
    if isinstance(tail, bool) or not isinstance(tail, int) or tail < 0:
        raise InvalidSubscription("tail must be a whole number of lines")
    return min(tail, MAX_TAIL)


def since_of(data: dict[str, Any]) -> tuple[tuple[int, int] | None, bool]:
    """The ``since`` of a subscribe message, and whether it names an exact line time (RFC 3339
    with a fraction, so that line itself is skipped: the resume rule)."""
    raw = data.get("since")
    if raw is None:
        return None, False
    return parse_since(raw), isinstance(raw, str) and "T" in raw and "." in raw


@dataclass(frozen=True, slots=True)
class LogSubscription:
    """What one container.logs.subscribe message asks for: which container, from when, and how."""

    container_id: str
    namespace: str
    runtime: str | None
    tail: int
    follow: bool
    timestamps: bool
    since: tuple[int, int] | None
    # True when ``since`` named an exact line time (RFC 3339 with a fraction): that line is skipped.
    since_exclusive: bool
    # Opt-in: one container.logs.batch message per read from the runtime instead of one per line.
    batch: bool = False
    # One container of a multi-container pod; "" means the pod's first container.
    container: str = ""

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.runtime or "", self.namespace, self.container_id, self.container)

    @classmethod
    def from_message(cls, data: Any) -> LogSubscription:
        if not isinstance(data, dict):
            raise InvalidSubscription("data must be an object")
        cid = data.get("containerId")
        if not isinstance(cid, str):
            raise InvalidSubscription(CONTAINER_ID_RULE)
        namespace = data.get("namespace", "")
        runtime = data.get("runtime")
        if not isinstance(namespace, str) or (runtime is not None and not isinstance(runtime, str)):
            raise InvalidSubscription("namespace and runtime must be strings")
        if namespace and not is_valid_namespace(namespace):
            raise InvalidSubscription("namespace must be a Kubernetes namespace name")
        if not is_valid_container_id(cid):
            raise InvalidSubscription(CONTAINER_ID_RULE)
        container = data.get("container", "")
        if container != "" and not is_valid_container_name(container):
            raise InvalidSubscription("container must be the name of a container in the pod")
        tail = tail_of(data)
        follow, timestamps, batch = (
            data.get("follow", True),
            data.get("timestamps", False),
            data.get("batch", False),
        )
        if not all(isinstance(flag, bool) for flag in (follow, timestamps, batch)):
            raise InvalidSubscription("follow, timestamps and batch must be true or false")
        since, exclusive = since_of(data)
        return cls(
            cid,
            namespace,
            runtime,
            tail,
            follow,
            timestamps,
            since,
            exclusive,
            batch,
            container,
        )
