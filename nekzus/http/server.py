"""The listener: aiohttp's ``AppRunner`` behind an accept loop of the gateway's own.

``loop.create_server(ssl=...)`` gives no say between accepting a connection and its TLS handshake,
and every accepted connection costs about 300 KB of TLS buffers at once. So the gateway accepts
itself, sees the client's address first, refuses a connection beyond the caps on unfinished
handshakes (per client and in total) by closing it at once, and hands the others to
``loop.connect_accepted_socket`` with a short handshake timeout. After a burst of handshakes has
drained, the C heap is trimmed so that the buffers' memory goes back to the system.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import signal
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..client_address import parse_ip, rate_key
from ..tasks import TaskGroup
from .protocol_errors import JsonErrorRequestHandler

log = logging.getLogger(__name__)

BACKLOG = 128
# How long an idle keep-alive connection stays open, as web.run_app has it (aiohttp's request
# handler alone keeps one for an hour, and with TLS each holds about 300 KB).
KEEPALIVE_SECONDS = 75.0
# After this many handshakes were pending at once, the heap is trimmed when they have all ended.
TRIM_AFTER = 32
TRIM_DELAY = 1.0
REFUSAL_LOG_SECONDS = 10.0


class ListenError(Exception):
    """The gateway cannot listen on its address; the message is one line naming it."""


@dataclass(frozen=True, slots=True)
class HandshakeLimits:
    timeout: float  # seconds a client has to finish its TLS handshake
    total: int  # connections in their handshake at once, from everyone
    per_client: int  # ... from one address (one /64 for IPv6)


def client_key(address: str) -> str:
    """The unit a per-client cap counts: the IPv4 address, or the IPv6 /64 (one host's usual share)."""
    return rate_key(parse_ip(address))


def _display(address: tuple[Any, ...]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def _load_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None on another C library."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class Listener:
    """Listening sockets and their accept loops; each connection's handshake is an owned task."""

    def __init__(self, ssl_context: ssl.SSLContext | None, limits: HandshakeLimits) -> None:
        self._factory: Callable[[], asyncio.Protocol] | None = None
        self._ssl = ssl_context
        self._limits = limits
        self._sockets: list[socket.socket] = []
        self._tasks = TaskGroup()
        self._pending: dict[str, int] = {}
        self._pending_total = 0
        self._burst = 0  # the most handshakes pending at once since the heap was last trimmed
        self._refused = 0  # refused since the last log line about it
        self._refusal_logged = 0.0
        self._malloc_trim = _load_malloc_trim()
        self._trim_handle: asyncio.TimerHandle | None = None
        # Set whenever ``pending`` changes, for whoever watches the handshakes (tests, a monitor).
        self.pending_changed = asyncio.Event()

    @property
    def pending(self) -> int:
        """Connections accepted whose handshake has not finished."""
        return self._pending_total

    @property
    def addresses(self) -> list[tuple[Any, ...]]:
        return [sock.getsockname() for sock in self._sockets]

    def urls(self) -> list[str]:
        scheme = "https" if self._ssl is not None else "http"
        return [f"{scheme}://{_display(address)}" for address in self.addresses]

    def bind(self, host: str, port: int) -> None:
        """Bind every address ``host`` names, or none: raises ListenError naming the one that failed."""
        try:
            infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise ListenError(f"cannot listen on {host}:{port}: {_reason(exc)}") from None
        seen: set[tuple[Any, ...]] = set()
        for family, kind, proto, _, address in infos:
            if address in seen:
                continue
            seen.add(address)
            sock = socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    # One socket per family, as asyncio's create_server does: no dual-stack surprises.
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(BACKLOG)
                sock.setblocking(False)
            except OSError as exc:
                sock.close()
                for bound in self._sockets:
                    bound.close()
                self._sockets.clear()
                raise ListenError(f"cannot listen on {_display(address)}: {_reason(exc)}") from None
            self._sockets.append(sock)

    def start(self, protocol_factory: Callable[[], asyncio.Protocol]) -> None:
        """Accept on the bound sockets; each connection gets a protocol from ``protocol_factory``."""
        self._factory = protocol_factory
        for sock in self._sockets:
            self._tasks.spawn(self._accept(sock), name=f"accept-{_display(sock.getsockname())}")

    async def close(self) -> None:
        """Stop accepting, drop the connections still in their handshake, release the sockets."""
        await self._tasks.close()
        if self._trim_handle is not None:
            self._trim_handle.cancel()
            self._trim_handle = None
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(sock)
            except OSError as exc:
                # Out of file descriptors or buffers: what is open must close first.
                log.error("cannot accept a connection on %s: %s", _display(sock.getsockname()), _reason(exc))
                await asyncio.sleep(1.0)
                continue
            self._admit(conn, peer)

    def _admit(self, conn: socket.socket, peer: tuple[Any, ...]) -> None:
        if self._ssl is None:
            # Plain HTTP allocates nothing before the first request: there is no handshake to cap,
            # and a burst of connections accepted in one go must not be taken for a flood.
            self._tasks.spawn(self._connect(conn, None), name=f"connect-{peer[0]}")
            return
        key = client_key(peer[0])
        held = self._pending.get(key, 0)
        # Security: a cap reached refuses before TLS allocates anything for the connection.
        if self._pending_total >= self._limits.total or held >= self._limits.per_client:
            conn.close()
            self._note_refusal()
            return
        self._pending[key] = held + 1
        self._pending_total += 1
        self.pending_changed.set()
        self._burst = max(self._burst, self._pending_total)
        self._tasks.spawn(self._connect(conn, key), name=f"handshake-{peer[0]}")

    async def _connect(self, conn: socket.socket, key: str | None) -> None:
        """Hand the connection to the app's protocol; ``key`` is the client a handshake counts for."""
        loop = asyncio.get_running_loop()
        assert self._factory is not None  # set by start()
        try:
            await loop.connect_accepted_socket(
                self._factory,
                conn,
                ssl=self._ssl,
                ssl_handshake_timeout=self._limits.timeout if self._ssl is not None else None,
            )
        except OSError as exc:  # ssl.SSLError and TimeoutError among them
            # A client that never finished its handshake, or spoke something else: not our fault.
            log.debug("handshake with %s failed: %r", key, exc)
            conn.close()
        finally:
            if key is not None:
                self._release(key)

    def _release(self, key: str) -> None:
        left = self._pending[key] - 1
        if left:
            self._pending[key] = left
        else:
            del self._pending[key]
        self._pending_total -= 1
        self.pending_changed.set()
        if self._pending_total == 0 and self._burst >= TRIM_AFTER and self._trim_handle is None:
            # Later, not now: the transports of the failed handshakes are released by callbacks
            # that run after this task ends.
            self._trim_handle = asyncio.get_running_loop().call_later(TRIM_DELAY, self._trim)

    def _trim(self) -> None:
        """Give the freed TLS buffers back: glibc keeps freed heap memory for reuse otherwise.

        The connection objects hold each other in reference cycles, so a collection frees them
        first; both run once after a burst, not per connection.
        """
        self._trim_handle = None
        if self._pending_total:
            return  # a new burst began; its end trims
        burst, self._burst = self._burst, 0
        collected = gc.collect()
        trimmed = self._malloc_trim(0) if self._malloc_trim is not None else 0
        log.debug(
            "after %d handshakes at once: %d objects collected, heap trimmed: %d", burst, collected, trimmed
        )

    def _note_refusal(self) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._refusal_logged >= REFUSAL_LOG_SECONDS:
            log.warning(
                "refused %d connection(s): too many unfinished TLS handshakes (at most %d per client, "
                "%d in total)",
                self._refused,
                self._limits.per_client,
                self._limits.total,
            )
            self._refused = 0
            self._refusal_logged = now


async def serve(
    app: web.Application,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    limits: HandshakeLimits,
    *,
    stop: asyncio.Event | None = None,
    ready: Callable[[Listener], None] | None = None,
    **handler_args: Any,
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM (or, when given, ``stop`` is set), then shut down.

    The address is bound before the application starts, so a port in use stops the start before
    any runtime client or background task exists. ``handler_args`` go to aiohttp's request handler
    (``web.RequestHandler``'s keyword arguments, e.g. ``access_log``, ``keepalive_timeout``).
    """
    handler_args = {"keepalive_timeout": KEEPALIVE_SECONDS, **handler_args}
    loop = asyncio.get_running_loop()
    listener = Listener(ssl_context, limits)
    listener.bind(host, port)
    runner = web.AppRunner(app, **handler_args)
    signals = (signal.SIGINT, signal.SIGTERM) if stop is None else ()
    stop = stop or asyncio.Event()
    try:
        await runner.setup()
        server = runner.server
        assert server is not None  # set by setup()
        listener.start(lambda: JsonErrorRequestHandler(server, loop=loop, **handler_args))
        for url in listener.urls():
            log.info("Running on %s", url)
        for signum in signals:
            loop.add_signal_handler(signum, stop.set)
        if ready is not None:
            ready(listener)
        await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        await listener.close()
        await runner.cleanup()
