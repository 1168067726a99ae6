"""Creating a container from a client's spec, and updating one to the image its tag names now.

The gateway validates a request into a :class:`ContainerSpec` and hands it to a runtime that is a
:class:`ContainerCreator`; the runtime turns it into its own create call. An update is the
runtime's too: only it knows how to recreate one of its containers with the same configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

PortProtocol = Literal["tcp", "udp", "sctp"]


@dataclass(frozen=True, slots=True)
class PortSpec:
    """A container port, published on ``host_port`` (None: not published, only exposed)."""

    container_port: int
    host_port: int | None = None
    protocol: PortProtocol = "tcp"
    host_ip: str = ""


@dataclass(frozen=True, slots=True)
class MountSpec:
    """A named volume or an absolute host path mounted at ``target``."""

    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """``no``, ``always``, ``unless-stopped`` or ``on-failure`` (at most ``max_retries``, 0: no limit)."""

    name: Literal["no", "always", "unless-stopped", "on-failure"]
    max_retries: int = 0


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """A container to create, already validated: every value here is one the runtime may be given.

    ``command`` None keeps the image's own; ``network`` None means the runtime's default.
    """

    name: str
    image: str
    command: tuple[str, ...] | None = None
    env: tuple[tuple[str, str], ...] = ()
    ports: tuple[PortSpec, ...] = ()
    volumes: tuple[MountSpec, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    restart: RestartPolicy | None = None
    network: str | None = None


@dataclass(frozen=True, slots=True)
class UpdateSource:
    """What an update of one container starts from: the reference its image was created from,
    the image it runs now (``image_id``), and whether it runs."""

    full_id: str
    name: str
    reference: str
    image_id: str
    running: bool


@dataclass(frozen=True, slots=True)
class Recreated:
    """The container an update made, and the one it replaced (both full ids)."""

    full_id: str
    previous_id: str


@runtime_checkable
class ContainerCreator(Protocol):
    """A runtime that creates containers and recreates them from a newer image (Docker)."""

    @property
    def name(self) -> str: ...

    async def name_taken(self, name: str) -> bool:
        """Whether a container is called exactly ``name`` now."""
        ...

    async def has_image(self, reference: str) -> bool:
        """Whether the image ``reference`` is already there (no pull needed)."""
        ...

    async def create_container(self, spec: ContainerSpec, *, start: bool) -> str:
        """Create the container (and start it with ``start``); answer its full id. A name that is
        taken is ``InUse(resource="container_name")``, a missing image ``NotFound(resource="image")``.
        A start that fails leaves the container created and raises, saying so in its detail."""
        ...

    async def update_source(self, container: str) -> UpdateSource:
        """The container's image reference and state, as :meth:`recreate_container` will read them."""
        ...

    async def recreate_container(self, container: str, reference: str) -> Recreated:
        """Replace the container with one of the same configuration on the image ``reference``
        names now: same name, networks and mounts, running if it ran. Any failure puts the old
        container back as it was and raises, saying in its detail that it was rolled back."""
        ...

    async def recover_update(self, container: str) -> str | None:
        """Finish or undo the recreate of ``container`` that a gateway which died during it left
        half-done, from the runtime's state alone; answer what was done (a sentence for
        clients), None when there was nothing to do."""
        ...
