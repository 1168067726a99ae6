"""Images: pulling one by reference, with progress; listing, deleting and pruning them; and the one
check of a reference or id a client sends.

Creating and updating a container pull through :class:`ImageStore` as the image routes do, so a
pull looks the same (progress events, error codes) wherever it starts. :class:`ImageCatalog` adds
what only the image routes need.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
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

# An image id as Docker shows it: the full ``sha256:<64 hex>``, or a prefix of at least 12 hex
# digits (the short id), with or without ``sha256:``.
_IMAGE_ID = re.compile(r"(?:sha256:)?[0-9a-f]{12,64}", re.ASCII)

PullStatus = Literal["pulling", "downloading", "extracting", "complete", "failed"]
# The states after which a pull reports nothing more.
FINAL_STATUSES: frozenset[str] = frozenset({"complete", "failed"})


def is_image_reference(value: object) -> bool:
    """Whether ``value`` is an image reference Docker accepts (``nginx``, ``nginx:1.25``,
    ``127.0.0.1:5000/team/app:v2``, ``app@sha256:…``): the one validation of a reference a client
    sends, before it reaches an Engine."""
    return isinstance(value, str) and len(value) <= MAX_REFERENCE and _REFERENCE.fullmatch(value) is not None


def image_target(value: object) -> str | None:
    """What an image id or reference from a client addresses on an Engine, or None for neither.

    An id (prefix) is kept as it is; a reference gets its tag made explicit (``busybox`` is
    ``busybox:latest``), so a short name of hex digits is never taken for an id prefix of another
    image. Twelve or more hex digits are an id.
    """
    if isinstance(value, str) and _IMAGE_ID.fullmatch(value):
        return value
    if isinstance(value, str) and value.startswith("sha256:"):
        return None  # a malformed id, though "sha256" could name a repository
    if is_image_reference(value):
        assert isinstance(value, str)
        return str(ImageName.parse(value))
    return None


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


@dataclass(frozen=True, slots=True)
class ImageSummary:
    """One image of a list: ``id`` is ``sha256:…``; ``containers`` are the short ids of the
    containers made from it, running or not."""

    id: str
    tags: tuple[str, ...]
    digests: tuple[str, ...]
    size: int
    created: int
    containers: tuple[str, ...]

    @property
    def dangling(self) -> bool:
        """Neither tagged nor known by a digest, as ``docker images -f dangling=true`` means it."""
        return not self.tags and not self.digests


@dataclass(frozen=True, slots=True)
class ImageFilter:
    """Which images a list answers: ``dangling`` True or False (None: both), a ``reference``
    pattern as ``docker images --filter reference=`` takes it, and labels (``key`` or ``key=value``)."""

    dangling: bool | None = None
    reference: str | None = None
    labels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ImageRemoval:
    """What a delete did: image ids removed, and tags or digests taken off."""

    deleted: tuple[str, ...]
    untagged: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ImagePrune:
    """What a prune removed (image ids) and the bytes it freed."""

    deleted: tuple[str, ...]
    space_reclaimed: int


@runtime_checkable
class ImageCatalog(ImageStore, Protocol):
    """A runtime whose images a client manages: list, delete and prune as well as pull."""

    @property
    def name(self) -> str:
        """The runtime's name in the registry, which a pull's operation record carries."""
        ...

    async def list_images(self, filters: ImageFilter) -> list[ImageSummary]: ...

    async def remove_image(self, target: str, *, force: bool) -> ImageRemoval:
        """Delete ``target`` (an :func:`image_target`). Raises ``NotFound(resource="image")``,
        or ``InUse(resource="image")`` naming the containers that use it: any container without
        ``force``, a running one even with it."""
        ...

    async def prune_images(self, *, unused: bool, labels: Sequence[str]) -> ImagePrune:
        """Remove dangling images (every image no container uses, with ``unused``), only those
        with all of ``labels`` when any are given."""
        ...
