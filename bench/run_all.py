"""All four benchmarks on one private daemon, each with a fresh gateway, then one summary table.

The heaviest (200 container starts) goes last so its aftermath cannot disturb the others. A
benchmark that crashes is reported as ERROR and the rest still run.
"""

from __future__ import annotations

import asyncio
import sys
import traceback

import batch_stats
import idle_memory
import list_containers
import start_latency
from _harness import Measure, Row, all_passed, docker_host, parse_args, print_table, run_one

BENCHMARKS: tuple[tuple[str, Measure], ...] = (
    ("idle_memory", idle_memory.measure),
    ("list_containers", list_containers.measure),
    ("batch_stats", batch_stats.measure),
    ("start_latency", start_latency.measure),
)


async def main() -> bool:
    args = parse_args(__doc__ or "")
    summary: list[Row] = []
    ok = True
    async with docker_host(args) as host:
        for name, measure in BENCHMARKS:
            try:
                rows = await run_one(name, measure, host, args.gateway_env)
            except Exception:
                traceback.print_exc()
                print(f"{name}: ERROR\n", flush=True)
                ok = False
                continue
            ok = ok and all_passed(rows)
            summary += [
                Row(f"{name}: {r.name}", r.value, r.unit, r.target) for r in rows if r.target is not None
            ]
    print_table("summary", summary)
    return ok


if __name__ == "__main__":
    sys.exit(0 if asyncio.run(main()) else 1)
