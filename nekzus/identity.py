"""Who is asking: the client's address, from the socket peer and only trusted proxies' headers.

Forwarded / X-Forwarded-For are believed only when the peer is a configured trusted proxy, and
then the chain is walked from the right, skipping trusted hops: the first untrusted address is the
client. Anything a client writes into those headers itself is ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence

from aiohttp import web

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_ip(value: str | None) -> IPAddress | None:
    """An address from a peer or a header element (brackets, port and zone tolerated)."""
    if not value:
        return None
    text = value.strip().strip('"')
    if text.startswith("["):  # "[2001:db8::1]:4711"
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:  # "192.0.2.1:4711"
        text = text.split(":", 1)[0]
    text = text.split("%", 1)[0]
    try:
        return normalise(ipaddress.ip_address(text))
    except ValueError:
        return None


def normalise(ip: IPAddress) -> IPAddress:
    """``::ffff:a.b.c.d`` is the IPv4 address a.b.c.d (3.11's ipaddress does not see it as such)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def in_networks(ip: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(ip.version == net.version and ip in net for net in networks)


def forwarded_chain(forwarded: Sequence[Mapping[str, str]], x_forwarded_for: str | None) -> list[str]:
    """The client chain, leftmost first: RFC 7239 ``for=`` elements, else X-Forwarded-For."""
    chain = [elem["for"] for elem in forwarded if elem.get("for")]
    if chain:
        return chain
    if x_forwarded_for:
        return [part.strip() for part in x_forwarded_for.split(",") if part.strip()]
    return []


def client_address(
    peer: str | None,
    forwarded: Sequence[Mapping[str, str]],
    x_forwarded_for: str | None,
    trusted: Sequence[IPNetwork],
) -> IPAddress | None:
    address = parse_ip(peer)
    if address is None or not trusted or not in_networks(address, trusted):
        return address
    for hop in reversed(forwarded_chain(forwarded, x_forwarded_for)):
        ip = parse_ip(hop)
        if ip is None:
            # An unparseable hop ("unknown", garbage): stop at the last address we could trust.
            return address
        address = ip
        if not in_networks(ip, trusted):
            return ip
    return address


def request_address(request: web.Request, trusted: Sequence[IPNetwork]) -> IPAddress | None:
    return client_address(request.remote, request.forwarded, request.headers.get("X-Forwarded-For"), trusted)


def rate_key(ip: IPAddress | None) -> str:
    """The limiter key of an address: IPv6 clients collapse to their /64, as one host owns it."""
    if ip is None:
        return "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)
