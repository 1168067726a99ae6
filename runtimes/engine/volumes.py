"""Volumes of a container engine: what a runtime that keeps them offers, and the values it returns.

Names of volumes (and of networks, see :mod:`runtimes.engine.networks`) follow the Engine's rule
for local volume names; the gateway checks a name against it before any runtime sees it, so a
slash, ``..`` or a percent sign never reaches an Engine URL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeGuard, runtime_checkable

from ..errors import RuntimeFailure

# Docker's rule for local volume names (and the one its network names keep to), bounded at a
# file name's 255 bytes: the local driver makes a directory of it.
_ENGINE_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{1,254}")
MAX_LABELS = 100
MAX_LABEL_LENGTH = 4096


def is_engine_name(value: object) -> TypeGuard[str]:
    """A name (or id) the Engine could have given a volume or a network."""
    return isinstance(value, str) and bool(_ENGINE_NAME.fullmatch(value))


class SpecRejected(RuntimeFailure):
    """The Engine refused what a client asked to create (a driver it does not have, an option the
    driver does not take); ``field`` names the request field at fault and ``detail`` says why."""

    def __init__(self, message: str, *, detail: str, field: str) -> None:
        super().__init__(message, detail=detail)
        self.field = field


@dataclass(frozen=True, slots=True)
class Volume:
    name: str
    driver: str
    mountpoint: str
    created: int
    labels: Mapping[str, str]
    scope: str
    # Bytes used, or None: asked for only (the Engine computes it walking the volume), and not
    # every driver reports it.
    size: int | None
    # The names of the containers (running or not) that mount the volume.
    containers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class VolumeSpec:
    """A volume to create: a name of its own, or none for an anonymous one the Engine names."""

    name: str | None = None
    driver: str = "local"
    labels: Mapping[str, str] = field(default_factory=dict)
    driver_opts: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VolumePrune:
    deleted: tuple[str, ...]
    space_reclaimed: int


@runtime_checkable
class VolumeStore(Protocol):
    """A runtime that keeps volumes (Docker); the errors are those of :mod:`runtimes.errors`
    with ``resource="volume"``, and :class:`SpecRejected` for a create the Engine refused."""

    async def list_volumes(self, *, sizes: bool) -> list[Volume]:
        """Every volume; with ``sizes``, each one's size where the Engine reports it (slow)."""
        ...

    async def create_volume(self, spec: VolumeSpec) -> Volume:
        """A new volume; a name another volume has is InUse with resource "volume_name"."""
        ...

    async def remove_volume(self, name: str, *, force: bool) -> None:
        """Removes a volume no container uses (InUse naming them otherwise)."""
        ...

    async def prune_volumes(self, *, all: bool) -> VolumePrune:
        """Removes the volumes no container uses: only anonymous ones unless ``all``."""
        ...
