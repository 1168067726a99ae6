"""Gateway resident memory per idle WebSocket connection, with 1,000 and with 5,000 connections.

Client worker processes (``_ws_clients.py``) open the connections; each connection is read until
its ``hello`` and then stays idle (its reader answers the server's pings). The gateway's ``VmRSS``
(/proc/PID/status) is read after a warm-up (20 connections opened and closed, so what the first
connection allocates once is not counted), then with 1,000 connections open and again with 5,000
(4,000 more), each time after a few seconds' settling. Per connection = growth over the warm
baseline ÷ connections open; target ≤ 30 KB (10³ bytes) at both counts.

The gateway serves plain HTTP here (``NEKZUS_SERVER__TLS__MODE=off``; pass
``--gateway-env NEKZUS_SERVER__TLS__MODE=auto`` to judge TLS instead). Informative, each on a
fresh gateway with 1,000 connections: TLS as shipped (``auto``), and clients that offer
permessage-deflate, as browsers do (aiohttp's client, used above, does not by default; the gateway
accepts it and keeps a compressor per connection).

The gateway's WebSocket rate limit is raised so that the upgrades from loopback pass, and the
open-file limit is raised (before the gateway starts, which inherits it) for 5,000 client and
5,000 server sockets.
"""

from __future__ import annotations

import asyncio

from bench._harness import (
    Bench,
    Gateway,
    Row,
    another_gateway,
    open_files_limit,
    proc_status_mib,
    raise_open_files,
    run_script,
)
from bench._ws_clients import WsClients

COUNTS = (1_000, 5_000)
WARMUP_CONNECTIONS = 20
CLIENT_PROCESSES = 2
EXTRA_CONNECTIONS = 1_000
SETTLE_SECONDS = 3.0
TARGET_KB = 30.0
GATEWAY_ENV = {
    "NEKZUS_SERVER__TLS__MODE": "off",
    "NEKZUS_RATELIMIT__WEBSOCKET__PER_MINUTE": "6000000",
    "NEKZUS_RATELIMIT__WEBSOCKET__BURST": "100000",
}
OPEN_FILES = 2 * max(COUNTS) + 2048
raise_open_files(OPEN_FILES)  # at import, so that every gateway started afterwards inherits it


def _rss_kb(gateway: Gateway) -> float:
    """Resident memory in KB (10³ bytes)."""
    return proc_status_mib(gateway.pid)["VmRSS"] * 1024 * 1024 / 1000


async def _baseline(gateway: Gateway, compress: int) -> float:
    """Warm the gateway's WebSocket path with a few connections, close them, settle, read RSS."""
    async with WsClients(gateway.url, gateway.certificate, 1, compress=compress) as warm:
        await warm.open(WARMUP_CONNECTIONS)
    await asyncio.sleep(SETTLE_SECONDS)
    return _rss_kb(gateway)


async def _open(clients: WsClients, gateway: Gateway, total: int, more: int) -> tuple[float, float]:
    """``more`` connections; answers the gateway's RSS (KB) and the seconds the opening took."""
    opened, failed, seconds = await clients.open(more)
    if opened != total:
        raise AssertionError(f"{opened} of {total} connections open ({failed} failed)")
    await asyncio.sleep(SETTLE_SECONDS)
    if (status := await clients.status())["open"] != total:
        raise AssertionError(f"connections were closed while idle: {status}")
    return _rss_kb(gateway), seconds


async def _fresh(bench: Bench, env: dict[str, str], compress: int, count: int) -> float:
    """KB per idle connection on a fresh gateway (the bench's settings plus ``env``)."""
    async with another_gateway(bench, env) as fresh:
        base = await _baseline(fresh, compress)
        async with WsClients(fresh.url, fresh.certificate, CLIENT_PROCESSES, compress=compress) as clients:
            rss, _ = await _open(clients, fresh, count, count)
    return (rss - base) / count


async def measure(bench: Bench) -> list[Row]:
    gateway = bench.gateway
    if (limit := open_files_limit(gateway.pid)) < max(COUNTS) + 1024:
        raise AssertionError(f"the gateway may open only {limit} files; raise the hard limit (ulimit -Hn)")
    base = await _baseline(gateway, 0)
    rows = [Row(f"gateway VmRSS, warm, no connection (TLS {gateway.tls_mode})", base / 1000, "MB")]
    checks = []
    async with WsClients(gateway.url, gateway.certificate, CLIENT_PROCESSES) as clients:
        total = 0
        for count in COUNTS:
            rss, seconds = await _open(clients, gateway, count, count - total)
            rows.append(Row(f"time to open {count - total} more connections (to {count})", seconds, "s"))
            rows.append(Row(f"gateway VmRSS with {count} idle connections", rss / 1000, "MB"))
            total = count
            per = (rss - base) / count
            checks.append(
                Row(f"per idle connection, {count} open (TLS {gateway.tls_mode})", per, "KB", TARGET_KB)
            )

    # The same on fresh gateways: TLS as shipped (auto, if the run is plain HTTP), and clients that
    # negotiate permessage-deflate as browsers do.
    if gateway.tls_mode == "off":
        per = await _fresh(bench, {"NEKZUS_SERVER__TLS__MODE": "auto"}, 0, EXTRA_CONNECTIONS)
        rows.append(
            Row(f"per idle connection with TLS auto (as shipped), {EXTRA_CONNECTIONS} open", per, "KB")
        )
    per = await _fresh(bench, {}, 15, EXTRA_CONNECTIONS)
    rows.append(
        Row(f"per idle connection, clients with permessage-deflate, {EXTRA_CONNECTIONS} open", per, "KB")
    )
    return rows + checks


if __name__ == "__main__":
    run_script("gateway memory per idle WebSocket connection", measure, GATEWAY_ENV)
