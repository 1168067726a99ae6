"""Whether a newer image waits in the registry: what the background update check asks a runtime.

The check compares the digest a registry names for a reference now with the digest the image a
container runs had when it was pulled. The runtime answers both; the gateway decides which
containers to ask about, how often and how many at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ContainerImage:
    """The image one container runs: the reference it was created from, and the registry digest
    that image had in the reference's repository ("" when it has none: built or loaded locally)."""

    container_id: str
    reference: str
    digest: str


@runtime_checkable
class ImageUpdates(Protocol):
    """A runtime whose images come from registries it can ask about (Docker)."""

    async def container_images(self) -> list[ContainerImage]:
        """Every container's image (two calls to the runtime, whatever the number of containers)."""
        ...

    async def registry_digest(self, reference: str) -> str:
        """The digest the registry names for ``reference`` now; a ``RuntimeFailure`` when the
        registry cannot be asked or does not know it."""
        ...
