"""Creating a container on a Docker Engine from a validated :class:`ContainerSpec`.

The spec becomes the body of ``POST /containers/create?name=`` (see :func:`create_body`); the
Engine's refusals become runtime errors that say what was wrong in our own words: a name another
container holds, an image or a network that does not exist, a configuration the Engine rejects.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..engine.creation import ContainerSpec
from ..errors import Conflict, InUse, NotFound, OperationFailed
from ..urlpath import segment
from .paths import container_path, short_id
from .session import READ_TIMEOUT, EngineSession

CREATE_TIMEOUT = 60.0
# Network modes every Engine has, which are no network object to look up.
_ENGINE_NETWORKS = ("none", "host", "bridge", "default")


def create_body(spec: ContainerSpec) -> dict[str, Any]:
    """The Engine's create body for ``spec``: ports as ExposedPorts and PortBindings (no host
    port: one the Engine picks, as ``docker run -p 80`` does), volumes as Binds."""
    exposed: dict[str, dict[str, Any]] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for port in spec.ports:
        key = f"{port.container_port}/{port.protocol}"
        exposed[key] = {}
        host_port = "" if port.host_port is None else str(port.host_port)
        bindings.setdefault(key, []).append({"HostIp": port.host_ip, "HostPort": host_port})
    host_config: dict[str, Any] = {
        "PortBindings": bindings,
        "Binds": [
            f"{mount.source}:{mount.target}:{'ro' if mount.read_only else 'rw'}" for mount in spec.volumes
        ],
    }
    if spec.restart is not None:
        host_config["RestartPolicy"] = {
            "Name": spec.restart.name,
            "MaximumRetryCount": spec.restart.max_retries,
        }
    if spec.network is not None:
        host_config["NetworkMode"] = spec.network
    body: dict[str, Any] = {
        "Image": spec.image,
        "Env": [f"{key}={value}" for key, value in spec.env],
        "Labels": dict(spec.labels),
        "ExposedPorts": exposed,
        "HostConfig": host_config,
    }
    if spec.command is not None:
        body["Cmd"] = list(spec.command)
    return body


class Creation:
    """Containers made on one Engine."""

    def __init__(self, session: EngineSession) -> None:
        self._session = session

    async def name_taken(self, name: str) -> bool:
        # The Engine's name filter is a regular expression over "/name": anchored and escaped,
        # it matches that one name only (an id prefix that looks like the name does not count).
        filters = json.dumps({"name": [f"^/{re.escape(name)}$"]})
        rows = await self._session.json("containers/json", params={"all": "1", "filters": filters})
        return any(f"/{name}" in (row.get("Names") or ()) for row in rows)

    async def has_image(self, reference: str) -> bool:
        try:
            await self._session.json(f"images/{segment(reference)}/json")
        except NotFound:
            return False
        return True

    async def create(self, spec: ContainerSpec, *, start: bool) -> str:
        """Create ``spec`` (and start it); answer its full id. A container whose start fails is
        kept, as ``docker run`` keeps it, and the error's detail says so."""
        if spec.network is not None and spec.network not in _ENGINE_NETWORKS:
            # An Engine before API 1.44 creates a container on a network that does not exist, and
            # only its start fails: ask first, so nothing is left behind.
            try:
                await self._session.json(f"networks/{segment(spec.network)}")
            except NotFound as exc:
                raise NotFound(str(exc), resource="network", name=spec.network) from exc
        full_id = await self.create_raw(spec.name, create_body(spec), image=spec.image)
        if start:
            try:
                await self._session.post(container_path(full_id, "start"), params={}, timeout=CREATE_TIMEOUT)
            except (Conflict, NotFound, OperationFailed) as exc:
                raise OperationFailed(
                    f"start of the new container {spec.name} failed: {exc}",
                    detail=(
                        f"the container {spec.name!r} ({short_id(full_id)}) was created but did not start; "
                        "it is kept, stopped, for its logs and a later start or removal"
                    ),
                ) from exc
        return full_id

    async def create_raw(self, name: str, body: dict[str, Any], *, image: str) -> str:
        """``POST /containers/create?name=`` with ``body``; answer the new container's full id."""
        try:
            created = await self._session.json(
                "containers/create",
                method="POST",
                params={"name": name},
                body=body,
                timeout=CREATE_TIMEOUT,
            )
        except Conflict as exc:
            raise InUse(
                f"create of {name}: {exc}",
                detail=f"A container named {name!r} already exists",
                resource="container_name",
            ) from exc
        except NotFound as exc:
            raise NotFound(str(exc), resource="image", name=image) from exc
        except OperationFailed as exc:
            raise OperationFailed(
                f"create of {name}: {exc}",
                detail=f"the Engine refused the configuration of the container {name!r}",
            ) from exc
        return str(created["Id"])

    async def remove(self, full_id: str) -> None:
        """Remove a container the gateway made, running or not (its volumes stay)."""
        await self._session.json(
            f"containers/{segment(full_id)}", method="DELETE", params={"force": "1"}, timeout=READ_TIMEOUT
        )
