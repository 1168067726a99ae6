"""Parsing and validating what clients send: query parameters, path ids and JSON bodies."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypeGuard

from aiohttp import web

from runtimes import ContainerRuntime, NoRuntime, NotNamespaced, UnknownRuntime, factory

from . import jsoninput
from .errors import ApiError, invalid_request
from .jsoninput import InvalidJson
from .keys import REGISTRY

DEFAULT_TIMEOUT = 10
MIN_TIMEOUT, MAX_TIMEOUT = 1, 300

# Security: the one validation of every value a client puts in a runtime's URL, for REST and the
# WebSocket alike: each runtime's own rules (ContainerRuntime.accepts_id), and before the runtime is
# known the rules of every backend (runtimes.factory). Anything else (a slash, "..", "%", a space)
# never reaches a runtime.
# ASCII digits only: int() also reads "٣" and "５", which no client means as a number.
_TIMEOUT = re.compile(r"[+-]?[0-9]{1,6}")
_INTEGER = re.compile(r"[+-]?[0-9]{1,12}")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


def timeout_value(raw: Any) -> int:
    """A grace period in whole seconds, 1–300; 10 when absent. Anything else is INVALID_TIMEOUT."""
    if raw is None:
        return DEFAULT_TIMEOUT
    value: int | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and _TIMEOUT.fullmatch(raw):
        value = int(raw)
    if value is None or not MIN_TIMEOUT <= value <= MAX_TIMEOUT:
        raise ApiError(400, "INVALID_TIMEOUT", "Timeout must be between 1 and 300 seconds")
    return value


def timeout_of(request: web.Request, body: dict[str, Any]) -> int:
    """The grace period from ``?timeout=`` or the body's ``timeout``, whichever is given.

    Both given must agree: silently preferring one would run an action with a grace period the
    caller did not mean.
    """
    in_query, in_body = request.query.get("timeout"), body.get("timeout")
    if in_query is not None and in_body is not None and timeout_value(in_query) != timeout_value(in_body):
        raise invalid_request("timeout is given in the query and in the body with different values")
    return timeout_value(in_query if in_query is not None else in_body)


def bool_query(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "").lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise invalid_request(f"Query parameter {name!r} must be true or false")


def int_query(
    request: web.Request, name: str, *, default: int | None, minimum: int, maximum: int
) -> int | None:
    """A whole number from ``?name=`` within ``minimum``–``maximum`` (ASCII digits, at most 12 of
    them), ``default`` when absent; anything else is INVALID_REQUEST naming the parameter."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _INTEGER.fullmatch(raw) or not minimum <= int(raw) <= maximum:
        raise invalid_request(f"Query parameter {name!r} must be a whole number from {minimum} to {maximum}")
    return int(raw)


def single_query(request: web.Request, name: str) -> str | None:
    """A query parameter that may be given once (two would leave the caller guessing which won)."""
    values = request.query.getall(name, ())
    if len(values) > 1:
        raise invalid_request(f"Query parameter {name!r} may be given only once")
    return values[0] if values else None


def choices_query(request: web.Request, name: str, allowed: Collection[str]) -> list[str]:
    """The values of ``?name=a,b`` (repeatable), each one of ``allowed``; none when absent."""
    chosen = [v.strip() for raw in request.query.getall(name, ()) for v in raw.split(",")]
    if any(value not in allowed for value in chosen):
        raise invalid_request(f"Query parameter {name!r} must be one of {', '.join(allowed)}")
    return chosen


MAX_NAME_FILTER = 256


def name_filter(request: web.Request) -> str | None:
    """``?name=``, case-folded, for a case-insensitive substring match; None when absent."""
    name = single_query(request, "name")
    if name is not None and not 0 < len(name) <= MAX_NAME_FILTER:
        raise invalid_request(f"Query parameter 'name' must be 1 to {MAX_NAME_FILTER} characters")
    return name.casefold() if name is not None else None


def sort_query(request: web.Request, keys: Collection[str]) -> tuple[str | None, bool]:
    """``?sort=key`` or ``?sort=-key`` (descending) with a key of ``keys``: (key, descending);
    (None, False) when absent."""
    sort = single_query(request, "sort")
    if sort is None:
        return None, False
    if sort.removeprefix("-") not in keys:
        raise invalid_request(
            f"Query parameter 'sort' must be one of {', '.join(keys)}, with '-' in front for descending"
        )
    return sort.removeprefix("-"), sort.startswith("-")


MAX_LABEL_FILTER = 1024
MAX_LABEL_FILTERS = 32
LabelFilter = tuple[tuple[str, str | None], ...]


