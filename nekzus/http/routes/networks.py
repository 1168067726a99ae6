"""Networks of the Engine: the list (``read:engine``), create, remove, connect, disconnect and prune
(``write:engine``).

Each of these is one quick Engine call, so the routes answer synchronously rather than as operations.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable
from typing import Any

from aiohttp import web

from runtimes import RuntimeFailure
from runtimes.engine.networks import (
    MAX_ALIASES,
    MAX_SUBNETS,
    PREDEFINED,
    AlreadyConnected,
    Network,
    NetworkSpec,
    NetworkStore,
    NotConnected,
    Subnet,
)
from runtimes.engine.volumes import is_engine_name

from ...errors import ApiError, invalid_request, validation_error
from ...params import is_valid_container_id, json_fields
from ...security.auth import READ_ENGINE, WRITE_ENGINE, requires
from ...security.ratelimit import rate_pool
from ..idempotent import idempotent
from ..pages import page_of
from .common import capable_runtime, runtime_call
from .volumes import driver_name, engine_name, name_filter, spec_error, string_map

_CREATE_FIELDS = ("name", "driver", "internal", "attachable", "labels", "subnets")
_CONNECT_FIELDS = ("container", "aliases", "ipv4")
_DISCONNECT_FIELDS = ("container", "force")
_MAX_DRIVER_FILTER = 255


def network_json(n: Network) -> dict[str, Any]:
    return {
        "id": n.id,
        "name": n.name,
        "driver": n.driver,
        "scope": n.scope,
        "internal": n.internal,
        "attachable": n.attachable,
        "created": n.created,
        "labels": dict(n.labels),
        "subnets": [{"subnet": s.subnet, "gateway": s.gateway} for s in n.subnets],
        "containers": [{"id": c.id, "name": c.name, "ipv4": c.ipv4} for c in n.containers],
    }


def _flag(body: dict[str, Any], field: str) -> bool:
    value = body.get(field, False)
    if not isinstance(value, bool):
        raise validation_error(field, f"{field} must be true or false")
    return value


def str_value(value: Any) -> str:
    """``value`` if it is a string, else TypeError (for the parsers that would read other types)."""
    if not isinstance(value, str):
        raise TypeError(f"{type(value).__name__} is not a string")
    return value


def subnets_field(value: Any) -> tuple[Subnet, ...]:
    """``[{subnet, gateway?}]``: CIDRs with no host bits set, each gateway an address inside its subnet."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_SUBNETS:
        raise validation_error("subnets", f"subnets must be a list of at most {MAX_SUBNETS} entries")
    subnets: list[Subnet] = []
    parsed: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for entry in value:
        if not isinstance(entry, dict) or not set(entry) <= {"subnet", "gateway"} or "subnet" not in entry:
            raise validation_error("subnets", "each subnet must be an object {subnet, gateway?}")
        try:
            # A string only: ipaddress also reads an integer as an address.
            network = ipaddress.ip_network(str_value(entry["subnet"]), strict=True)
        except (TypeError, ValueError) as exc:
            raise validation_error("subnets", "each subnet must be a CIDR such as 10.20.0.0/24") from exc
        gateway = entry.get("gateway")
        if gateway is not None:
            try:
                address = ipaddress.ip_address(str_value(gateway))
            except (TypeError, ValueError) as exc:
                raise validation_error("subnets", "a gateway must be an IP address") from exc
            if address not in network:
                raise validation_error("subnets", f"gateway {address} is not in subnet {network}")
            gateway = str(address)
        if any(network.version == other.version and network.overlaps(other) for other in parsed):
            raise validation_error("subnets", f"subnet {network} overlaps another subnet of the list")
        parsed.append(network)
        subnets.append(Subnet(str(network), gateway))
    return tuple(subnets)


def _network_ref(request: web.Request) -> str:
    ref = request.match_info["id"]
    if not is_engine_name(ref):
        raise invalid_request("The path must name a network by id or name: letters, digits, '_', '.' and '-'")
    return ref


def _container(body: dict[str, Any]) -> str:
    value = body.get("container")
    if not is_valid_container_id(value):
        raise validation_error("container", "container must be a container id or name")
    return value


def _connection_error(exc: RuntimeFailure, fallback: str, message: str) -> ApiError:
    if isinstance(exc, AlreadyConnected):
        return ApiError(409, "CONTAINER_ALREADY_CONNECTED", exc.detail)
    if isinstance(exc, NotConnected):
        return ApiError(409, "CONTAINER_NOT_CONNECTED", exc.detail)
    return spec_error(exc, fallback, message)


