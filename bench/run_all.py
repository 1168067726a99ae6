"""Every benchmark, then one summary table: the in-process ones first, then the TLS flood (a gateway
with no daemon), then those against the Engine on one private daemon, each with a fresh gateway.

The heaviest (200 container starts) goes last so its aftermath cannot disturb the others. A
benchmark that crashes is reported as ERROR and the rest still run. Each gateway benchmark may bring
settings of its own (``GATEWAY_ENV``: the WebSocket ones serve plain HTTP and raise the WebSocket
rate limit); ``--gateway-env`` wins over them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import traceback
from collections.abc import Awaitable

from bench import (
    access_log_overhead,
    auth_overhead,
    batch_stats,
    event_fanout,
    event_latency,
    export_batch,
    idle_memory,
    image_load,
    json_depth,
    limiter_memory,
    list_containers,
    list_throughput,
    log_alerts,
    log_search,
    log_throughput,
    stacks_list,
    start_latency,
    stats_latency,
    tls_flood,
    webhook_delivery,
    ws_memory,
)
from bench._harness import (
    LocalMeasure,
    Measure,
    Row,
    all_passed,
    docker_host,
    parse_args,
    print_table,
    run_local,
    run_one,
)

LOCAL_BENCHMARKS: tuple[tuple[str, LocalMeasure], ...] = (
    ("limiter_memory", limiter_memory.measure),
    ("json_depth", json_depth.measure),
    ("webhook_delivery", webhook_delivery.measure),
)
BENCHMARKS: tuple[tuple[str, Measure, dict[str, str]], ...] = (
    ("idle_memory", idle_memory.measure, {}),
    ("list_containers", list_containers.measure, {}),
    ("list_throughput", list_throughput.measure, list_throughput.GATEWAY_ENV),
    ("auth_overhead", auth_overhead.measure, {}),
    ("access_log_overhead", access_log_overhead.measure, {}),
    ("batch_stats", batch_stats.measure, {}),
    ("stats_latency", stats_latency.measure, {}),
    ("event_latency", event_latency.measure, event_latency.GATEWAY_ENV),
    ("ws_memory", ws_memory.measure, ws_memory.GATEWAY_ENV),
    ("event_fanout", event_fanout.measure, event_fanout.GATEWAY_ENV),
    ("log_throughput", log_throughput.measure, log_throughput.GATEWAY_ENV),
    ("log_search", log_search.measure, log_search.GATEWAY_ENV),
    ("log_alerts", log_alerts.measure, log_alerts.GATEWAY_ENV),
    ("start_latency", start_latency.measure, {}),
    ("export_batch", export_batch.measure, {}),
    ("image_load", image_load.measure, {}),
    ("stacks_list", stacks_list.measure, {}),
)


async def main() -> bool:
    args = parse_args(__doc__ or "")
    summary: list[Row] = []
    ok = True

    async def attempt(name: str, run: Awaitable[list[Row]]) -> None:
        nonlocal ok
        try:
            rows = await run
        except Exception:
            traceback.print_exc()
            print(f"{name}: ERROR\n", flush=True)
            ok = False
            return
        ok = ok and all_passed(rows)
        checks = [r for r in rows if r.target is not None]
        summary.extend(dataclasses.replace(r, name=f"{name}: {r.name}") for r in checks)

    # In this process before anything else has run, so its memory figures start from a clean slate.
    for name, local in LOCAL_BENCHMARKS:
        await attempt(name, run_local(name, local))
    # A gateway of its own with no daemon, before the daemon starts.
    await attempt("tls_flood", tls_flood.run(args.gateway_env))
    async with docker_host(args) as host:
        for name, measure, env in BENCHMARKS:
            await attempt(name, run_one(name, measure, host, args.gateway_env, env))
    print_table("summary", summary)
    return ok


if __name__ == "__main__":
    sys.exit(0 if asyncio.run(main()) else 1)
