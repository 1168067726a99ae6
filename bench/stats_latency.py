"""How long one container's stats take: the first call for a container, then calls as a dashboard
makes them (every 2 s) and back to back, on busy containers (a shell loop: about one core each).

The Engine's ``stream=false`` sample waits for two passes of its once-a-second stats collector
(1-2 s a call). The gateway takes one-shot samples and the rate against its own previous sample,
so only a container's first call waits for a second pass, and a call after a quiet spell for one
pass at most. Targets: calls on a container being polled (every 2 s, or back to back) ≤ 0.5 s,
and the CPU figure a real rate (never the 0 of a sample without a previous one).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench._harness import Bench, Row, direct_stats, percentile, run_script, timed_get

CONTAINERS = 5
POLLED = 10
POLL_INTERVAL = 2.0
BACK_TO_BACK = 10
TARGET_LATER = 0.5
BUSY = ("sh", "-c", "while :; do :; done")


async def _stats(bench: Bench, cid: str) -> tuple[float, dict[str, Any]]:
    seconds, body, _ = await timed_get(bench.http, f"/api/v1/containers/{cid[:12]}/stats")
    return seconds, body


async def measure(bench: Bench) -> list[Row]:
    ids = [await bench.engine.create(f"bench-stats-{i}", cmd=BUSY) for i in range(CONTAINERS)]
    for cid in ids:
        await bench.engine.start(cid)
    first: list[float] = []
    for cid in ids:  # one after another: each one's first call
        seconds, _ = await _stats(bench, cid)
        first.append(seconds)
    polled: list[float] = []
    usage: list[float] = []
    for _ in range(POLLED):
        await asyncio.sleep(POLL_INTERVAL)  # a dashboard's refresh interval
        seconds, body = await _stats(bench, ids[0])
        polled.append(seconds)
        usage.append(body["cpu"]["usage"])
    quick: list[float] = []
    for _ in range(BACK_TO_BACK):
        seconds, body = await _stats(bench, ids[0])
        quick.append(seconds)
        usage.append(body["cpu"]["usage"])
    quiet: list[float] = []
    for cid in ids[1:]:  # last asked for before the polling began
        seconds, body = await _stats(bench, cid)
        quiet.append(seconds)
        usage.append(body["cpu"]["usage"])
    direct: list[float] = []
    for cid in ids:  # the Engine's own one-shot sample, each after the same quiet spell
        await asyncio.sleep(POLL_INTERVAL)
        direct.append(await direct_stats(bench, cid))
    return [
        Row(f"direct Engine one-shot stats, median of {CONTAINERS}", percentile(direct, 50), "s"),
        Row(f"first call for a container, median of {CONTAINERS}", percentile(first, 50), "s"),
        Row("first call max", max(first), "s"),
        Row(
            f"after {POLLED * POLL_INTERVAL:g} s without a call, median of {len(quiet)}",
            percentile(quiet, 50),
            "s",
        ),
        Row("after a quiet spell, max", max(quiet), "s"),
        Row(f"polled every {POLL_INTERVAL:g} s, median of {POLLED}", percentile(polled, 50), "s"),
        Row(f"back to back, median of {BACK_TO_BACK}", percentile(quick, 50), "s"),
        Row("CPU % of a busy container, lowest reported", min(usage), "%", 1.0, True),
        Row("polled or back to back, max", max(polled + quick), "s", TARGET_LATER),
    ]


if __name__ == "__main__":
    run_script("single-container stats latency", measure)
