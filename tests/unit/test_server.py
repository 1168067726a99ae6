"""The listener as ``nekzus serve`` runs it: handshake timeout and caps, protocol errors, start-up."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from nekzus.http.app import create_app
from nekzus.http.protocol_errors import JsonErrorRequestHandler
from nekzus.http.server import HandshakeLimits, Listener, ListenError, client_key, serve
from nekzus.security.tls import generate_self_signed
from runtimes import RuntimeRegistry
from tests.support.gateway import make_config

Start = Callable[..., Awaitable[Listener]]


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert_pem, key_pem = generate_self_signed("127.0.0.1")
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    return tmp_path / "cert.pem", tmp_path / "key.pem"


@pytest.fixture
async def served(tmp_path: Path, certificate: tuple[Path, Path]) -> AsyncIterator[Start]:
    """``serve()`` in this process on a free port, the gateway's app with no runtime; stopped after."""
    stop = asyncio.Event()
    running: list[asyncio.Task[None]] = []

    async def start(
        *, tls: bool = True, limits: HandshakeLimits | None = None, **handler_args: Any
    ) -> Listener:
        config = make_config(
            "unix:///nonexistent.sock", server={"data_dir": str(tmp_path), "tls": {"mode": "off"}}
        )
        app = create_app(config, runtimes=RuntimeRegistry("docker"))
        context = None
        if tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*certificate)
        ready: asyncio.Future[Listener] = asyncio.get_running_loop().create_future()
        running.append(
            asyncio.create_task(
                serve(
                    app,
                    "127.0.0.1",
                    0,
                    context,
                    limits or HandshakeLimits(10.0, 256, 16),
                    stop=stop,
                    ready=ready.set_result,
                    access_log=None,
                    **handler_args,
                )
            )
        )
        async with asyncio.timeout(10):
            return await ready

    yield start
    stop.set()
    async with asyncio.timeout(20):
        await asyncio.gather(*running)
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not leaked, f"tasks left running after shutdown: {leaked}"


def port_of(listener: Listener) -> int:
    return int(listener.addresses[0][1])


async def idle_connection(port: int, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, Any]:
    """A TCP connection that never sends a byte (no ClientHello)."""
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    """How long until the peer closes the connection; fails if it stays open ``seconds``."""
    started = time.monotonic()
    async with asyncio.timeout(seconds):
        with contextlib.suppress(ConnectionResetError):
            assert await reader.read(1) == b""
    return time.monotonic() - started


async def pending(listener: Listener, count: int) -> None:
    """Until ``count`` handshakes are pending, woken by each change of the count."""
    async with asyncio.timeout(5):
        while listener.pending != count:
            listener.pending_changed.clear()
            await listener.pending_changed.wait()


def tls_client(certificate: Path) -> aiohttp.ClientSession:
    context = ssl.create_default_context(cafile=certificate)
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, force_close=True))


# -- before the TLS handshake ---------------------------------------------------------------------


async def test_a_client_that_never_says_hello_is_closed_after_the_handshake_timeout(
    served: Start, certificate: tuple[Path, Path]
) -> None:
    listener = await served(limits=HandshakeLimits(0.5, 256, 16))
    connecting = time.monotonic()  # before the gateway accepts, so the timeout runs within this span
    reader, writer = await idle_connection(port_of(listener))
    await pending(listener, 1)
    await closed_within(reader, 5)
    assert time.monotonic() - connecting >= 0.49, "closed before the handshake timeout"
    await pending(listener, 0)
    writer.close()
    # A client that does say hello is served.
    async with (
        tls_client(certificate[0]) as http,
        http.get(f"https://127.0.0.1:{port_of(listener)}/healthz") as r,
    ):
        assert r.status == 200


async def test_the_per_client_cap_closes_further_connections_at_once(
    served: Start, certificate: tuple[Path, Path]
) -> None:
    listener = await served(limits=HandshakeLimits(30.0, 256, 2))
    port = port_of(listener)
    held = [await idle_connection(port) for _ in range(2)]
    await pending(listener, 2)
    reader, writer = await idle_connection(port)
    assert await closed_within(reader, 5) < 5  # far sooner than the 30 s timeout: refused
    writer.close()
    # Another address is not held back by this one's cap, and a finished handshake frees its slot.
    async with tls_client(certificate[0]) as http:
        connector = aiohttp.TCPConnector(
            ssl=ssl.create_default_context(cafile=certificate[0]), local_addr=("127.0.0.2", 0)
        )
        async with (
            aiohttp.ClientSession(connector=connector) as other,
            other.get(f"https://127.0.0.1:{port}/healthz") as r,
        ):
            assert r.status == 200
        for _, idle in held:
            idle.close()
        await pending(listener, 0)
        async with http.get(f"https://127.0.0.1:{port}/healthz") as r:
            assert r.status == 200


