"""Docker volumes: list (with the containers using each, and sizes on request), create, remove, prune."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import aiodocker

from ..engine.volumes import SpecRejected, Volume, VolumePrune, VolumeSpec
from ..errors import Conflict, InUse, NotFound, OperationFailed, RuntimeFailure
from ..urlpath import segment
from .session import EngineSession
from .states import parse_timestamp

# `docker system df` walks every volume to size it: slow on a big host, so it has its own bound.
DF_TIMEOUT = 300.0
# API 1.42 (Engine 23) made prune leave named volumes alone unless asked with the filter all=true.
_PRUNE_ALL_FILTER = (1, 42)
# Before Engine 23 an anonymous volume is known only by the 64 hex digits the Engine named it with;
# from 23 on it carries this label.
_ANONYMOUS_LABEL = "com.docker.volume.anonymous"
_ANONYMOUS_NAME = re.compile(r"[0-9a-f]{64}")


def engine_status(exc: RuntimeFailure) -> int | None:
    """The HTTP status the Engine answered with, when ``exc`` came from such an answer."""
    cause = exc.__cause__
    return cause.status if isinstance(cause, aiodocker.DockerError) else None


def names_by_mount(containers: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Volume name → names of the containers (from ``containers/json``) that mount it."""
    users: dict[str, list[str]] = {}
    for container in containers:
        name = container_name(container)
        for mount in container.get("Mounts") or ():
            if mount.get("Type") == "volume" and mount.get("Name"):
                users.setdefault(mount["Name"], []).append(name)
    return users


def container_name(container: Mapping[str, Any]) -> str:
    """A ``containers/json`` row's name without the Engine's leading slash (else its short id)."""
    names = container.get("Names") or ()
    return str(names[0]).lstrip("/") if names else str(container.get("Id", ""))[:12]


def _api_version(version: Mapping[str, Any]) -> tuple[int, int]:
    major, _, minor = str(version.get("ApiVersion", "0.0")).partition(".")
    return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else (0, 0)


def _is_anonymous(doc: Mapping[str, Any]) -> bool:
    return _ANONYMOUS_LABEL in (doc.get("Labels") or {}) or bool(_ANONYMOUS_NAME.fullmatch(doc["Name"]))


def _size(doc: Mapping[str, Any]) -> int | None:
    size = (doc.get("UsageData") or {}).get("Size", -1)
    return int(size) if isinstance(size, int) and size >= 0 else None


def _volume(
    doc: Mapping[str, Any], users: Mapping[str, list[str]], sizes: Mapping[str, int | None]
) -> Volume:
    name = str(doc["Name"])
    return Volume(
        name=name,
        driver=str(doc.get("Driver", "")),
        mountpoint=str(doc.get("Mountpoint", "")),
        created=parse_timestamp(str(doc.get("CreatedAt") or "")),
        labels=dict(doc.get("Labels") or {}),
        scope=str(doc.get("Scope", "local")),
        size=sizes.get(name),
        containers=tuple(users.get(name, ())),
    )


async def _unsized() -> dict[str, int | None]:
    """No sizes: what a list answers when it was not asked for them."""
    return {}


class Volumes:
    """The volumes of one Engine."""

    def __init__(self, session: EngineSession) -> None:
        self._session = session

    async def _users(self) -> dict[str, list[str]]:
        return names_by_mount(await self._session.json("containers/json", params={"all": "1"}))

    async def _sizes(self) -> dict[str, int | None]:
        df = await self._session.json("system/df", timeout=DF_TIMEOUT)
        return {str(doc["Name"]): _size(doc) for doc in df.get("Volumes") or ()}

    async def list_volumes(self, *, sizes: bool) -> list[Volume]:
        answer, users, known = await asyncio.gather(
            self._session.json("volumes"), self._users(), self._sizes() if sizes else _unsized()
        )
        return [_volume(doc, users, known) for doc in answer.get("Volumes") or ()]

    async def _inspect(self, name: str) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = await self._session.json(f"volumes/{segment(name)}")
        except NotFound:
            return None
        return doc

    async def create(self, spec: VolumeSpec) -> Volume:
        # The Engine answers an existing name with that volume, as if it had made it: the gateway
        # refuses instead, so a client never takes someone else's volume (or labels) for its own.
        if spec.name is not None and await self._inspect(spec.name) is not None:
            raise InUse(
                f"volume {spec.name} exists",
                detail=f"A volume named {spec.name!r} already exists",
                resource="volume_name",
            )
        body: dict[str, Any] = {
            "Driver": spec.driver,
            "Labels": dict(spec.labels),
            "DriverOpts": dict(spec.driver_opts),
        }
        if spec.name is not None:
            body["Name"] = spec.name
        try:
            doc = await self._session.json("volumes/create", method="POST", body=body)
        except NotFound as exc:
            raise SpecRejected(
                str(exc), detail=f"The Engine has no volume driver {spec.driver!r}", field="driver"
            ) from exc
        except OperationFailed as exc:
            if engine_status(exc) != 400:
                raise
            raise SpecRejected(
                str(exc),
                detail=f"The {spec.driver!r} volume driver does not accept these driverOpts",
                field="driverOpts",
            ) from exc
        return _volume(doc, {}, {})

    async def remove(self, name: str, *, force: bool) -> None:
        # With force the Engine answers 204 for a volume it never had: asked first, that is a 404.
        if await self._inspect(name) is None:
            raise NotFound(f"volume {name} does not exist", resource="volume", name=name)
        try:
            await self._session.json(
                f"volumes/{segment(name)}", method="DELETE", params={"force": "1" if force else "0"}
            )
        except NotFound as exc:
            raise NotFound(str(exc), resource="volume", name=name) from exc
        except Conflict as exc:
            users = (await self._users()).get(name) or ["a container"]
            raise InUse(
                str(exc),
                detail=f"Volume {name!r} is used by {', '.join(users)}; remove those containers first",
                resource="volume",
            ) from exc

    async def prune(self, *, all: bool) -> VolumePrune:
        version = _api_version(await self._session.json("version", versioned=False, timeout=5))
        if version < _PRUNE_ALL_FILTER and not all:
            return await self._prune_anonymous()
        # Before API 1.42 a prune takes every unused volume already; from 1.42 on it is asked to.
        params = {"filters": json.dumps({"all": ["true"]})} if version >= _PRUNE_ALL_FILTER and all else {}
        answer = await self._session.json("volumes/prune", method="POST", params=params, timeout=DF_TIMEOUT)
        return VolumePrune(tuple(answer.get("VolumesDeleted") or ()), int(answer.get("SpaceReclaimed") or 0))

    async def _prune_anonymous(self) -> VolumePrune:
        """An older Engine's prune takes named volumes too: the anonymous ones are removed one by
        one instead, their sizes read first so the answer says what was reclaimed."""
        params = {"filters": json.dumps({"dangling": ["true"]})}
        answer = await self._session.json("volumes", params=params)
        candidates = [doc["Name"] for doc in answer.get("Volumes") or () if _is_anonymous(doc)]
        if not candidates:
            return VolumePrune((), 0)
        sizes = await self._sizes()
        deleted: list[str] = []
        reclaimed = 0
        for name in candidates:
            try:
                await self._session.json(f"volumes/{segment(name)}", method="DELETE")
            except (NotFound, Conflict):
                continue  # gone meanwhile, or a container took it up: not this prune's to remove
            deleted.append(name)
            reclaimed += sizes.get(name) or 0
        return VolumePrune(tuple(deleted), reclaimed)
