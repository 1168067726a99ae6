"""Creating a container, and updating one to the image its tag names now: both are jobs.

A create answers 202 once the body is valid and the name is free; the job pulls the image when the
Engine lacks it (its ``image.pull.progress`` events carry the create's ``operationId``), creates
the container and starts it. An update pulls the container's tag again and recreates the
container only when that brought another image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from runtimes import ContainerRef, RuntimeFailure
from runtimes.engine.creation import ContainerCreator, ContainerSpec
from runtimes.engine.images import ImageStore

from ...errors import ApiError
from ...keys import OPERATIONS, REGISTRY, SELF_CONTAINER_ID
from ...linking import is_self
from ...operations.pulls import pull_events
from ...operations.tracker import JobProgress, JobText
from ...params import container_id, json_fields
from ...realtime.updates import UPDATES
from ...security.auth import WRITE_CONTAINERS, requires
from ...security.ratelimit import rate_pool
from ..container_spec import FIELDS, container_spec
from ..idempotent import idempotent
from .common import accepted, capable_runtime, runtime_error

CREATE = JobText(accepted="Container creation initiated", past="created", verb="create")
UPDATE = JobText(accepted="Container update initiated", past="updated", verb="update")


def _puller(creator: ContainerCreator, what: str) -> ImageStore:
    if not isinstance(creator, ImageStore):
        raise ApiError(
            409, "OPERATION_NOT_SUPPORTED", f"The {creator.name} runtime cannot pull images for {what}"
        )
    return creator


@requires(WRITE_CONTAINERS)
@rate_pool("containers")
@idempotent
async def create_container(request: web.Request) -> web.Response:
    # mypy takes a Protocol for abstract; capable_runtime only asks isinstance of it.
    creator = capable_runtime(request, ContainerCreator, "container creation")  # type: ignore[type-abstract]
    spec, start = container_spec(await json_fields(request, FIELDS, required=True))
    puller = _puller(creator, "a new container")
    try:
        taken = await creator.name_taken(spec.name)
    except RuntimeFailure as exc:
        raise runtime_error(exc, "CONTAINER_CREATE_FAILED", "Failed to create container") from exc
    if taken:
        raise ApiError(409, "CONTAINER_NAME_IN_USE", f"A container named {spec.name!r} already exists")
    op = request.app[OPERATIONS].submit_job(
        runtime=creator.name,
        resource="container",
        action="create",
        target=spec.name,
        key=spec.name,
        work=lambda progress: _create(creator, puller, spec, start, progress),
        text=CREATE,
    )
    return accepted(op, {"name": spec.name, "image": spec.image})


async def _create(
    creator: ContainerCreator, puller: ImageStore, spec: ContainerSpec, start: bool, progress: JobProgress
) -> Mapping[str, Any]:
    if not await creator.has_image(spec.image):
        await puller.pull_image(spec.image, pull_events(progress, spec.image))
    full_id = await creator.create_container(spec, start=start)
    return {"containerId": full_id[:12], "name": spec.name, "started": start}


@requires(WRITE_CONTAINERS)
@rate_pool("containers")
@idempotent
async def update_container(request: web.Request) -> web.Response:
    cid = container_id(request)
    creator = capable_runtime(request, ContainerCreator, "container updates")  # type: ignore[type-abstract]
    await json_fields(request, (), required=False)
    return await start_update(request, creator, cid)


async def start_update(request: web.Request, creator: ContainerCreator, cid: str) -> web.Response:
    """The checks of an update of the container ``cid`` names, then its submission: the REST
    update and a deploy hook start an update through here alike."""
    puller = _puller(creator, "an update")
    runtime = request.app[REGISTRY].get(creator.name)
    # The synchronous checks, so a client learns of 404, 403 and 409 at once.
    try:
        current = await runtime.get(ContainerRef(cid))
        if is_self(current, request.app[SELF_CONTAINER_ID]):
            raise ApiError(403, "FORBIDDEN", "The gateway does not update its own container")
        await creator.update_source(current.full_id)
    except RuntimeFailure as exc:
        raise runtime_error(exc, "CONTAINER_UPDATE_FAILED", "Failed to update container", cid) from exc
    updates = request.app[UPDATES]

    async def work(progress: JobProgress) -> Mapping[str, Any]:
        # Read again: an action accepted before this one (a stop) has run by now.
        source = await creator.update_source(current.full_id)
        pulled = await puller.pull_image(source.reference, pull_events(progress, source.reference))
        if pulled.id == source.image_id:
            updates.note_current(creator.name, source.full_id)
            return {"updated": False, "containerId": source.full_id[:12], "image": source.reference}
        made = await creator.recreate_container(source.full_id, source.reference)
        updates.forget([(creator.name, made.previous_id)])
        updates.note_current(creator.name, made.full_id)
        return {
            "updated": True,
            "containerId": made.full_id[:12],
            "previousContainerId": made.previous_id[:12],
            "image": source.reference,
        }

    # Keyed as lifecycle actions of this container are, so it runs after an accepted stop.
    op = request.app[OPERATIONS].submit_job(
        runtime=creator.name,
        resource="container",
        action="update",
        target=current.id,
        key=current.full_id,
        work=work,
        text=UPDATE,
    )
    return accepted(op, {"containerId": current.id})
