"""Updating a container to the image its reference names now, and telling whether one is waiting.

A recreate keeps the container's own configuration and lets the new image supply what the old
image supplied (its environment defaults, command, labels): :func:`recreate_body` takes the
Engine's inspect document apart the way ``docker run`` put it together. Every step is undone when
a later one fails, so a failed update leaves the old container as it was.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from typing import Any

from ..base import ContainerRef
from ..engine.creation import Recreated, UpdateSource
from ..engine.images import ImageName, is_image_reference
from ..engine.updates import ContainerImage
from ..errors import NotFound, OperationFailed, RuntimeFailure, Unsupported
from ..urlpath import segment
from .create import CREATE_TIMEOUT, Creation
from .images import repo_digest
from .paths import container_path, short_id
from .queries import Queries
from .session import READ_TIMEOUT, EngineSession

log = logging.getLogger(__name__)

DEFAULT_STOP_TIMEOUT = 10  # the Engine's own default grace period
DIGEST_TIMEOUT = 30.0
# Config keys the image may have supplied; each is left to the new image when it still equals the old image's.
_IMAGE_DEFAULTS = ("WorkingDir", "User", "Healthcheck", "StopSignal", "Shell", "OnBuild")
_SPECIAL_NETWORKS = ("none", "host")
# The name a recreate gives the previous container while the new one takes its name: the old name,
# the old id's first 12 digits, and whether it was running, so that an update a dead gateway left
# half-done can be finished or undone from the Engine's state alone (see Updates.recover).
_ASIDE = re.compile(r"(?P<name>.+)-nekzus-old-(?P<id>[0-9a-f]{12})(?P<running>-running)?")


def aside_name(name: str, full_id: str, *, running: bool) -> str:
    return f"{name}-nekzus-old-{short_id(full_id)}{'-running' if running else ''}"


def _names_an_id(reference: str, image_id: str) -> bool:
    """Whether ``reference`` is no name but the image's id (``sha256:…`` or a prefix of its hex)."""
    return (
        not reference
        or reference.startswith("sha256:")
        or image_id.removeprefix("sha256:").startswith(reference)
    )


def pinned_reason(doc: Mapping[str, Any]) -> str:
    """Why the container's image cannot be pulled again ("" when it can): it was created from an
    image id, or from a digest, which always names the same image."""
    reference = str((doc.get("Config") or {}).get("Image") or "")
    if _names_an_id(reference, str(doc.get("Image") or "")):
        return "it was created from an image id, not a tag, so there is nothing to pull again"
    if "@" in reference or not is_image_reference(reference):
        return "its image is pinned to a digest, which always names the same image"
    return ""


