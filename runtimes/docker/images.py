"""Images on a Docker Engine: a pull through ``POST /images/create``, read as it streams; the list,
deletes and prunes.

The Engine answers a pull with one JSON object per line (a status per layer, download and extract
counters, a digest, or an error). :class:`PullTally` folds those lines into :class:`PullProgress`;
nothing of the Engine's wording reaches a client except through :func:`pull_failure`, which
words the known causes itself.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiodocker

from ..engine.images import (
    ImageFilter,
    ImageName,
    ImagePrune,
    ImageRemoval,
    ImageSummary,
    PulledImage,
    PullProgress,
    PullStatus,
)
from ..errors import Conflict, InUse, NotFound, OperationFailed, RuntimeFailure
from ..urlpath import segment
from .session import ENGINE_ERRORS, EngineSession

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
PRUNE_SECONDS = 600.0  # a prune of many images keeps the Engine busy for a while
_NAMES_SHOWN = 5  # containers named in an "in use" message; more are counted
# Layer states after which a layer's bytes are all there.
_DOWNLOADED = ("Verifying Checksum", "Download complete", "Extracting", "Pull complete")
_LAYER_DONE = ("Pull complete", "Already exists")
# What the Engine says when the registry has no such repository, tag or digest.
_NOT_FOUND = ("not found", "manifest unknown", "repository does not exist", "no such image")
_UNREACHABLE = ("connection refused", "no such host", "network is unreachable", "no route to host")
# Other causes worth telling, each in our own words: (what the Engine's message contains, reason).
_REASONS = (
    ("no space left on device", "the Engine's disk is full"),
    ("unauthorized", "the registry refused access to it"),
    ("authentication required", "the registry refused access to it"),
    ("denied", "the registry refused access to it"),
    ("toomanyrequests", "the registry's rate limit was reached"),
    ("timeout", "the registry did not answer in time"),
    ("deadline exceeded", "the registry did not answer in time"),
    ("http response to https client", "the registry speaks plain HTTP and the Engine does not trust it"),
    ("certificate", "the registry's TLS certificate was not accepted"),
    ("no matching manifest", "it has no variant for the Engine's platform"),
)


@dataclass(slots=True)
class _Layer:
    done: bool = False
    current: int = 0
    total: int = 0  # 0 while the registry has not told the layer's size


class PullTally:
    """Where a pull stands, from the Engine's progress lines: each layer by its id, counted once."""

    def __init__(self, reference: str) -> None:
        self.reference = reference
        self.digest = ""
        self._layers: dict[str, _Layer] = {}
        self._status: PullStatus = "pulling"

    def add(self, line: Mapping[str, Any]) -> PullProgress | None:
        """Take one progress line; answer the new state, or None when the line changed nothing a
        client sees. An error line raises the failure it means."""
        if "error" in line or "errorDetail" in line:
            detail = line.get("errorDetail")
            text = (detail.get("message") if isinstance(detail, Mapping) else "") or line.get("error")
            raise pull_failure(self.reference, str(text or ""))
        status = str(line.get("status") or "")
        layer_id = line.get("id")
        if status.startswith("Digest: "):
            found = _DIGEST.search(status)
            self.digest = found.group(0) if found else self.digest
            return None
        if not isinstance(layer_id, str) or not layer_id or status.startswith("Pulling from"):
            return None
        layer = self._layers.setdefault(layer_id, _Layer())
        detail = line.get("progressDetail")
        if status == "Downloading" and isinstance(detail, Mapping):
            current, total = detail.get("current"), detail.get("total")
            if isinstance(total, int) and total > 0:
                layer.total = total
            if isinstance(current, int) and current >= 0:
                layer.current = min(current, layer.total) if layer.total else current
            self._status = "downloading"
        elif status in _DOWNLOADED:
            layer.current = layer.total
            if status == "Extracting":
                self._status = "extracting"
        if status in _LAYER_DONE:
            layer.done = True
        return self.progress()

    def progress(self, status: PullStatus | None = None) -> PullProgress:
        layers = self._layers.values()
        sized = [layer for layer in layers if layer.total]
        return PullProgress(
            reference=self.reference,
            status=status or self._status,
            layers_total=len(self._layers),
            layers_done=sum(1 for layer in layers if layer.done),
            bytes_done=sum(layer.current for layer in sized),
            bytes_total=sum(layer.total for layer in sized),
        )

    def finished(self) -> PullProgress:
        """The state once the Engine has said the image is there: every layer done."""
        for layer in self._layers.values():
            layer.done = True
            layer.current = layer.total
        return self.progress("complete")


