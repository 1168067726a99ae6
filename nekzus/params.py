"""Parsing and validating what clients send: query parameters, path ids and JSON bodies."""

from __future__ import annotations

import re
from typing import Any, TypeGuard

from aiohttp import web

from runtimes.kubeobjects import WORKLOAD_KINDS

from . import jsoninput
from .errors import ApiError, invalid_request
from .jsoninput import InvalidJson

DEFAULT_TIMEOUT = 10
MIN_TIMEOUT, MAX_TIMEOUT = 1, 300

# Docker ids and names, Kubernetes object names, and a stopped workload's "deployment/web".
# Anything else (another slash, "..", a space) is refused before it can reach a runtime's URL.
_CONTAINER_ID = re.compile(rf"^(?:(?:{WORKLOAD_KINDS})/)?[A-Za-z0-9][A-Za-z0-9_.-]{{0,252}}$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


def timeout_value(raw: Any) -> int:
    """A grace period in whole seconds, 1–300; 10 when absent. Anything else is INVALID_TIMEOUT."""
    if raw is None:
        return DEFAULT_TIMEOUT
    value: int | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and re.fullmatch(r"[+-]?\d{1,6}", raw.strip()):
        value = int(raw)
    if value is None or not MIN_TIMEOUT <= value <= MAX_TIMEOUT:
        raise ApiError(400, "INVALID_TIMEOUT", "Timeout must be between 1 and 300 seconds")
    return value


def bool_query(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise invalid_request(f"Query parameter {name!r} must be true or false")


def container_id(request: web.Request) -> str:
    value = request.match_info.get("id", "")
    if not _CONTAINER_ID.match(value):
        raise ApiError(
            400, "INVALID_CONTAINER_ID", "Container ID is required and must be a container id or name"
        )
    return value


def namespace_value(request: web.Request) -> str:
    """The Kubernetes namespace from the path form, else ``?namespace=``; "" for none."""
    value = request.match_info.get("namespace") or request.query.get("namespace", "")
    if value and not _NAMESPACE.match(value):
        raise invalid_request("namespace must be a Kubernetes namespace name")
    return value


MAX_BATCH = 500


def container_ids(body: dict[str, Any], field: str) -> list[str]:
    """The list of container ids in ``body[field]``: 1 to 500 valid ids, duplicates dropped."""
    ids = body.get(field)
    if ids is None or ids == []:
        raise ApiError(400, "EMPTY_CONTAINER_LIST", "At least one container ID is required")
    if not isinstance(ids, list) or not all(is_valid_container_id(i) for i in ids):
        raise invalid_request(f"{field} must be a list of container ids or names")
    if len(ids) > MAX_BATCH:
        raise invalid_request(f"{field} may name at most {MAX_BATCH} containers")
    return list(dict.fromkeys(ids))


def is_valid_container_id(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and bool(_CONTAINER_ID.match(value))


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or INVALID_REQUEST (saying why, nesting too deep included)."""
    raw = await request.read()
    if not raw.strip():
        raise invalid_request("The request body must be a JSON object")
    try:
        body = jsoninput.loads(raw)
    except InvalidJson as exc:
        raise invalid_request(f"The request body is {exc}") from exc
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object")
    return body
