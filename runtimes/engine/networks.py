"""Networks of a container engine: what a runtime that keeps them offers, and the values it returns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..errors import Conflict

# The networks every Docker host has and needs: removing one is refused (403), as the Engine does.
PREDEFINED = frozenset({"none", "host", "bridge"})
MAX_SUBNETS = 16
MAX_ALIASES = 32


class AlreadyConnected(Conflict):
    """A connect found the container on the network already."""


class NotConnected(Conflict):
    """A disconnect found the container not on the network."""


@dataclass(frozen=True, slots=True)
class Subnet:
    subnet: str
    gateway: str | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A container on a network, with its IPv4 address there (None while it is not running)."""

    id: str
    name: str
    ipv4: str | None


@dataclass(frozen=True, slots=True)
class Network:
    id: str
    name: str
    driver: str
    scope: str
    internal: bool
    attachable: bool
    created: int
    labels: Mapping[str, str]
    subnets: tuple[Subnet, ...]
    containers: tuple[Endpoint, ...]


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    name: str
    driver: str = "bridge"
    internal: bool = False
    attachable: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    subnets: tuple[Subnet, ...] = ()


@runtime_checkable
class NetworkStore(Protocol):
    """A runtime that keeps networks (Docker). A network is addressed by id, id prefix or name;
    the errors are those of :mod:`runtimes.errors` with ``resource="network"``, Forbidden for a
    predefined network, and the two Conflicts above for connections."""

    async def list_networks(self) -> list[Network]: ...

    async def get_network(self, ref: str) -> Network: ...

    async def create_network(self, spec: NetworkSpec) -> Network:
        """A new network; a name another network has is InUse with resource "network_name"."""
        ...

    async def remove_network(self, ref: str) -> None:
        """Removes a network no running container is on (InUse naming them otherwise)."""
        ...

    async def connect_network(
        self, ref: str, container: str, *, aliases: Sequence[str], ipv4: str | None
    ) -> None: ...

    async def disconnect_network(self, ref: str, container: str, *, force: bool) -> None: ...

    async def prune_networks(self) -> list[str]:
        """Removes the networks no container is on (running or not); the names of those removed."""
        ...