async def test_plain_http_connections_are_not_capped(served: Start) -> None:
    # Without TLS nothing is allocated before a request: a burst from one client all gets served,
    # even with caps that would refuse all but one handshake.
    listener = await served(tls=False, limits=HandshakeLimits(10.0, 1, 1))
    url = f"http://127.0.0.1:{port_of(listener)}/healthz"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True)) as http:

        async def get() -> int:
            async with http.get(url) as resp:
                return resp.status

        assert await asyncio.gather(*(get() for _ in range(50))) == [200] * 50
    assert listener.pending == 0


async def test_the_total_cap_closes_further_connections_from_anyone(served: Start) -> None:
    listener = await served(limits=HandshakeLimits(30.0, 3, 2))
    port = port_of(listener)
    held = [await idle_connection(port, source) for source in ("127.0.0.1", "127.0.0.1", "127.0.0.2")]
    await pending(listener, 3)
    reader, writer = await idle_connection(port, "127.0.0.3")
    assert await closed_within(reader, 5) < 5
    writer.close()
    for _, idle in held:
        idle.close()
    await pending(listener, 0)


def test_per_client_counts_an_ipv6_host_by_its_64() -> None:
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")


# -- protocol errors ------------------------------------------------------------------------------

MARK = b"<echo-me>"
MALFORMED = {
    "url over 8 KB": b"GET /" + MARK + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "1,000 headers": b"GET / HTTP/1.1\r\nHost: x\r\n"
    + b"".join(b"X-H%d: %s\r\n" % (i, MARK) for i in range(1000))
    + b"\r\n",
    "bad chunking": b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Type: application/json\r\n\r\nzz" + MARK + b"\r\n{}\r\n0\r\n\r\n",
    "content-length and transfer-encoding": b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: 5\r\nTransfer-Encoding: chunked" + MARK + b"\r\n\r\n0\r\n\r\n",
    "bad method": b"G" + MARK + b"T / HTTP/1.1\r\nHost: x\r\n\r\n",
}


def raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_protocol_errors_answer_the_json_envelope_without_echoing(served: Start, case: str) -> None:
    listener = await served(tls=False)
    answer = await asyncio.to_thread(raw_exchange, port_of(listener), MALFORMED[case])
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert status in (400, 413, 414, 431), head
    assert b"content-type: application/json" in head.lower()
    document = json.loads(body)
    assert document["error"] == "INVALID_REQUEST" and document["message"]
    assert MARK not in answer and b"echo-me" not in answer


def test_the_request_handler_hook_is_still_there() -> None:
    """aiohttp answers its own protocol errors through ``RequestHandler.handle_error``; a version
    that renames it or changes its parameters must fail here, not silently answer text/plain."""
    parameters = list(inspect.signature(web.RequestHandler.handle_error).parameters)
    assert parameters == ["self", "request", "status", "exc", "message"]
    assert JsonErrorRequestHandler.handle_error is not web.RequestHandler.handle_error
    assert issubclass(JsonErrorRequestHandler, web.RequestHandler)


# -- start-up -------------------------------------------------------------------------------------


def test_bind_names_the_address_and_leaves_nothing_bound() -> None:
    listener = Listener(None, HandshakeLimits(10.0, 256, 16))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            ListenError, match=rf"^cannot listen on 127\.0\.0\.1:{port}: address already in use$"
        ):
            listener.bind("127.0.0.1", port)
    assert listener.addresses == []
    with pytest.raises(ListenError, match=r"^cannot listen on no-such-host\.invalid:1: "):
        listener.bind("no-such-host.invalid", 1)


async def test_handler_arguments_reach_every_connection(served: Start) -> None:
    """An idle keep-alive connection is closed after ``keepalive_timeout`` (75 s unless given)."""
    listener = await served(tls=False, keepalive_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(listener))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    async with asyncio.timeout(10):
        while await reader.read(65536):
            pass
    assert time.monotonic() - started < 5
    writer.close()
