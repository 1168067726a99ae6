"""Every benchmark, then one summary table: the in-process ones first, then those against the
Engine on one private daemon, each with a fresh gateway.

The heaviest (200 container starts) goes last so its aftermath cannot disturb the others. A
benchmark that crashes is reported as ERROR and the rest still run.
"""

from __future__ import annotations

import asyncio
import sys
import traceback
from collections.abc import Awaitable

import auth_overhead
import batch_stats
import idle_memory
import limiter_memory
import list_containers
import start_latency
from _harness import (
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

LOCAL_BENCHMARKS: tuple[tuple[str, LocalMeasure], ...] = (("limiter_memory", limiter_memory.measure),)
BENCHMARKS: tuple[tuple[str, Measure], ...] = (
    ("idle_memory", idle_memory.measure),
    ("list_containers", list_containers.measure),
    ("auth_overhead", auth_overhead.measure),
    ("batch_stats", batch_stats.measure),
    ("start_latency", start_latency.measure),
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
        summary.extend(Row(f"{name}: {r.name}", r.value, r.unit, r.target) for r in checks)

    # In this process before anything else has run, so its memory figures start from a clean slate.
    for name, local in LOCAL_BENCHMARKS:
        await attempt(name, run_local(name, local))
    async with docker_host(args) as host:
        for name, measure in BENCHMARKS:
            await attempt(name, run_one(name, measure, host, args.gateway_env))
    print_table("summary", summary)
    return ok


if __name__ == "__main__":
    sys.exit(0 if asyncio.run(main()) else 1)