def _without_image_defaults(config: dict[str, Any], image: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` without what the old image put there, so the new image's values apply."""
    env = set(image.get("Env") or ())
    config["Env"] = [entry for entry in config.get("Env") or () if entry not in env]
    image_labels = image.get("Labels") or {}
    config["Labels"] = {
        key: value for key, value in (config.get("Labels") or {}).items() if image_labels.get(key) != value
    }
    for key in ("ExposedPorts", "Volumes"):
        own = {k: v for k, v in (config.get(key) or {}).items() if k not in (image.get(key) or {})}
        config[key] = own or None
    # An entrypoint of its own resets the image's command (docker run does so): only with the
    # image's entrypoint is a command equal to the image's the image's default.
    if config.get("Entrypoint") == image.get("Entrypoint"):
        config.pop("Entrypoint", None)
        if config.get("Cmd") == image.get("Cmd"):
            config.pop("Cmd", None)
    for key in _IMAGE_DEFAULTS:
        if key in config and config[key] == image.get(key):
            config.pop(key)
    return config


def _anonymous_volumes(doc: Mapping[str, Any], host_config: Mapping[str, Any]) -> list[str]:
    """Binds that keep the container's anonymous volumes (an image's VOLUME, ``-v /data``): a new
    container would otherwise get empty ones, and its data would stay behind."""
    targets = {str(bind).split(":")[1] for bind in host_config.get("Binds") or () if ":" in str(bind)}
    targets |= {str(m.get("Target")) for m in host_config.get("Mounts") or ()}
    binds = []
    for mount in doc.get("Mounts") or ():
        if mount.get("Type") == "volume" and mount.get("Name") and mount.get("Destination") not in targets:
            mode = "rw" if mount.get("RW", True) else "ro"
            binds.append(f"{mount['Name']}:{mount['Destination']}:{mode}")
    return binds


def _endpoint(settings: Mapping[str, Any], old_short_id: str) -> dict[str, Any]:
    """A network endpoint's own settings (aliases, static addresses, links), without what the
    Engine derived from the old container (its short id as an alias)."""
    endpoint: dict[str, Any] = {}
    aliases = [alias for alias in settings.get("Aliases") or () if alias != old_short_id]
    if aliases:
        endpoint["Aliases"] = aliases
    for key in ("IPAMConfig", "Links", "DriverOpts"):
        if settings.get(key):
            endpoint[key] = settings[key]
    return endpoint


def recreate_body(
    doc: Mapping[str, Any], image: Mapping[str, Any], reference: str
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The create body of a container like ``doc`` (its inspect document) on the image
    ``reference`` names, given the old ``image``'s inspect document; and the networks to connect
    after the create (an Engine before API 1.44 takes one network in a create)."""
    old_short = short_id(str(doc["Id"]))
    config = _without_image_defaults(dict(doc.get("Config") or {}), image.get("Config") or {})
    config["Image"] = reference
    if config.get("Hostname") == old_short:
        config.pop("Hostname")  # the Engine's default hostname: the new container gets its own
    host_config = dict(doc.get("HostConfig") or {})
    host_config["Binds"] = [*(host_config.get("Binds") or ()), *_anonymous_volumes(doc, host_config)]
    networks = ((doc.get("NetworkSettings") or {}).get("Networks")) or {}
    mode = str(host_config.get("NetworkMode") or "default")
    body: dict[str, Any] = {**config, "HostConfig": host_config}
    later: dict[str, dict[str, Any]] = {}
    if mode in _SPECIAL_NETWORKS or mode.startswith("container:"):
        return body, later
    primary = "bridge" if mode == "default" else mode
    for name, settings in networks.items():
        endpoint = _endpoint(settings or {}, old_short)
        if name == primary:
            body["NetworkingConfig"] = {"EndpointsConfig": {name: endpoint}}
        else:
            later[name] = endpoint
    return body, later


class Updates:
    """Recreating containers of one Engine on newer images, and the digests that tell of them."""

    def __init__(self, session: EngineSession, queries: Queries, creation: Creation) -> None:
        self._session = session
        self._queries = queries
        self._creation = creation

    async def source(self, container: str) -> UpdateSource:
        doc = await self._queries.inspect_raw(ContainerRef(container))
        name = str(doc.get("Name", "")).lstrip("/")
        reason = pinned_reason(doc)
        if reason:
            raise Unsupported(f"{name} cannot be updated: {reason}", detail=f"Container {name!r}: {reason}")
        return UpdateSource(
            full_id=str(doc["Id"]),
            name=name,
            reference=str(doc["Config"]["Image"]),
            image_id=str(doc.get("Image", "")),
            running=bool((doc.get("State") or {}).get("Running")),
        )

    async def recreate(self, container: str, reference: str) -> Recreated:
        doc = await self._queries.inspect_raw(ContainerRef(container))
        image = await self._session.json(f"images/{segment(str(doc['Image']))}/json")
        body, later = recreate_body(doc, image, reference)
        return await _Recreate(self._session, self._creation, doc).run(body, later, reference)

    async def recover(self, container: str) -> str | None:
        """Finish or undo the recreate of ``container`` that a dead gateway left half-done; answer
        what was done, None when the container shows no sign of one (it is not named aside).

        A new container under the old name that runs means only the removal of the old one was
        left: it is done. Anything less is undone: the new container goes, the old one gets its
        name back and is started again if it ran."""
        try:
            old = await self._queries.inspect_raw(ContainerRef(container))
        except NotFound:
            return None
        found = _ASIDE.fullmatch(str(old.get("Name", "")).lstrip("/"))
        if found is None or not str(old["Id"]).startswith(found["id"]):
            return None
        name = found["name"]
        try:
            new: Mapping[str, Any] | None = await self._queries.inspect_raw(ContainerRef(name))
        except NotFound:
            new = None
        if new is not None and (new.get("State") or {}).get("Running"):
            await self._creation.remove(str(old["Id"]))
            return f"the update of {name!r} was finished: the previous container was removed"
        if new is not None:
            await self._creation.remove(str(new["Id"]))
        await self._session.post(
            container_path(str(old["Id"]), "rename"), params={"name": name}, timeout=READ_TIMEOUT
        )
        if found["running"]:
            await self._session.post(
                container_path(str(old["Id"]), "start"), params={}, timeout=CREATE_TIMEOUT
            )
        return f"the update of {name!r} was undone: the previous container is back as it was"

    async def container_images(self) -> list[ContainerImage]:
        rows = await self._session.json("containers/json", params={"all": "1"})
        images = await self._session.json("images/json")
        by_id = {str(image.get("Id")): image for image in images}
        found = []
        for row in rows:
            reference = str(row.get("Image") or "")
            image_id = str(row.get("ImageID") or "")
            if _names_an_id(reference, image_id) or not is_image_reference(reference):
                # The list shows the image's id once its tag has moved on: the inspect keeps the reference.
                try:
                    doc = await self._queries.inspect_raw(ContainerRef(str(row["Id"])))
                except RuntimeFailure:
                    continue  # removed since the list
                reference = "" if pinned_reason(doc) else str(doc["Config"]["Image"])
            elif "@" in reference:
                reference = ""
            digest = ""
            if reference and image_id in by_id:
                digest = repo_digest(by_id[image_id], ImageName.parse(reference).repository)
            found.append(ContainerImage(str(row["Id"]), reference, digest))
        return found

    async def registry_digest(self, reference: str) -> str:
        doc = await self._session.json(f"distribution/{segment(reference)}/json", timeout=DIGEST_TIMEOUT)
        digest = str(((doc or {}).get("Descriptor") or {}).get("digest") or "")
        if not digest:
            raise OperationFailed(f"the registry named no digest for {reference}")
        return digest


class _Recreate:
    """One recreate: each step done is remembered, so a failure undoes exactly those."""

    def __init__(self, session: EngineSession, creation: Creation, doc: Mapping[str, Any]) -> None:
        self._session = session
        self._creation = creation
        self.old_id = str(doc["Id"])
        self.name = str(doc.get("Name", "")).lstrip("/")
        self.running = bool((doc.get("State") or {}).get("Running"))
        grace = (doc.get("Config") or {}).get("StopTimeout")
        self.grace = grace if isinstance(grace, int) and grace >= 0 else DEFAULT_STOP_TIMEOUT
        self.aside = aside_name(self.name, self.old_id, running=self.running)
        self.stopped = False
        self.renamed = False
        self.new_id = ""

    async def run(
        self, body: dict[str, Any], later: Mapping[str, dict[str, Any]], reference: str
    ) -> Recreated:
        step = "stopping the container"
        try:
            if self.running:
                await self._post(self.old_id, "stop", {"t": self.grace}, self.grace + 30)
                self.stopped = True
            step = "renaming the container aside"
            await self._post(self.old_id, "rename", {"name": self.aside}, READ_TIMEOUT)
            self.renamed = True
            step = "creating the new container"
            self.new_id = await self._creation.create_raw(self.name, body, image=reference)
            for network, endpoint in later.items():
                step = f"connecting the new container to the network {network!r}"
                await self._session.json(
                    f"networks/{segment(network)}/connect",
                    method="POST",
                    body={"Container": self.new_id, "EndpointConfig": endpoint},
                    timeout=READ_TIMEOUT,
                )
            if self.running:
                step = "starting the new container"
                await self._post(self.new_id, "start", {}, CREATE_TIMEOUT)
            step = "removing the previous container"
            await self._creation.remove(self.old_id)
        except BaseException as exc:
            # Whatever ended the recreate is undone, a shutdown's cancellation included: the shield
            # lets the rollback finish, so the old container is never left renamed and stopped.
            failures = await asyncio.shield(self._roll_back())
            if not isinstance(exc, RuntimeFailure):
                raise
            raise self._failure(step, exc, failures) from exc
        return Recreated(full_id=self.new_id, previous_id=self.old_id)

    async def _post(self, container: str, endpoint: str, params: Mapping[str, Any], timeout: float) -> None:
        await self._session.post(container_path(container, endpoint), params=params, timeout=timeout)

    async def _roll_back(self) -> list[str]:
        """Undo the steps done, newest first; answer what could not be undone."""
        failures = []
        if self.new_id:
            try:
                await self._creation.remove(self.new_id)
            except RuntimeFailure as exc:
                log.error("update of %s: removing the new container failed: %s", self.name, exc)
                failures.append(f"the new container {short_id(self.new_id)} could not be removed")
        if self.renamed:
            try:
                await self._post(self.old_id, "rename", {"name": self.name}, READ_TIMEOUT)
            except RuntimeFailure as exc:
                log.error("update of %s: renaming the old container back failed: %s", self.name, exc)
                failures.append(f"the previous container is still called {self.aside!r}")
        if self.stopped:
            try:
                await self._post(self.old_id, "start", {}, CREATE_TIMEOUT)
            except RuntimeFailure as exc:
                log.error("update of %s: starting the old container again failed: %s", self.name, exc)
                failures.append("the previous container could not be started again")
        return failures

    def _failure(self, step: str, exc: RuntimeFailure, failures: list[str]) -> OperationFailed:
        why = f" ({exc.detail})" if exc.detail else ""
        if failures:
            outcome = f"the rollback was incomplete: {'; '.join(failures)}"
        else:
            outcome = f"the update was rolled back and {self.name!r} is as it was before"
        return OperationFailed(
            f"update of {self.name} failed while {step}: {exc}", detail=f"{step} failed{why}; {outcome}"
        )