def label_filters(request: web.Request) -> LabelFilter:
    """``?label=key`` (has the label) and ``?label=key=value``, repeatable (every one must hold),
    as ``docker ps --filter label=`` reads them; a value None asks only that the key be there."""
    labels = request.query.getall("label", ())
    if len(labels) > MAX_LABEL_FILTERS:
        raise invalid_request(f"Query parameter 'label' may be given at most {MAX_LABEL_FILTERS} times")
    pairs: list[tuple[str, str | None]] = []
    for label in labels:
        key, equals, value = label.partition("=")
        if not key or len(label) > MAX_LABEL_FILTER:
            raise invalid_request(
                f"Query parameter 'label' must be key or key=value (a key of at most "
                f"{MAX_LABEL_FILTER} characters in all)"
            )
        pairs.append((key, value if equals else None))
    return tuple(pairs)


def labels_match(labels: Mapping[str, str], wanted: LabelFilter) -> bool:
    return all(key in labels and (value is None or labels[key] == value) for key, value in wanted)


def container_id(request: web.Request) -> str:
    """The path's id, by the rules of the runtime the request addresses (a pod name for Kubernetes)."""
    value = request.match_info.get("id", "")
    if not is_valid_container_id(value, runtime=_addressed_runtime(request)):
        raise ApiError(
            400, "INVALID_CONTAINER_ID", "Container ID is required and must be a container id or name"
        )
    return value


def addressed(request: web.Request) -> tuple[str | None, str]:
    """What a request addresses: the runtime it names with ``?runtime=`` (None for none), and the
    namespace of the path form, else of ``?namespace=`` ("" for none)."""
    namespace = request.match_info.get("namespace") or request.query.get("namespace", "")
    return request.query.get("runtime") or None, namespace


def _addressed_runtime(request: web.Request) -> ContainerRuntime | None:
    """The runtime whose id rules apply: the one named, the namespaced one for a namespace, else
    the primary. None when that is not a runtime (the handler refuses it next)."""
    try:
        return request.app[REGISTRY].addressed(*addressed(request))
    except (UnknownRuntime, NoRuntime, NotNamespaced):
        return None


def namespace_value(request: web.Request) -> str:
    """The Kubernetes namespace from the path form, else ``?namespace=``; "" for none."""
    value = addressed(request)[1]
    if value and not is_valid_namespace(value):
        raise invalid_request("namespace must be a Kubernetes namespace name")
    return value


def is_valid_namespace(value: Any) -> TypeGuard[str]:
    """A namespace name of the runtime that has namespaces."""
    return factory.is_namespace(value)


def is_valid_container_name(value: Any) -> TypeGuard[str]:
    """The name of one container of a pod."""
    return factory.is_container_name(value)


MAX_BATCH = 500


# The reference spells the id list containerIds for batch actions and container_ids for batch
# exports; each route takes its own spelling and the other one as an alias.
_ID_LIST_ALIAS = {"containerIds": "container_ids", "container_ids": "containerIds"}
ID_LIST_FIELDS = tuple(_ID_LIST_ALIAS)


def container_ids(body: dict[str, Any], field: str) -> list[str]:
    """The list of container ids in ``body[field]`` (or its alias): 1 to 500 valid ids, duplicates dropped."""
    ids = aliased(body, field, _ID_LIST_ALIAS[field])
    if ids is None or ids == []:
        raise ApiError(400, "EMPTY_CONTAINER_LIST", "At least one container ID is required")
    if not isinstance(ids, list) or not all(is_valid_container_id(i) for i in ids):
        raise invalid_request(f"{field} must be a list of container ids or names")
    if len(ids) > MAX_BATCH:
        raise invalid_request(f"{field} may name at most {MAX_BATCH} containers")
    return list(dict.fromkeys(ids))


def is_valid_container_id(value: Any, *, runtime: ContainerRuntime | None = None) -> TypeGuard[str]:
    """A container id or name for ``runtime``, or, before the runtime is known, for any backend."""
    return runtime.accepts_id(value) if runtime is not None else factory.is_container_id(value)


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


async def json_fields(request: web.Request, allowed: Sequence[str], *, required: bool) -> dict[str, Any]:
    """The JSON body of a route that takes the fields ``allowed``; the one rule for every body.

    A field the route does not take is refused, naming it, rather than ignored: a misspelt
    ``timeout`` would otherwise run the action with the default. An empty body is ``{}`` (every
    default) unless the route ``required`` one.
    """
    if not required and not (await request.read()).strip():
        return {}
    body = await json_object(request)
    unknown = [name for name in body if name not in allowed]
    if unknown:
        raise invalid_request(
            f"Unknown field(s): {', '.join(map(repr, unknown))}; this body takes {', '.join(allowed)}"
        )
    return body


def aliased(body: dict[str, Any], name: str, alias: str) -> Any:
    """The value of the field ``name``, also accepted as ``alias``; None when neither is given.

    A body that gives both with different values is refused rather than guessed at.
    """
    if name in body and alias in body and body[name] != body[alias]:
        raise invalid_request(f"{name} and {alias} are the same field and disagree: give one of them")
    return body[name] if name in body else body.get(alias)
