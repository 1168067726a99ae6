"""The container list under load: 50 keep-alive clients on the gateway vs on the Engine directly.

100 containers (a third of them running) labelled ``nekzus.enable=true``. 50 clients, each its own
keep-alive connection, send a bounded number of requests back to back: ``GET /api/v1/containers``
on the gateway (plain HTTP, so the figures are the list's and not TLS's), and
``GET /containers/json?all=1`` on the Engine's socket, read raw. The two take turns, several rounds
each; reported are the medians over rounds of requests per second and of each round's p50 and p99.
Targets: the gateway ≥ 3 × 578 req/s (its throughput when every list asked the Engine) with a
p99 ≤ 50 ms. The load generator shares the machine's CPUs with the gateway and the daemon.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp

from bench._harness import Bench, Row, gateway_caught_up, ms, percentile, run_script, socket_path

CONTAINERS = 100
RUNNING = 34
CLIENTS = 50
REQUESTS = 1500  # per round, spread over the clients (30 each)
WARMUP = 200
ROUNDS = 3
BEFORE_RPS = 578.0  # the same load when every list was one Engine call (p99 253 ms)
TARGET_RPS = 3 * BEFORE_RPS
TARGET_P99_MS = 50.0
# Against the real limit too: the Engine's own list endpoint, read raw, under the same 50 clients.
TARGET_RATIO = 3.0
GATEWAY_ENV = {"NEKZUS_SERVER__TLS__MODE": "off"}


async def _load(make_session: Callable[[], aiohttp.ClientSession], path: str, total: int) -> list[float]:
    """``total`` requests over ``CLIENTS`` keep-alive connections; answers each request's seconds."""
    latencies: list[float] = []
    per_client = total // CLIENTS

    async def client() -> None:
        async with make_session() as session:
            for _ in range(per_client):
                begin = time.perf_counter()
                async with session.get(path) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise AssertionError(f"GET {path} answered {resp.status}")
                latencies.append(time.perf_counter() - begin)

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return latencies


async def measure(bench: Bench) -> list[Row]:
    ids = await bench.engine.create_many(CONTAINERS, "bench-load", labels={"nekzus.enable": "true"})
    await asyncio.gather(*(bench.engine.start(cid) for cid in ids[:RUNNING]))
    gateway_path = "/api/v1/containers"
    direct_path = f"{bench.engine.prefix}/containers/json?all=1"
    sock = socket_path(bench.gateway.docker_host)

    def gateway_session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(base_url=bench.gateway.url, connector=aiohttp.TCPConnector(limit=1))

    def direct_session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            base_url="http://docker", connector=aiohttp.UnixConnector(path=sock, limit=1)
        )

    # Every container is listed once the gateway has followed the 134 create and start events.
    caught_up = await gateway_caught_up(bench, ids)

    await _load(gateway_session, gateway_path, WARMUP)
    await _load(direct_session, direct_path, WARMUP)
    results: dict[str, list[tuple[float, float, float]]] = {"gateway": [], "direct": []}
    for i in range(ROUNDS):
        pair = [("gateway", gateway_session, gateway_path), ("direct", direct_session, direct_path)]
        for name, make, path in pair if i % 2 else reversed(pair):
            begin = time.perf_counter()
            latencies = await _load(make, path, REQUESTS)
            elapsed = time.perf_counter() - begin
            results[name].append(
                (len(latencies) / elapsed, percentile(latencies, 50), percentile(latencies, 99))
            )

    def summary(name: str) -> tuple[float, float, float, float, float]:
        rounds = results[name]
        rps = [r[0] for r in rounds]
        return (
            percentile(rps, 50),
            min(rps),
            max(rps),
            percentile([r[1] for r in rounds], 50),
            percentile([r[2] for r in rounds], 50),
        )

    g_rps, g_min, g_max, g50, g99 = summary("gateway")
    d_rps, d_min, d_max, d50, d99 = summary("direct")
    return [
        Row("containers created, all listed by the gateway", len(ids)),
        Row("gateway's list caught up with the Engine after the creates and starts", caught_up, "s"),
        Row(f"direct Engine req/s, median of {ROUNDS} rounds of {REQUESTS}", d_rps, "req/s"),
        Row("direct Engine req/s min", d_min, "req/s"),
        Row("direct Engine req/s max", d_max, "req/s"),
        Row("direct Engine p50", ms(d50), "ms"),
        Row("direct Engine p99", ms(d99), "ms"),
        Row("gateway req/s min", g_min, "req/s"),
        Row("gateway req/s max", g_max, "req/s"),
        Row("gateway p50", ms(g50), "ms"),
        Row(f"gateway req/s, median of {ROUNDS} rounds of {REQUESTS}", g_rps, "req/s", TARGET_RPS, True),
        Row("gateway p99 (median of rounds)", ms(g99), "ms", TARGET_P99_MS),
        Row("gateway req/s ÷ direct Engine req/s (medians)", g_rps / d_rps, "×", TARGET_RATIO, True),
    ]


if __name__ == "__main__":
    run_script(
        f"{CLIENTS} keep-alive clients listing {CONTAINERS} containers: gateway vs direct Engine",
        measure,
        GATEWAY_ENV,
    )