async def _changed(
    store: NetworkStore, ref: str, change: Awaitable[None], fallback: str, message: str
) -> web.Response:
    """Makes ``change`` to the containers of network ``ref`` and answers with the network after it,
    so a client sees every container's address without a second request."""
    try:
        await change
        network = await store.get_network(ref)
    except RuntimeFailure as exc:
        raise _connection_error(exc, fallback, message) from exc
    return web.json_response(network_json(network))


def _store(request: web.Request) -> NetworkStore:
    """The runtime with networks, else 409 OPERATION_NOT_SUPPORTED."""
    # mypy takes a Protocol for an abstract class here (python/mypy#4717); isinstance works.
    return capable_runtime(request, NetworkStore, "networks")  # type: ignore[type-abstract]


@requires(READ_ENGINE)
@rate_pool("containers")
async def list_networks(request: web.Request) -> web.Response:
    store = _store(request)
    name = name_filter(request)
    driver = request.query.get("driver", "")
    if len(driver) > _MAX_DRIVER_FILTER:
        raise invalid_request(f"Query parameter 'driver' must be at most {_MAX_DRIVER_FILTER} characters")
    networks = await runtime_call(store.list_networks(), "NETWORK_LIST_FAILED", "Failed to list networks")
    chosen = sorted(
        (n for n in networks if name in n.name and (not driver or n.driver == driver)), key=lambda n: n.name
    )
    page, headers = page_of(request, chosen)
    return web.json_response([network_json(n) for n in page], headers=headers)


@requires(WRITE_ENGINE)
@rate_pool("containers")
@idempotent
async def create_network(request: web.Request) -> web.Response:
    store = _store(request)
    body = await json_fields(request, _CREATE_FIELDS, required=True)
    name = engine_name(body.get("name"), "name", "network")
    if name in PREDEFINED:
        raise validation_error("name", f"{name!r} is the name of a predefined network")
    spec = NetworkSpec(
        name=name,
        driver=driver_name(body.get("driver"), "bridge"),
        internal=_flag(body, "internal"),
        attachable=_flag(body, "attachable"),
        labels=string_map(body.get("labels"), "labels"),
        subnets=subnets_field(body.get("subnets")),
    )
    try:
        network = await store.create_network(spec)
    except RuntimeFailure as exc:
        raise spec_error(exc, "NETWORK_CREATE_FAILED", "Failed to create the network") from exc
    return web.json_response(network_json(network), status=201)


@requires(WRITE_ENGINE)
@rate_pool("containers")
async def remove_network(request: web.Request) -> web.Response:
    store = _store(request)
    ref = _network_ref(request)
    await runtime_call(store.remove_network(ref), "NETWORK_REMOVE_FAILED", "Failed to remove the network")
    return web.Response(status=204)


@requires(WRITE_ENGINE)
@rate_pool("containers")
async def connect_container(request: web.Request) -> web.Response:
    store = _store(request)
    ref = _network_ref(request)
    body = await json_fields(request, _CONNECT_FIELDS, required=True)
    container = _container(body)
    aliases = body.get("aliases", [])
    if (
        not isinstance(aliases, list)
        or len(aliases) > MAX_ALIASES
        or not all(is_valid_container_id(a) for a in aliases)
    ):
        raise validation_error("aliases", f"aliases must be a list of at most {MAX_ALIASES} host names")
    ipv4 = body.get("ipv4")
    if ipv4 is not None:
        try:
            ipv4 = str(ipaddress.IPv4Address(str_value(ipv4)))
        except (TypeError, ValueError) as exc:
            raise validation_error("ipv4", "ipv4 must be an IPv4 address") from exc
    return await _changed(
        store,
        ref,
        store.connect_network(ref, container, aliases=aliases, ipv4=ipv4),
        "NETWORK_CONNECT_FAILED",
        "Failed to connect the container",
    )


@requires(WRITE_ENGINE)
@rate_pool("containers")
async def disconnect_container(request: web.Request) -> web.Response:
    store = _store(request)
    ref = _network_ref(request)
    body = await json_fields(request, _DISCONNECT_FIELDS, required=True)
    container = _container(body)
    force = _flag(body, "force")
    return await _changed(
        store,
        ref,
        store.disconnect_network(ref, container, force=force),
        "NETWORK_DISCONNECT_FAILED",
        "Failed to disconnect the container",
    )


@requires(WRITE_ENGINE)
@rate_pool("containers")
async def prune_networks(request: web.Request) -> web.Response:
    store = _store(request)
    await json_fields(request, (), required=False)
    deleted = await runtime_call(store.prune_networks(), "NETWORK_PRUNE_FAILED", "Failed to prune networks")
    return web.json_response({"deleted": deleted})
