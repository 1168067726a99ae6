"""Checks that run before anyone is identified: which name a request was sent to, and from where.

LAN trust rests on the client's address, and a browser lends its address to any page it shows. So
a page on another site must not act through it (``Origin`` / ``Sec-Fetch-Site``, JSON-only bodies,
which a page cannot send cross-site without a CORS preflight), and a name the attacker controls,
rebound to a LAN address, must not reach the gateway at all (``Host``). See README "Browsers".
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
import time
from collections.abc import Iterable

import psutil
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from ..config import Config
from ..errors import ApiError
from ..hosts import (
    ANY_HOST,
    DEFAULT_PORTS,
    Origin,
    allowed_host_entry,
    is_address,
    parse_host,
    parse_origin,
)
from ..keys import LISTED_ORIGINS
from .tls import certificate_names

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOCALHOST_NAMES = ("localhost", "127.0.0.1", "::1")
JSON = "application/json"
# How often, at most, the interface addresses are read again when a Host is an unknown address
# (a laptop that changed networks gets a new one while the gateway runs).
INTERFACE_REFRESH_SECONDS = 30.0


def interface_addresses() -> frozenset[str]:
    """Every IPv4 and IPv6 address of this machine's interfaces, in canonical form."""
    found = set()
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                name = allowed_host_entry(address.address)
                if name is not None:
                    found.add(name)
    return frozenset(found)


@functools.cache
def machine_names() -> tuple[str, ...]:
    """The machine's host names: short, fully qualified, and ``<short>.local`` (mDNS)."""
    names = {socket.gethostname(), socket.getfqdn()}
    names |= {f"{name}.local" for name in list(names) if name and "." not in name}
    return tuple(sorted(names))


class AllowedHosts:
    """The names and addresses a request's ``Host`` may carry (ports are not compared).

    A ``*.example.com`` entry covers exactly one label in front, as in a certificate.
    """

    def __init__(
        self,
        entries: Iterable[str],
        *,
        all_interfaces: bool = False,
        refresh_seconds: float = INTERFACE_REFRESH_SECONDS,
    ) -> None:
        names = {name for name in map(allowed_host_entry, entries) if name is not None}
        self.any_host = ANY_HOST in names
        self._exact = frozenset(name for name in names if not name.startswith("*"))
        self._suffixes = tuple(name[1:] for name in names if name.startswith("*."))
        self._all_interfaces = all_interfaces
        self._refresh_seconds = refresh_seconds
        self._interfaces = interface_addresses() if all_interfaces else frozenset()
        self._read_at = time.monotonic()

    def allows(self, host: str) -> bool:
        if self.any_host or host in self._exact or host in self._interfaces:
            return True
        if is_address(host):
            return self._all_interfaces and self._is_new_interface_address(host)
        for suffix in self._suffixes:
            label = host.removesuffix(suffix)
            if label != host and label and "." not in label:
                return True
        return False

    def _is_new_interface_address(self, host: str) -> bool:
        if time.monotonic() - self._read_at < self._refresh_seconds:
            return False
        self._interfaces = interface_addresses()
        self._read_at = time.monotonic()
        return host in self._interfaces


def allowed_hosts(config: Config) -> AllowedHosts:
    """``server.allowed_hosts`` plus what the gateway knows are its own names: localhost, the bind
    address (every interface address when bound to all), the machine's names, the certificate's."""
    server = config.server
    bind = server.host.strip("[]")
    all_interfaces = bind == "" or (is_address(bind) and ipaddress.ip_address(bind).is_unspecified)
    entries = [*LOCALHOST_NAMES, *machine_names(), *certificate_names(config), *server.allowed_hosts]
    if not all_interfaces:
        entries.append(bind)
    return AllowedHosts(entries, all_interfaces=all_interfaces)


def host_middleware(hosts: AllowedHosts) -> Middleware:
    """Refuses a request whose ``Host`` is not one of the gateway's names (DNS rebinding)."""

    @web.middleware
    async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Only the Host header counts: X-Forwarded-Host and the like are never read.
        values = request.headers.getall(hdrs.HOST, [])
        parsed = parse_host(values[0]) if len(values) == 1 else None
        if parsed is None:
            raise ApiError(
                400, "INVALID_HOST", "The request needs exactly one Host header naming this gateway"
            )
        if not hosts.allows(parsed.host):
            log.info(
                "refused %s %s for the host %r, not in server.allowed_hosts",
                request.method,
                request.path,
                parsed.host,
            )
            raise ApiError(
                421,
                "HOST_NOT_ALLOWED",
                "This gateway does not answer to that host name (see server.allowed_hosts)",
            )
        return await handler(request)

    return check_host


def origin_allowed(request: web.Request, origin: str) -> bool:
    """Whether a page at ``origin`` may act here: one of ``server.cors_origins``, or the gateway's own.

    The gateway's own origin is the one whose host and port are the request's ``Host`` (already
    checked against the allowed hosts). The scheme is not compared, since a TLS-terminating proxy
    turns https into http; ``null`` and non-web schemes are always foreign.
    """
    parsed = parse_origin(origin)
    if parsed is None:
        return False
    if parsed in request.app[LISTED_ORIGINS]:
        return True
    own = parse_host(request.headers.get(hdrs.HOST, ""))
    if own is None or own.host != parsed.host:
        return False
    # A Host without a port was sent to the default port of the page's own scheme.
    return parsed.port == (own.port if own.port is not None else DEFAULT_PORTS[parsed.scheme])


def listed_origins(config: Config) -> frozenset[Origin]:
    """``server.cors_origins`` parsed once, at start-up (the config validator accepts only origins)."""
    return frozenset(o for o in map(parse_origin, config.server.cors_origins) if o is not None)


def from_foreign_page(request: web.Request) -> bool:
    """Whether the browser says a request comes from a page neither listed nor the gateway's own."""
    origins = request.headers.getall(hdrs.ORIGIN, [])
    if len(origins) == 1:
        return not origin_allowed(request, origins[0])
    # Several Origins are forged; none at all with Sec-Fetch-Site: cross-site hides a foreign page.
    return bool(origins) or request.headers.get("Sec-Fetch-Site", "").strip().lower() == "cross-site"


def refuse_foreign_read(request: web.Request, what: str) -> None:
    """``403 ORIGIN_NOT_ALLOWED`` for a read sent from another site's page. Security: a read that
    may reveal secrets (a log, a stack's files) or cost the host CPU (a log search) must not be
    made through a LAN user's browser by a page they happen to have open, as a state change must
    not."""
    if from_foreign_page(request):
        raise ApiError(403, "ORIGIN_NOT_ALLOWED", f"Requests from this origin may not read {what} here")


@web.middleware
async def browser_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuses state changes sent from another site's page, and bodies that are not JSON."""
    # Security: LAN trust must not be borrowed by a page the user happens to have open.
    if request.method not in SAFE_METHODS and from_foreign_page(request):
        raise ApiError(403, "ORIGIN_NOT_ALLOWED", "Requests from this origin may not change anything here")
    # Only JSON: a form or text/plain body is what a page may send cross-site without a preflight.
    if request.body_exists and (hdrs.CONTENT_TYPE not in request.headers or request.content_type != JSON):
        raise ApiError(
            415, "UNSUPPORTED_MEDIA_TYPE", "Request bodies must be sent as Content-Type: application/json"
        )
    return await handler(request)
