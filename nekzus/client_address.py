"""Who is asking: the client's address, from the socket peer and only trusted proxies' headers.

The one configured header (X-Forwarded-For or Forwarded) is believed only when the peer is a
configured trusted proxy, and then the chain is walked from the right, skipping trusted hops: the
first untrusted address is the client. Anything a client writes into those headers itself is ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from aiohttp import hdrs, web

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


def forwarded_for(field_values: Iterable[str]) -> list[str]:
    """The ``for=`` of every RFC 7239 element, leftmost first; "" for an element without one,
    which stops the walk like any hop that is not an address.

    Split on every comma, never reading quotes across one: a client's unbalanced quote must not
    swallow the element its proxy appended (proxies write addresses, which hold no comma).
    """
    chain = []
    for element in ",".join(field_values).split(","):
        if not element.strip():
            continue  # an empty list element, which HTTP says to ignore
        found = ""
        for pair in element.split(";"):
            name, _, value = pair.partition("=")
            if name.strip().lower() == "for":
                found = value.strip()
        chain.append(found)
    return chain


def x_forwarded_for(field_values: Iterable[str]) -> list[str]:
    """The addresses of every X-Forwarded-For line, joined in order, leftmost first."""
    return [part.strip() for part in ",".join(field_values).split(",") if part.strip()]


def client_address(peer: str | None, chain: Sequence[str], trusted: Sequence[IPNetwork]) -> IPAddress | None:
    """The client: the peer, unless it is a trusted proxy; then the first untrusted hop from the right."""
    address = parse_ip(peer)
    if address is None or not trusted or not in_networks(address, trusted):
        return address
    for hop in reversed(chain):
        ip = parse_ip(hop)
        if ip is None:
            # An unparseable hop ("unknown", garbage, an empty element): stop at the last address
            # we could trust.
            return address
        address = ip
        if not in_networks(ip, trusted):
            return ip
    return address


def request_address(request: web.Request, trusted: Sequence[IPNetwork], header: str) -> IPAddress | None:
    """The client of ``request``, reading only ``header`` (``x-forwarded-for`` or ``forwarded``).

    Security: one header only, every line of it. Reading the other too would let a client write
    a LAN address into the header its proxy does not touch.
    """
    if header == "forwarded":
        chain = forwarded_for(request.headers.getall(hdrs.FORWARDED, []))
    else:
        chain = x_forwarded_for(request.headers.getall(hdrs.X_FORWARDED_FOR, []))
    return client_address(request.remote, chain, trusted)


def rate_key(ip: IPAddress | None) -> str:
    """The limiter key of an address: IPv6 clients collapse to their /64, as one host owns it."""
    if ip is None:
        return "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)
