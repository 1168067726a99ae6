"""Images: pulling one by reference, with progress, and the one check of a reference a client sends.

Creating and updating a container pull through :class:`ImageStore` as the image routes do, so a
pull looks the same (progress events, error codes) wherever it starts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

MAX_REFERENCE = 255

# Docker's reference grammar (distribution/reference), with digests limited to sha256:
#   [registry[:port]/]path-component[/path-component...][:tag][@sha256:<64 hex>]
# A registry is a host name (any case), an IPv4 address or a bracketed IPv6 address; a path
# component is lowercase alphanumerics joined by one "." or "_", "__", or a run of "-", so ".."
# and whitespace never match. Every part is anchored: nothing else may follow.
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(
    rf"(?:{_HOST}(?::[0-9]+)?/)?"
    rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?"
    r"(?:@sha256:[0-9a-f]{64})?",
    re.ASCII,
)

PullStatus = Literal["pulling", "downloading", "extracting", "complete", "failed"]
# The states after which a pull reports nothing more.
FINAL_STATUSES: frozenset[str] = frozenset({"complete", "failed"})


def is_image_reference(value: object) -> bool:
    """Whether ``value`` is an image reference Docker accepts (``nginx``, ``nginx:1.25``,
    ``127.0.0.1:5000/team/app:v2``, ``app@sha256:…``): the one validation of a reference a client
    sends, before it reaches an Engine."""
    return isinstance(value, str) and len(value) <= MAX_REFERENCE and _REFERENCE.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class ImageName:
    """A reference taken apart: ``repository`` (with its registry, if any), and a tag or digest.

    A reference with neither means ``:latest``, as ``docker pull`` does.
    """

    repository: str
    tag: str
    digest: str

    @classmethod
    def parse(cls, reference: str) -> ImageName:
        """Split a reference that :func:`is_image_reference` accepted."""
        name, _, digest = reference.partition("@")
        slash = name.rfind("/")
        colon = name.rfind(":")
        if colon > slash:
            repository, tag = name[:colon], name[colon + 1 :]
        else:
            repository, tag = name, ""
        if not tag and not digest:
            tag = "latest"
        return cls(repository, tag, digest)

    @property
    def registry(self) -> str:
        """The registry the repository lives on: its first component when that names a host
        (a dot, a port or ``localhost``), else Docker Hub."""
        first, slash, _ = self.repository.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
            return first
        return "docker.io"

    def __str__(self) -> str:
        if self.digest:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository}:{self.tag}"


@dataclass(frozen=True, slots=True)
class PullProgress:
    """Where a pull stands: layers seen and finished, and bytes downloaded of the layers whose size
    the registry told (a layer already on the Engine counts as done, with no bytes)."""

    reference: str
    status: PullStatus
    layers_total: int
    layers_done: int
    bytes_done: int
    bytes_total: int

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(frozen=True, slots=True)
class PulledImage:
    """The image a pull left under ``reference``: its id (``sha256:…``) and its registry digest
    (``sha256:…``, empty for an image the registry did not name by digest)."""

    reference: str
    id: str
    digest: str


@runtime_checkable
class ImageStore(Protocol):
    """A runtime that pulls images (Docker; Kubernetes pulls on its nodes, never through us)."""

    async def pull_image(self, reference: str, on_progress: Callable[[PullProgress], None]) -> PulledImage:
        """Pull ``reference`` (``:latest`` when it has neither tag nor digest), telling
        ``on_progress`` where it stands; its last call is a final state (``complete`` or
        ``failed``). Raises ``NotFound(resource="image")`` when the registry has no such image."""
        ...
