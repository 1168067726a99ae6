"""What a compose export of a container starts from: its inspect, its image's, the log driver."""

from __future__ import annotations

import asyncio
from typing import Any

from ..base import ContainerRef, ExportSource
from ..errors import NotFound, RuntimeFailure
from ..urlpath import segment
from .compose import container_name
from .queries import Queries
from .session import EngineSession

_IMAGE_CACHE = 256  # image documents kept by id (an id names immutable content)


class ExportSources:
    """The documents an export of a container needs, with the image documents kept by id."""

    def __init__(self, session: EngineSession, queries: Queries, runtime: str) -> None:
        self._session = session
        self._queries = queries
        self._runtime = runtime
        self._images: dict[str, asyncio.Future[dict[str, Any]]] = {}

    def pending(self) -> list[asyncio.Future[dict[str, Any]]]:
        """The image requests kept or under way, for the runtime to cancel when it closes."""
        return list(self._images.values())

    async def source(self, ref: ContainerRef) -> ExportSource:
        doc = await self._queries.inspect_raw(ref)
        image = await self._image(str(doc.get("Image", "")))
        log_driver = str((await self._session.daemon_info()).get("LoggingDriver", ""))
        return ExportSource(self._runtime, str(doc["Id"]), container_name(doc), doc, image, log_driver)

    async def _image(self, image_id: str) -> dict[str, Any]:
        """The image's inspect document. An id names immutable content, so a cached document never
        goes stale; concurrent exports of containers of one image share one request."""
        pending = self._images.get(image_id)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch_image(image_id))
            if len(self._images) >= _IMAGE_CACHE:
                self._images.pop(next(iter(self._images)))
            self._images[image_id] = pending
        if pending.done() and not pending.cancelled() and pending.exception() is None:
            return pending.result()
        try:
            return await asyncio.shield(pending)
        except RuntimeFailure:
            if self._images.get(image_id) is pending:
                del self._images[image_id]  # a failure is not kept: the next export asks again
            raise

    async def _fetch_image(self, image_id: str) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = await self._session.json(f"images/{segment(image_id)}/json")
        except NotFound:
            doc = {}  # the image was removed since the container was made: compare with nothing
        return doc
