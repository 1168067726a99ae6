"""The background check behind ``updateAvailable``: is a newer image waiting in the registry?

Every ``updates.interval`` seconds the checker asks the registry (through the runtime, so through
the daemon's own registry settings and credentials) for the digest each image reference of a
linked container names now, a few references at a time, and compares it with the digest of the
image each container runs. A request only reads the last results: it never waits for a registry.
A reference whose registry does not answer is unknown (None) until a later check reaches it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiohttp import web

from runtimes import ContainerRuntime, RuntimeFailure, RuntimeRegistry
from runtimes.engine.updates import ContainerImage, ImageUpdates

from ..linking import AppLinker, is_self

log = logging.getLogger(__name__)

# The first check waits a little after the start, so a gateway's start-up is not also a round of
# registry traffic (and a gateway that lives only seconds, such as a test's, contacts none).
START_DELAY = 10.0
REGISTRY_TIMEOUT = 30.0


class UpdateChecker:
    """The latest verdict per container (``of``), and the loop that renews them (``run``)."""

    def __init__(
        self,
        registry: RuntimeRegistry,
        linker: AppLinker,
        self_id: str,
        *,
        enabled: bool,
        interval: float,
        concurrency: int,
    ) -> None:
        self._registry = registry
        self._linker = linker
        self._self_id = self_id
        self.enabled = enabled
        self._interval = interval
        self._concurrency = concurrency
        # (runtime, full container id) → whether its reference names a newer image now.
        self._verdicts: dict[tuple[str, str], bool | None] = {}
        # (runtime, reference) → the registry's digest at the last check; None: it did not answer.
        self.digests: dict[tuple[str, str], str | None] = {}
        # Changes whenever a verdict does: a rendered container list is reused only for one version.
        self.version = 0

    def of(self, runtime: str, full_id: str) -> bool | None:
        """The verdict for one container: None when unknown, and always when checks are off."""
        return self._verdicts.get((runtime, full_id))

    def note_current(self, runtime: str, full_id: str) -> None:
        """``full_id`` was just made from the image its reference names now (an update pulled it)."""
        if self.enabled:
            self._set({(runtime, full_id): False}, keep_others=True)

    async def run(self) -> None:
        """Check every interval, for as long as the app runs (spawned only when checks are on)."""
        await asyncio.sleep(START_DELAY)
        while True:
            await self.check()
            await asyncio.sleep(self._interval)

    async def check(self) -> None:
        """One round over every runtime that can tell image digests; a runtime that fails keeps
        none of its verdicts (unknown), and the others are unaffected."""
        verdicts: dict[tuple[str, str], bool | None] = {}
        for runtime in self._registry:
            if not isinstance(runtime, ImageUpdates):
                continue
            try:
                verdicts.update(await self._check_runtime(runtime, runtime))
            except RuntimeFailure as exc:
                log.warning("update check of %s failed: %s", runtime.name, exc)
        self._set(verdicts, keep_others=False)

    async def _check_runtime(
        self, runtime: ContainerRuntime, images: ImageUpdates
    ) -> dict[tuple[str, str], bool | None]:
        linked = {
            c.full_id
            for c in await runtime.list_containers()
            if self._linker.is_linked(c) and not is_self(c, self._self_id)
        }
        used = [image for image in await images.container_images() if image.container_id in linked]
        references = sorted({image.reference for image in used if image.reference})
        limit = asyncio.Semaphore(self._concurrency)

        async def ask(reference: str) -> None:
            async with limit:
                self.digests[(runtime.name, reference)] = await self._digest(images, reference)

        await asyncio.gather(*(ask(reference) for reference in references))
        for key in [k for k in self.digests if k[0] == runtime.name and k[1] not in references]:
            del self.digests[key]  # no linked container uses it any more
        return {(runtime.name, image.container_id): self._verdict(runtime.name, image) for image in used}

    @staticmethod
    async def _digest(images: ImageUpdates, reference: str) -> str | None:
        try:
            async with asyncio.timeout(REGISTRY_TIMEOUT):
                return await images.registry_digest(reference)
        except (RuntimeFailure, TimeoutError) as exc:
            log.info("registry digest of %s unknown: %s", reference, exc or "no answer in time")
            return None

    def _verdict(self, runtime: str, image: ContainerImage) -> bool | None:
        remote = self.digests.get((runtime, image.reference)) if image.reference else None
        if remote is None or not image.digest:
            return None  # the registry did not say, or the image never came from it
        return remote != image.digest

    def _set(self, verdicts: dict[tuple[str, str], bool | None], *, keep_others: bool) -> None:
        merged = {**self._verdicts, **verdicts} if keep_others else verdicts
        if merged != self._verdicts:
            self._verdicts = merged
            self.version += 1

    def forget(self, keys: Iterable[tuple[str, str]]) -> None:
        """Drop the verdicts of containers that are gone (a recreate's previous container)."""
        gone = set(keys)
        self._set({k: v for k, v in self._verdicts.items() if k not in gone}, keep_others=False)


UPDATES: web.AppKey[UpdateChecker] = web.AppKey("updates")
