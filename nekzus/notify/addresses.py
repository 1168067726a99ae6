"""Where a webhook may deliver: never into the gateway's own networks (server-side request forgery).

A target is checked twice. When it is saved, a literal address or ``localhost`` in a refused range
is refused outright. At every delivery, each address a host name resolves to is checked as the
connection is made, through the resolver the HTTP client connects with, so a name that resolves
to a public address when saved and to 127.0.0.1 later (DNS rebinding) still reaches nothing
inside. Literal addresses never pass through a resolver and cannot change, so they are checked
before the request.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from aiohttp import ThreadedResolver
from aiohttp.abc import AbstractResolver, ResolveResult

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Beyond what the ipaddress module calls loopback, private, link-local, multicast, reserved or
# unspecified: carrier-grade NAT, and the metadata services of cloud hosts (AWS's IPv6 one is in
# fc00::/7 already; named so the rule says what it guards).
_ALSO_REFUSED: tuple[Network, ...] = tuple(
    ipaddress.ip_network(net)
    for net in ("100.64.0.0/10", "169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "fc00::/7")
)
_LOOPBACK_NAMES = ("localhost", "localhost.")


class RefusedAddress(OSError):
    """A target address in a refused range; the message says which and how to allow it."""


def refusal(address: IPAddress, allow: Sequence[Network]) -> str | None:
    """Why ``address`` may not be delivered to, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # ::ffff:10.0.0.5 reaches 10.0.0.5: judged as the IPv4 address it is.
        address = address.ipv4_mapped
    if any(address.version == net.version and address in net for net in allow):
        return None
    if (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or any(address.version == net.version and address in net for net in _ALSO_REFUSED)
    ):
        return f"address {address} is in a refused range; allow it with webhook_delivery.allow_networks"
    return None


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def target_refusal(url: str, allow: Sequence[Network]) -> str | None:
    """Why a webhook's URL is refused when it is saved: a literal address in a refused range, or
    ``localhost`` (unless its addresses are allowed). Other names are checked at each delivery."""
    host = (urlsplit(url).hostname or "").lower()
    address = literal_address(host)
    if address is not None:
        return refusal(address, allow)
    if host in _LOOPBACK_NAMES or host.endswith((".localhost", ".localhost.")):
        loopbacks = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
        if all(refusal(a, allow) for a in loopbacks):
            return (
                f"{host} names this machine (loopback), a refused range; allow it with "
                "webhook_delivery.allow_networks"
            )
    return None


class GuardedResolver(AbstractResolver):
    """Resolves with the system's resolver, then keeps only the addresses deliveries may reach;
    none left is a RefusedAddress, which the HTTP client reports as a failed connection."""

    def __init__(self, allow: Sequence[Network]) -> None:
        self._allow = tuple(allow)
        self._resolver = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        kept: list[ResolveResult] = []
        first_refusal = ""
        for result in results:
            address = literal_address(result["host"])
            problem = "not an address" if address is None else refusal(address, self._allow)
            if problem is None:
                kept.append(result)
            elif not first_refusal:
                first_refusal = problem
        if not kept:
            raise RefusedAddress(f"{host}: {first_refusal or 'it resolves to no address'}")
        return kept

    async def close(self) -> None:
        await self._resolver.close()
