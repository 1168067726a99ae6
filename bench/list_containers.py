"""Listing 100 containers through the gateway vs asking the Engine directly.

The gateway's list comes from its state model (kept by the Engine's events) plus its own work
(filter, render, serialise), so its median should stay within 1.5× of the direct call. The two
are interleaved, alternating which goes first, so machine noise hits both alike.
"""

from __future__ import annotations

from bench._harness import Bench, Row, gateway_caught_up, ms, percentile, run_script, timed_get

CONTAINERS = 100
WARMUP = 20
CALLS = 200
TARGET_RATIO = 1.5


async def measure(bench: Bench) -> list[Row]:
    ids = await bench.engine.create_many(CONTAINERS, "bench-list")
    gateway_path = "/api/v1/containers?all=true"
    direct_path = f"{bench.engine.prefix}/containers/json?all=1"

    # The list follows the Engine's events: wait until it has seen every create.
    caught_up = await gateway_caught_up(bench, ids)
    _, listed, gateway_bytes = await timed_get(bench.http, gateway_path)
    _, rows, direct_bytes = await timed_get(bench.engine.session, direct_path)

    gateway: list[float] = []
    direct: list[float] = []
    for i in range(WARMUP + CALLS):
        pair = [(bench.http, gateway_path, gateway), (bench.engine.session, direct_path, direct)]
        for session, path, samples in pair if i % 2 else reversed(pair):
            seconds, _, _ = await timed_get(session, path)
            if i >= WARMUP:
                samples.append(seconds)

    g50, d50 = percentile(gateway, 50), percentile(direct, 50)
    return [
        Row("containers listed by the gateway", len(listed)),
        Row("gateway's list caught up with the Engine after the creates", caught_up, "s"),
        Row("containers listed by the Engine", len(rows)),
        Row("response size gateway", gateway_bytes / 1024, "KiB"),
        Row("response size Engine", direct_bytes / 1024, "KiB"),
        Row(f"direct Engine GET /containers/json median ({CALLS} calls)", ms(d50), "ms"),
        Row("direct Engine p90", ms(percentile(direct, 90)), "ms"),
        Row(f"gateway GET /api/v1/containers median ({CALLS} calls)", ms(g50), "ms"),
        Row("gateway p90", ms(percentile(gateway, 90)), "ms"),
        Row("gateway overhead (median difference)", ms(g50 - d50), "ms"),
        Row("gateway median / direct median", g50 / d50, "×", TARGET_RATIO),
    ]


if __name__ == "__main__":
    run_script(f"list {CONTAINERS} containers: gateway vs direct Engine API", measure)
