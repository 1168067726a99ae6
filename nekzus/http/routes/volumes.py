"""Volumes of the Engine: the list (``read:engine``), create, remove and prune (``write:engine``).

Creating and removing a volume takes the Engine a few milliseconds, so these routes answer
synchronously rather than as operations.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from runtimes import RuntimeFailure
from runtimes.engine.volumes import (
    MAX_LABEL_LENGTH,
    MAX_LABELS,
    SpecRejected,
    Volume,
    VolumeSpec,
    VolumeStore,
    is_engine_name,
)

from ...errors import ApiError, from_runtime, invalid_request, validation_error
from ...params import bool_query, json_fields, label_filters, labels_match
from ...security.auth import READ_ENGINE, WRITE_ENGINE, requires
from ...security.ratelimit import rate_pool
from ..idempotent import idempotent
from ..pages import page_of
from .common import capable_runtime, runtime_call

# A driver is a built-in name or a plugin reference such as "vieux/sshfs:latest".
_DRIVER = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.:/-]{0,254}")
_MAX_FILTER = 255
_CREATE_FIELDS = ("name", "driver", "labels", "driverOpts")


def engine_name(value: Any, field: str, what: str) -> str:
    if not is_engine_name(value):
        raise validation_error(
            field,
            f"{field} must be a {what} name of 2 to 255 characters: letters, digits, '_', '.' "
            "and '-', starting with a letter or digit",
        )
    return value


def driver_name(value: Any, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or not _DRIVER.fullmatch(value):
        raise validation_error("driver", "driver must be a driver name such as 'local' or 'bridge'")
    return value


def string_map(value: Any, field: str) -> dict[str, str]:
    """An object of string values (labels, driver options): at most 100 entries, keys not empty."""
    if value is None:
        return {}
    if (
        not isinstance(value, dict)
        or len(value) > MAX_LABELS
        or not all(
            isinstance(v, str) and 0 < len(k) <= MAX_LABEL_LENGTH and len(v) <= MAX_LABEL_LENGTH
            for k, v in value.items()
        )
    ):
        raise validation_error(
            field,
            f"{field} must be an object of at most {MAX_LABELS} string values, keys not empty "
            f"and keys and values at most {MAX_LABEL_LENGTH} characters",
        )
    return value


def spec_error(exc: RuntimeFailure, fallback: str, message: str) -> ApiError:
    """The answer to a create the runtime refused: a spec the Engine rejected is the client's 400."""
    if isinstance(exc, SpecRejected):
        return validation_error(exc.field, exc.detail)
    return from_runtime(exc, fallback=fallback, fallback_message=message)


def name_filter(request: web.Request) -> str:
    """``?name=``: a part of the name, as the Docker CLI's name filter matches."""
    value = request.query.get("name", "")
    if len(value) > _MAX_FILTER:
        raise invalid_request(f"Query parameter 'name' must be at most {_MAX_FILTER} characters")
    return value


def volume_json(v: Volume) -> dict[str, Any]:
    return {
        "name": v.name,
        "driver": v.driver,
        "mountpoint": v.mountpoint,
        "created": v.created,
        "labels": dict(v.labels),
        "scope": v.scope,
        "size": v.size,
        "containers": list(v.containers),
    }


def _volume_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not is_engine_name(name):
        raise invalid_request("The path must name a volume: letters, digits, '_', '.' and '-'")
    return name


def _store(request: web.Request) -> VolumeStore:
    """The runtime with volumes, else 409 OPERATION_NOT_SUPPORTED."""
    # mypy takes a Protocol for an abstract class here (python/mypy#4717); isinstance works.
    return capable_runtime(request, VolumeStore, "volumes")  # type: ignore[type-abstract]


@requires(READ_ENGINE)
@rate_pool("containers")
async def list_volumes(request: web.Request) -> web.Response:
    store = _store(request)
    sizes = bool_query(request, "size")
    dangling = bool_query(request, "dangling") if "dangling" in request.query else None
    name = name_filter(request)
    labels = label_filters(request)
    volumes = await runtime_call(
        store.list_volumes(sizes=sizes), "VOLUME_LIST_FAILED", "Failed to list volumes"
    )
    chosen = sorted(
        (
            v
            for v in volumes
            if name in v.name
            and labels_match(v.labels, labels)
            and (dangling is None or dangling == (not v.containers))
        ),
        key=lambda v: v.name,
    )
    page, headers = page_of(request, chosen)
    return web.json_response([volume_json(v) for v in page], headers=headers)


@requires(WRITE_ENGINE)
@rate_pool("containers")
@idempotent
async def create_volume(request: web.Request) -> web.Response:
    store = _store(request)
    body = await json_fields(request, _CREATE_FIELDS, required=False)
    name = body.get("name")
    spec = VolumeSpec(
        name=None if name is None else engine_name(name, "name", "volume"),
        driver=driver_name(body.get("driver"), "local"),
        labels=string_map(body.get("labels"), "labels"),
        driver_opts=string_map(body.get("driverOpts"), "driverOpts"),
    )
    try:
        volume = await store.create_volume(spec)
    except RuntimeFailure as exc:
        raise spec_error(exc, "VOLUME_CREATE_FAILED", "Failed to create the volume") from exc
    return web.json_response(volume_json(volume), status=201)


@requires(WRITE_ENGINE)
@rate_pool("containers")
async def remove_volume(request: web.Request) -> web.Response:
    store = _store(request)
    name = _volume_name(request)
    force = bool_query(request, "force")
    await runtime_call(
        store.remove_volume(name, force=force), "VOLUME_REMOVE_FAILED", "Failed to remove the volume"
    )
    return web.Response(status=204)


@requires(WRITE_ENGINE)
@rate_pool("containers")
async def prune_volumes(request: web.Request) -> web.Response:
    store = _store(request)
    everything = bool_query(request, "all")
    await json_fields(request, (), required=False)
    pruned = await runtime_call(
        store.prune_volumes(all=everything), "VOLUME_PRUNE_FAILED", "Failed to prune volumes"
    )
    return web.json_response({"deleted": list(pruned.deleted), "spaceReclaimed": pruned.space_reclaimed})
