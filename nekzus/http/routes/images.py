"""The Engine's images: list, pull (a job with progress events), delete and prune.

Reading needs ``read:engine``; pulling, deleting and pruning change what every container of the
host can run, so they need ``write:engine`` rather than ``write:containers``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from runtimes import RuntimeFailure
from runtimes.engine.images import (
    ImageCatalog,
    ImageFilter,
    ImageName,
    ImageSummary,
    image_target,
    is_image_reference,
)

from ...errors import from_runtime, invalid_request, validation_error
from ...keys import OPERATIONS
from ...operations.pulls import pull_events
from ...operations.tracker import JobProgress, JobText
from ...params import bool_query, json_fields
from ...security.auth import READ_ENGINE, WRITE_ENGINE, requires
from ...security.ratelimit import rate_pool
from ..idempotent import idempotent
from ..pages import page_of
from .common import accepted, capable_runtime

# The capability every image route asks the runtime for. mypy refuses a Protocol itself where a
# ``type[...]`` is expected (type-abstract); ``isinstance`` takes it as it is.
CATALOG: type[ImageCatalog] = ImageCatalog  # type: ignore[type-abstract]
PULL = JobText(accepted="Image pull initiated", past="pulled", verb="pull")
MAX_LABELS = 10
# ``key`` or ``key=value``, as ``docker image prune --filter label=`` takes it, without control
# characters; a ``reference`` pattern is a reference with ``*`` and ``?`` wildcards. Neither may
# carry what the Engine's pattern matching would refuse (``[``, ``\``).
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,254}(?:=[^\x00-\x1f\x7f]{0,255})?")
_PATTERN = re.compile(r"[A-Za-z0-9._/:@*?-]{1,255}")
_REFERENCE_RULE = (
    "an image reference such as busybox:1.36 or registry.example.com:5000/team/app@sha256:<digest> "
    "(lowercase repository, tag of up to 128 characters, at most 255 characters in all)"
)


def _filters(request: web.Request) -> ImageFilter:
    dangling = bool_query(request, "dangling") if "dangling" in request.query else None
    reference = request.query.get("reference")
    if reference is not None and not _PATTERN.fullmatch(reference):
        raise invalid_request(
            "Query parameter 'reference' must be a reference pattern such as busybox or nekzus/* "
            "(letters, digits, . _ - / : @ and the wildcards * ?, at most 255 characters)"
        )
    return ImageFilter(dangling=dangling, reference=reference or None, labels=_labels(request))


def _labels(request: web.Request) -> tuple[str, ...]:
    labels = request.query.getall("label", [])
    if len(labels) > MAX_LABELS or not all(_LABEL.fullmatch(label) for label in labels):
        raise invalid_request(
            f"Query parameter 'label' must be key or key=value (at most {MAX_LABELS} of them)"
        )
    return tuple(labels)


def image_json(image: ImageSummary) -> dict[str, Any]:
    return {
        "id": image.id,
        "tags": list(image.tags),
        "digests": list(image.digests),
        "size": image.size,
        "created": image.created,
        "containers": {"count": len(image.containers), "ids": list(image.containers)},
        "dangling": image.dangling,
    }


@requires(READ_ENGINE)
@rate_pool("containers")
async def list_images(request: web.Request) -> web.Response:
    runtime = capable_runtime(request, CATALOG, "images")
    filters = _filters(request)
    try:
        images = await runtime.list_images(filters)
    except RuntimeFailure as exc:
        raise from_runtime(
            exc, fallback="IMAGE_LIST_FAILED", fallback_message="Failed to list images"
        ) from exc
    images.sort(key=lambda image: (-image.created, image.id))
    page, headers = page_of(request, images)
    return web.json_response([image_json(image) for image in page], headers=headers)


@requires(WRITE_ENGINE)
@rate_pool("containers")
@idempotent
async def pull_image(request: web.Request) -> web.Response:
    runtime = capable_runtime(request, CATALOG, "images")
    raw = (await json_fields(request, ("image",), required=True)).get("image")
    if raw is None:
        raise validation_error("image", f"Field 'image' is required: {_REFERENCE_RULE}")
    if not is_image_reference(raw):
        raise validation_error("image", f"Field 'image' must be {_REFERENCE_RULE}")
    reference = str(ImageName.parse(raw))  # without a tag: ":latest", as docker pull does

    async def work(progress: JobProgress) -> Mapping[str, Any]:
        pulled = await runtime.pull_image(reference, pull_events(progress, reference))
        return {"imageId": pulled.id, "digest": pulled.digest}

    op = request.app[OPERATIONS].submit_job(
        runtime=runtime.name, resource="image", action="pull", target=reference, work=work, text=PULL
    )
    return accepted(op, {"image": reference})


@requires(WRITE_ENGINE)
@rate_pool("containers")
async def delete_image(request: web.Request) -> web.Response:
    runtime = capable_runtime(request, CATALOG, "images")
    target = image_target(request.match_info["id"])
    if target is None:
        raise invalid_request(
            "The image must be an image id (sha256:<hex>, or at least 12 hex digits of it) or "
            f"{_REFERENCE_RULE}; a reference's slashes may be sent as they are or as %2F"
        )
    force = bool_query(request, "force")
    try:
        removal = await runtime.remove_image(target, force=force)
    except RuntimeFailure as exc:
        raise from_runtime(
            exc, fallback="IMAGE_DELETE_FAILED", fallback_message="Failed to delete image"
        ) from exc
    return web.json_response({"deleted": list(removal.deleted), "untagged": list(removal.untagged)})


@requires(WRITE_ENGINE)
@rate_pool("containers")
async def prune_images(request: web.Request) -> web.Response:
    runtime = capable_runtime(request, CATALOG, "images")
    unused = bool_query(request, "all")
    labels = _labels(request)
    await json_fields(request, (), required=False)
    try:
        pruned = await runtime.prune_images(unused=unused, labels=labels)
    except RuntimeFailure as exc:
        raise from_runtime(
            exc, fallback="IMAGE_PRUNE_FAILED", fallback_message="Failed to prune images"
        ) from exc
    return web.json_response({"deleted": list(pruned.deleted), "spaceReclaimed": pruned.space_reclaimed})