def pull_failure(reference: str, text: str) -> RuntimeFailure:
    """The runtime error an Engine's pull error means. The Engine's text goes to the log only;
    the client reads a reason of our own (and the registry's address when it cannot be reached)."""
    lowered = text.lower()
    operator = f"pull of {reference} failed: {text}"
    if any(marker in lowered for marker in _NOT_FOUND):
        return NotFound(operator, resource="image", name=reference)
    if any(marker in lowered for marker in _UNREACHABLE):
        registry = ImageName.parse(reference).registry
        return OperationFailed(operator, detail=f"registry {registry} is not reachable from the Engine")
    reason = next((why for marker, why in _REASONS if marker in lowered), "the Engine could not pull it")
    return OperationFailed(operator, detail=f"{reference}: {reason}")


class Images:
    """The images of one Engine."""

    def __init__(self, session: EngineSession) -> None:
        self._session = session
        # The Engine refuses a second prune while one runs: the gateway's own prunes take turns.
        self._prune_lock = asyncio.Lock()

    async def summaries(self, filters: ImageFilter) -> list[ImageSummary]:
        """The Engine's top-level images (as ``docker images``), each with the containers using it."""
        wanted: dict[str, list[str]] = {}
        if filters.dangling is not None:
            wanted["dangling"] = ["true" if filters.dangling else "false"]
        if filters.reference:
            wanted["reference"] = [filters.reference]
        if filters.labels:
            wanted["label"] = list(filters.labels)
        params = {"filters": json.dumps(wanted)} if wanted else {}
        rows, containers = await asyncio.gather(
            self._session.json("images/json", params=params), self._containers()
        )
        users: dict[str, list[str]] = {}
        for container in containers:
            users.setdefault(str(container.get("ImageID", "")), []).append(str(container.get("Id", ""))[:12])
        return [_summary(row, users.get(str(row.get("Id", "")), [])) for row in rows or ()]

    async def remove(self, target: str, *, force: bool) -> ImageRemoval:
        """Delete ``target`` as ``docker rmi`` would; a refusal names the containers behind it."""
        images = await self._image_ids({})
        try:
            answer = await self._session.json(
                f"images/{segment(target)}",
                method="DELETE",
                params={"force": "1" if force else "0"},
            )
        except NotFound as exc:
            raise NotFound(str(exc), resource="image", name=target) from exc
        except Conflict as exc:
            raise await self._in_use(target, force, exc) from exc
        entries = [entry for entry in answer or () if isinstance(entry, Mapping)]
        return ImageRemoval(
            deleted=_deleted_images(entries, images),
            untagged=tuple(str(e["Untagged"]) for e in entries if e.get("Untagged")),
        )

    async def prune(self, *, unused: bool, labels: Sequence[str]) -> ImagePrune:
        """Remove dangling images, or every image no container uses (``unused``)."""
        chosen: dict[str, list[str]] = {"label": list(labels)} if labels else {}
        async with self._prune_lock:
            images = await self._image_ids(chosen)
            try:
                answer = await self._session.json(
                    "images/prune",
                    method="POST",
                    params={"filters": json.dumps({**chosen, "dangling": ["false" if unused else "true"]})},
                    timeout=PRUNE_SECONDS,
                )
            except Conflict as exc:
                raise OperationFailed(
                    str(exc),
                    detail="another prune, started outside the gateway, is running on the Engine; "
                    "try again when it has finished",
                ) from exc
        removed = [entry for entry in (answer or {}).get("ImagesDeleted") or () if isinstance(entry, Mapping)]
        return ImagePrune(
            deleted=_deleted_images(removed, images),
            space_reclaimed=int((answer or {}).get("SpaceReclaimed") or 0),
        )

    async def _image_ids(self, filters: Mapping[str, list[str]]) -> frozenset[str]:
        """The ids of every image (intermediate ones too) that ``filters`` select."""
        params = {"all": "1", **({"filters": json.dumps(filters)} if filters else {})}
        rows = await self._session.json("images/json", params=params)
        return frozenset(str(row.get("Id", "")) for row in rows or ())

    async def _containers(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self._session.json("containers/json", params={"all": "1"})
        return rows or []

    async def _in_use(self, target: str, force: bool, refusal: Conflict) -> RuntimeFailure:
        """Why the Engine refused to delete ``target``, in a sentence naming the containers that use
        it (the running ones when ``force`` was given, since only those stop a forced delete)."""
        try:
            image, containers = await asyncio.gather(
                self._session.json(f"images/{segment(target)}/json"), self._containers()
            )
        except NotFound as exc:  # gone since the refusal
            return NotFound(str(exc), resource="image", name=target)
        image_id = str(image.get("Id", ""))
        users = [c for c in containers if c.get("ImageID") == image_id]
        running = [c for c in users if c.get("State") == "running"]
        if running:
            detail = (
                f"Image {target} is used by running container(s) {_names(running)}; "
                "stop and remove them first (force does not remove an image a running container uses)"
            )
        elif users and not force:
            detail = (
                f"Image {target} is used by container(s) {_names(users)}; remove them first, "
                "or delete with force=true to remove it anyway (the containers stay)"
            )
        elif len(tags := [str(tag) for tag in image.get("RepoTags") or ()]) > 1 and not force:
            detail = (
                f"Image {target} has several tags ({', '.join(tags[:_NAMES_SHOWN])}); delete them one "
                "at a time, or delete with force=true to remove them all"
            )
        else:
            detail = f"Image {target} has other images built on it; delete those first"
        return InUse(f"delete of image {target} refused: {refusal}", detail=detail, resource="image")

    async def pull(self, reference: str, on_progress: Callable[[PullProgress], None]) -> PulledImage:
        """Pull ``reference``, reading the Engine's progress line by line (never the whole body),
        and answer the image it left; ``on_progress`` hears a final state either way."""
        name = ImageName.parse(reference)
        tally = PullTally(reference)
        on_progress(tally.progress())
        params = {"fromImage": name.repository, "tag": name.digest or name.tag}
        try:
            await self._stream_pull(params, tally, on_progress)
            pulled = await self._pulled(name, tally.digest)
        except BaseException:
            on_progress(tally.progress("failed"))
            raise
        on_progress(tally.finished())
        return pulled

    async def _stream_pull(
        self, params: Mapping[str, str], tally: PullTally, on_progress: Callable[[PullProgress], None]
    ) -> None:
        try:
            async with self._session.stream("images/create", params, method="POST") as response:
                async for raw in response.content:
                    line = raw.strip()
                    if not line:
                        continue
                    try:
                        parsed = json.loads(line)
                    except ValueError:
                        continue  # not a progress line: nothing to count
                    if isinstance(parsed, Mapping) and (state := tally.add(parsed)) is not None:
                        on_progress(state)
        except aiodocker.DockerError as exc:
            if exc.status == 900:
                self._session.fail(exc, "POST images/create")
            # Refused before streaming began (an unknown repository, an unreachable registry).
            raise pull_failure(tally.reference, str(exc.message)) from exc
        except ValueError as exc:  # a line longer than the reader's limit
            raise OperationFailed(
                f"pull of {tally.reference}: unreadable progress: {exc}",
                detail=f"{tally.reference}: the Engine's answer could not be read",
            ) from exc
        except ENGINE_ERRORS as exc:
            self._session.fail(exc, "POST images/create")

    async def _pulled(self, name: ImageName, digest: str) -> PulledImage:
        """The pulled image's id, and its digest (from the pull, else the image's RepoDigests)."""
        try:
            doc = await self._session.json(f"images/{segment(str(name))}/json")
        except NotFound as exc:
            raise NotFound(str(exc), resource="image", name=str(name)) from exc
        if not digest:
            digest = repo_digest(doc, name.repository)
        return PulledImage(reference=str(name), id=str(doc.get("Id", "")), digest=digest)


def repo_digest(doc: Mapping[str, Any], repository: str) -> str:
    """The digest an image has in ``repository`` (its ``RepoDigests`` entry), or ""."""
    wanted = {repository, _familiar(repository)}
    for entry in doc.get("RepoDigests") or ():
        repo, _, digest = str(entry).partition("@")
        if (repo in wanted or _familiar(repo) in wanted) and _DIGEST.fullmatch(digest):
            return digest
    return ""


def _familiar(repository: str) -> str:
    """A Docker Hub repository as the Engine shows it: ``docker.io/library/busybox`` is ``busybox``."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if repository.startswith(prefix):
            return repository[len(prefix) :]
    return repository


def _summary(row: Mapping[str, Any], containers: Iterable[str]) -> ImageSummary:
    tags = tuple(str(t) for t in row.get("RepoTags") or () if t != "<none>:<none>")
    digests = tuple(str(d) for d in row.get("RepoDigests") or () if d != "<none>@<none>")
    return ImageSummary(
        id=str(row.get("Id", "")),
        tags=tags,
        digests=digests,
        size=int(row.get("Size") or 0),
        created=int(row.get("Created") or 0),
        containers=tuple(containers),
    )


def _deleted_images(entries: Iterable[Mapping[str, Any]], images: frozenset[str]) -> tuple[str, ...]:
    """The images among what the Engine says it deleted: it names the layers it freed alike."""
    return tuple(str(e["Deleted"]) for e in entries if e.get("Deleted") in images)


def _names(containers: Sequence[Mapping[str, Any]]) -> str:
    """Up to five containers by name (``web, db and 3 more``)."""
    names = [str((c.get("Names") or [""])[0]).lstrip("/") or str(c.get("Id", ""))[:12] for c in containers]
    shown = ", ".join(names[:_NAMES_SHOWN])
    return f"{shown} and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else shown
