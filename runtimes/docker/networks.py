"""Docker networks: list (with the containers on each), create, remove, connect, disconnect, prune."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..engine.networks import (
    PREDEFINED,
    AlreadyConnected,
    Endpoint,
    Network,
    NetworkSpec,
    NotConnected,
    Subnet,
)
from ..engine.volumes import SpecRejected
from ..errors import Conflict, Forbidden, InUse, NotFound, OperationFailed
from ..urlpath import segment
from .paths import container_path, short_id
from .session import EngineSession
from .states import parse_timestamp
from .volumes import container_name, engine_status


def endpoints_by_network(containers: Iterable[Mapping[str, Any]]) -> dict[str, list[Endpoint]]:
    """Network id → the containers (from ``containers/json``, running or not) attached to it.

    A container that never ran has no network id yet: it is listed under the network's name.
    """
    attached: dict[str, list[Endpoint]] = {}
    for container in containers:
        networks = (container.get("NetworkSettings") or {}).get("Networks") or {}
        for name, settings in networks.items():
            settings = settings or {}
            endpoint = Endpoint(
                short_id(str(container["Id"])), container_name(container), settings.get("IPAddress") or None
            )
            attached.setdefault(settings.get("NetworkID") or name, []).append(endpoint)
    return attached


def _joined(container: Mapping[str, Any], network: Mapping[str, Any]) -> bool:
    """Whether an inspected container is on an inspected network (by its id, else by its name)."""
    joined = (container.get("NetworkSettings") or {}).get("Networks") or {}
    return any(
        (settings or {}).get("NetworkID") == network["Id"]
        or (not (settings or {}).get("NetworkID") and name == network["Name"])
        for name, settings in joined.items()
    )


def _check_address(address: str, network: Mapping[str, Any]) -> None:
    """Refuses an IPv4 address an inspected network cannot give: one outside its subnets (the
    Engine answers that with a 500, as if it had failed), or one a container or the gateway holds
    (the Engine refuses that too, but records the failed endpoint on the container)."""
    ip = ipaddress.IPv4Address(address)
    configs = (network.get("IPAM") or {}).get("Config") or ()
    subnets = [ipaddress.ip_network(str(c.get("Subnet")), strict=False) for c in configs if c.get("Subnet")]
    if not any(subnet.version == 4 and ip in subnet for subnet in subnets):
        raise SpecRejected(
            f"{address} is outside {network['Name']}",
            detail=f"{address} is in none of the subnets of network {network['Name']!r}",
            field="ipv4",
        )
    held = {str(c.get("Gateway")) for c in configs} | {
        str(e.get("IPv4Address", "")).partition("/")[0] for e in (network.get("Containers") or {}).values()
    }
    if address in held:
        raise SpecRejected(
            f"{address} is taken on {network['Name']}",
            detail=f"{address} is already in use on network {network['Name']!r}",
            field="ipv4",
        )


def _network(doc: Mapping[str, Any], attached: Mapping[str, list[Endpoint]]) -> Network:
    config = (doc.get("IPAM") or {}).get("Config") or ()
    return Network(
        id=short_id(str(doc["Id"])),
        name=str(doc.get("Name", "")),
        driver=str(doc.get("Driver", "")),
        scope=str(doc.get("Scope", "local")),
        internal=bool(doc.get("Internal")),
        attachable=bool(doc.get("Attachable")),
        created=parse_timestamp(str(doc.get("Created") or "")),
        labels=dict(doc.get("Labels") or {}),
        subnets=tuple(Subnet(c["Subnet"], c.get("Gateway") or None) for c in config if c.get("Subnet")),
        containers=(*attached.get(str(doc["Id"]), ()), *attached.get(str(doc.get("Name", "")), ())),
    )


def _ipam_config(subnet: Subnet) -> dict[str, str]:
    config = {"Subnet": subnet.subnet}
    if subnet.gateway:
        config["Gateway"] = subnet.gateway
    return config


class Networks:
    """The networks of one Engine."""

    def __init__(self, session: EngineSession) -> None:
        self._session = session

    async def _attached(self) -> dict[str, list[Endpoint]]:
        return endpoints_by_network(await self._session.json("containers/json", params={"all": "1"}))

    async def _inspect(self, ref: str) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = await self._session.json(f"networks/{segment(ref)}")
        except NotFound as exc:
            raise NotFound(str(exc), resource="network", name=ref) from exc
        return doc

    async def _container(self, container: str) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = await self._session.json(container_path(container, "json"))
        except NotFound as exc:
            raise NotFound(str(exc), name=container) from exc
        return doc

    async def list_networks(self) -> list[Network]:
        docs, attached = await asyncio.gather(self._session.json("networks"), self._attached())
        return [_network(doc, attached) for doc in docs]

    async def get(self, ref: str) -> Network:
        doc = await self._inspect(ref)
        return _network(doc, await self._attached())

    async def create(self, spec: NetworkSpec) -> Network:
        # The Engine lets two networks share a name (CheckDuplicate is only best effort, and ignored
        # from API 1.44 on): asked first, a taken name is refused whatever the Engine would do.
        taken = await self._session.json("networks", params={"filters": json.dumps({"name": [spec.name]})})
        if any(doc.get("Name") == spec.name for doc in taken):
            raise InUse(
                f"network {spec.name} exists",
                detail=f"A network named {spec.name!r} already exists",
                resource="network_name",
            )
        body: dict[str, Any] = {
            "Name": spec.name,
            "CheckDuplicate": True,
            "Driver": spec.driver,
            "Internal": spec.internal,
            "Attachable": spec.attachable,
            "Labels": dict(spec.labels),
        }
        if spec.subnets:
            body["IPAM"] = {
                "Driver": "default",
                "Config": [_ipam_config(s) for s in spec.subnets],
            }
        try:
            answer = await self._session.json("networks/create", method="POST", body=body)
        except NotFound as exc:
            raise SpecRejected(
                str(exc), detail=f"The Engine has no network driver {spec.driver!r}", field="driver"
            ) from exc
        except Conflict as exc:
            raise InUse(
                str(exc), detail=f"A network named {spec.name!r} already exists", resource="network_name"
            ) from exc
        except OperationFailed as exc:
            if engine_status(exc) not in (400, 403):
                raise
            what = "subnets" if spec.subnets else "driver"
            raise SpecRejected(
                str(exc),
                detail=f"The Engine refused the network's {what} (an overlapping subnet, or a "
                "driver that allows only one network)",
                field=what,
            ) from exc
        return await self.get(str(answer["Id"]))

    async def remove(self, ref: str) -> None:
        doc = await self._inspect(ref)
        network = _network(doc, await self._attached())
        if network.name in PREDEFINED:
            raise Forbidden(
                f"network {network.name} is predefined",
                detail=f"The predefined network {network.name!r} cannot be removed",
            )
        if network.containers:
            names = ", ".join(c.name for c in network.containers)
            raise InUse(
                f"network {network.name} has containers",
                detail=f"Network {network.name!r} has containers {names}; disconnect them first",
                resource="network",
            )
        try:
            await self._session.json(f"networks/{segment(str(doc['Id']))}", method="DELETE")
        except NotFound as exc:
            raise NotFound(str(exc), resource="network", name=ref) from exc
        except OperationFailed as exc:
            # A container joined between the check and the removal: the Engine's 403.
            if engine_status(exc) != 403:
                raise
            raise InUse(
                str(exc),
                detail=f"Network {network.name!r} has containers; disconnect them first",
                resource="network",
            ) from exc

    async def _endpoint_of(self, ref: str, container: str) -> tuple[dict[str, Any], dict[str, Any], bool]:
        """The network, the container, and whether the container is on the network."""
        network = await self._inspect(ref)
        doc = await self._container(container)
        return network, doc, _joined(doc, network)

    async def connect(self, ref: str, container: str, *, aliases: Sequence[str], ipv4: str | None) -> None:
        network, doc, connected = await self._endpoint_of(ref, container)
        if connected:
            raise AlreadyConnected(
                f"{container} is on {network['Name']}",
                detail=f"Container {container!r} is already connected to network {network['Name']!r}",
            )
        if ipv4 is not None:
            _check_address(ipv4, network)
        endpoint: dict[str, Any] = {"Aliases": list(aliases)}
        if ipv4 is not None:
            endpoint["IPAMConfig"] = {"IPv4Address": ipv4}
        body = {"Container": doc["Id"], "EndpointConfig": endpoint}
        try:
            await self._session.json(f"networks/{segment(network['Id'])}/connect", method="POST", body=body)
        except NotFound as exc:
            raise NotFound(str(exc), name=container) from exc
        except OperationFailed as exc:
            if engine_status(exc) not in (400, 403):
                raise
            raise SpecRejected(
                str(exc),
                detail=f"The Engine refused to connect container {container!r} to network "
                f"{network['Name']!r}: its network mode allows no other network, or the "
                "address asked for is not free in the network's subnets",
                field="ipv4" if ipv4 is not None else "container",
            ) from exc

    async def disconnect(self, ref: str, container: str, *, force: bool) -> None:
        network, doc, connected = await self._endpoint_of(ref, container)
        if not connected:
            raise NotConnected(
                f"{container} is not on {network['Name']}",
                detail=f"Container {container!r} is not connected to network {network['Name']!r}",
            )
        body = {"Container": doc["Id"], "Force": force}
        try:
            await self._session.json(
                f"networks/{segment(network['Id'])}/disconnect", method="POST", body=body
            )
        except NotFound as exc:
            raise NotFound(str(exc), name=container) from exc

    async def prune(self) -> list[str]:
        """Removes the local networks no container is on, running or not: the Engine's own prune
        also takes a network whose containers are stopped, which :meth:`remove` refuses, and
        they follow one rule. A network a container joined meanwhile stays."""
        deleted = []
        for network in await self.list_networks():
            if network.name in PREDEFINED or network.containers or network.scope != "local":
                continue
            try:
                await self._session.json(f"networks/{segment(network.id)}", method="DELETE")
            except NotFound:
                continue
            except OperationFailed as exc:
                if engine_status(exc) != 403:
                    raise
                continue
            deleted.append(network.name)
        return deleted
