"""Host names as HTTP carries them: the ``Host`` header, a browser's ``Origin``, configured names.

One parser for all three, so that ``LOCALHOST.``, ``localhost:8443`` and ``http://localhost:8443``
name the same host, and ``[::ffff:127.0.0.1]`` the same address as ``127.0.0.1``.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

from .client_address import normalise

ANY_HOST = "*"
DEFAULT_PORTS = {"http": 80, "https": 443}

# A name (letters, digits, "-", "_", dots; one trailing dot allowed) or a bracketed IPv6 address with
# an optional zone, then an optional port. Everything else (userinfo, paths, spaces) is malformed.
_HOST = re.compile(
    r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)(?:%25[A-Za-z0-9._~-]+)?\]|(?P<name>[A-Za-z0-9._-]+))"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
_ORIGIN = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>.*)")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str  # a lower-case name without a trailing dot, or an address in its canonical form
    port: int | None


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int  # the scheme's default port when the origin names none


def _name(text: str) -> str | None:
    """``text`` as a canonical address (an IPv6 zone dropped), or a lower-case DNS name; None when
    it is neither."""
    try:
        return str(normalise(ipaddress.ip_address(text.split("%", 1)[0])))
    except ValueError:
        pass
    name = text.lower()
    name = name.removesuffix(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        return None
    return name


# Parsing an address with ipaddress costs tens of microseconds, and clients repeat the same few
# Host and Origin values: the results are kept (bounded, so a spray of names only evicts).
@functools.lru_cache(maxsize=1024)
def parse_host(value: str) -> HostPort | None:
    """A ``Host`` header value (``name``, ``name:port``, ``[v6]:port``); None when malformed."""
    match = _HOST.fullmatch(value)
    if match is None:
        return None
    port = int(match["port"]) if match["port"] is not None else None
    if port is not None and not 0 < port <= 65535:
        return None
    if match["ipv6"] is not None:
        try:
            host = str(normalise(ipaddress.IPv6Address(match["ipv6"])))
        except ValueError:
            return None
    else:
        # An IPv6 address needs brackets here: "::1" alone is not a Host.
        found = _name(match["name"])
        if found is None:
            return None
        host = found
    return HostPort(host, port)


@functools.lru_cache(maxsize=1024)
def parse_origin(value: str) -> Origin | None:
    """An ``Origin`` header (``https://app.example.com:8443``); None for ``null``, other schemes
    (``file:``, extensions) and anything malformed."""
    match = _ORIGIN.fullmatch(value.strip())
    if match is None:
        return None
    scheme = match["scheme"].lower()
    default = DEFAULT_PORTS.get(scheme)
    authority = parse_host(match["authority"])
    if default is None or authority is None:
        return None
    return Origin(scheme, authority.host, authority.port if authority.port is not None else default)


def allowed_host_entry(entry: str) -> str | None:
    """A ``server.allowed_hosts`` entry in canonical form: ``*``, ``*.example.com`` (any one label in
    front), a name, or an address (IPv6 with or without brackets). None when it is none of those,
    a port included: ports are never compared."""
    text = entry.strip()
    if text == ANY_HOST:
        return ANY_HOST
    if text.startswith("*."):
        rest = _name(text[2:])
        return f"*.{rest}" if rest is not None and not is_address(rest) else None
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return _name(text)


def is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
