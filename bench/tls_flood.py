"""Connections that never start the TLS handshake: the gateway's memory before, during and after.

``nekzus serve`` (TLS auto, a private data directory, no Docker daemon: nothing here needs one) is
left idle, then the bench opens ``--connections`` TCP connections to it (2,000 by default, from
``--addresses`` loopback source addresses 127.0.1.x) and sends nothing on them, as a client that
never sends its ClientHello does. While they are held (``--hold`` seconds) the gateway's resident
memory is sampled every 0.1 s and a new TLS client from 127.0.0.2 calls ``/healthz`` every 0.2 s;
then every connection is closed and the memory is read again 5 s later. Also counted: how many of
the idle connections the gateway closed on its own (the caps on unfinished handshakes close the
rest at once, the handshake timeout the others). Target: memory after the flood under twice idle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench._harness import (
    Gateway,
    Row,
    all_passed,
    percentile,
    print_table,
    proc_status_mib,
    raise_open_files,
)

SETTLE_SECONDS = 5.0  # after the last connection closed, before the memory is read again
SAMPLE_SECONDS = 0.1
TARGET_RATIO = 2.0
PROBE_SOURCE = "127.0.0.2"


def flood_source(i: int, addresses: int) -> str:
    """The flood's i-th source address: 127.0.1.1, 127.0.1.2, … (all of 127/8 is loopback)."""
    n = i % addresses
    return f"127.0.{1 + n // 250}.{1 + n % 250}"


def _open(port: int, count: int, addresses: int) -> list[socket.socket]:
    """``count`` connected sockets that send nothing; a refused or reset connect ends the flood."""
    sockets: list[socket.socket] = []
    try:
        for i in range(count):
            source = (flood_source(i, addresses), 0)
            sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=source)
            sock.setblocking(False)
            sockets.append(sock)
    except OSError as exc:
        print(f"opening stopped after {len(sockets)} connections: {exc}", file=sys.stderr)
    return sockets


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


async def _sample(pid: int, stop: asyncio.Event, samples: list[float]) -> None:
    while not stop.is_set():
        samples.append(proc_status_mib(pid)["VmRSS"])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_SECONDS)


PROBE_TIMEOUT = 5.0


def probe_session(gateway: Gateway) -> aiohttp.ClientSession:
    """A client from 127.0.0.2, an address the flood does not use, trusting the gateway's certificate."""
    assert gateway.certificate is not None, "the flood is about TLS: run the gateway with TLS"
    context = ssl.create_default_context(cafile=gateway.certificate)
    connector = aiohttp.TCPConnector(ssl=context, local_addr=(PROBE_SOURCE, 0), force_close=True)
    # Bounded: a probe the gateway never answers counts as refused instead of holding the loop.
    return aiohttp.ClientSession(
        base_url=gateway.url, connector=connector, timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
    )


async def measure(gateway: Gateway, connections: int, addresses: int, hold: float) -> list[Row]:
    async with gateway.session() as http:
        for _ in range(3):
            async with http.get("/healthz") as resp:
                resp.raise_for_status()
        await asyncio.sleep(2.0)
        idle = proc_status_mib(gateway.pid)["VmRSS"]
        port = int(gateway.url.rpartition(":")[2])
        stop = asyncio.Event()
        samples: list[float] = []
        sampler = asyncio.create_task(_sample(gateway.pid, stop, samples))
        started = time.monotonic()
        sockets = await asyncio.to_thread(_open, port, connections, addresses)
        opened = time.monotonic() - started
        latencies: list[float] = []
        refused = 0
        try:
            while time.monotonic() - started - opened < hold:
                t0 = time.perf_counter()
                # A new connection each time: a fresh TLS handshake, as a new client's. With the
                # total cap full, the gateway refuses it too until the flood's handshakes time out.
                try:
                    async with probe_session(gateway) as fresh, fresh.get("/healthz") as resp:
                        resp.raise_for_status()
                    latencies.append(time.perf_counter() - t0)
                except (aiohttp.ClientError, TimeoutError):
                    refused += 1
                await asyncio.sleep(0.2)
            closed_by_gateway = sum(_closed_by_peer(sock) for sock in sockets)
        finally:
            for sock in sockets:
                sock.close()
            stop.set()
            await sampler
        await asyncio.sleep(SETTLE_SECONDS)
        after = proc_status_mib(gateway.pid)["VmRSS"]
        status = proc_status_mib(gateway.pid)
    return [
        Row(f"idle connections opened (from {addresses} addresses)", float(len(sockets)), ""),
        Row(f"… closed by the gateway within {hold:.0f} s", float(closed_by_gateway), ""),
        Row("seconds to open them", opened, "s"),
        Row("new TLS client from another address during the flood: answered", float(len(latencies)), ""),
        Row("… refused", float(refused), ""),
        Row("… /healthz p50 when answered", percentile(latencies or [0.0], 50) * 1000, "ms"),
        Row("… /healthz max when answered", max(latencies, default=0.0) * 1000, "ms"),
        Row("resident memory idle (VmRSS)", idle, "MiB"),
        Row("resident memory peak during the flood (sampled)", max(samples, default=idle), "MiB"),
        Row("resident memory peak of the process (VmHWM)", status["VmHWM"], "MiB"),
        Row(f"resident memory {SETTLE_SECONDS:.0f} s after the flood (VmRSS)", after, "MiB"),
        Row("after ÷ idle", after / idle, "×", TARGET_RATIO),
    ]


async def run(
    gateway_env: dict[str, str], *, connections: int = 2000, addresses: int = 1, hold: float = 5.0
) -> list[Row]:
    """The whole measurement with its own gateway (always TLS auto: the flood is about TLS)."""
    raise_open_files(connections + 256)
    env = {**gateway_env, "NEKZUS_SERVER__TLS__MODE": "auto"}
    with tempfile.TemporaryDirectory(prefix="nekzus-bench-") as workdir:
        # No daemon: a socket path that does not exist; /healthz does not need one.
        gateway = Gateway(f"unix://{workdir}/no-daemon.sock", Path(workdir), env)
        try:
            await gateway.start()
            settings = {k: v for k, v in gateway.env.items() if k in env}
            print(f"tls flood: gateway {gateway.url} (TLS {gateway.tls_mode}) {settings}", flush=True)
            rows = await measure(gateway, connections, addresses, hold)
        finally:
            await gateway.stop()
    print_table(f"{connections} connections without a ClientHello from {addresses} address(es)", rows)
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000, help="idle connections (default 2000)")
    parser.add_argument(
        "--addresses", type=int, default=1, help="source addresses the flood comes from (default 1)"
    )
    parser.add_argument("--hold", type=float, default=5.0, help="seconds they are held (default 5)")
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra gateway setting, e.g. NEKZUS_SERVER__TLS__MAX_PENDING_HANDSHAKES=100000 (repeatable)",
    )
    args = parser.parse_args()
    if not 1 <= args.connections <= 20_000 or not 1 <= args.addresses <= 5000 or not 0 < args.hold <= 120:
        parser.error("--connections takes 1 to 20000, --addresses 1 to 5000, --hold 0 to 120 seconds")
    pairs = [item.partition("=") for item in args.gateway_env]
    if any(not key or not sep for key, sep, _ in pairs):
        parser.error("--gateway-env takes KEY=VALUE")
    args.gateway_env = {key: value for key, _, value in pairs}
    return args


if __name__ == "__main__":
    args = parse_args()
    rows = asyncio.run(
        run(args.gateway_env, connections=args.connections, addresses=args.addresses, hold=args.hold)
    )
    sys.exit(0 if all_passed(rows) else 1)
