"""Batch export of 50 containers vs inspecting those 50 containers concurrently.

An export needs each container's inspect document, which the gateway fetches concurrently, plus
its image's (cached by image id) and the daemon's default logging driver (cached), then the
conversion and one YAML document. Target: the export's median ≤ 2× the median of 50 concurrent
direct inspects. Calls are interleaved, alternating which goes first.
"""

from __future__ import annotations

import asyncio
import time

import yaml

from bench._harness import Bench, Row, ms, percentile, run_script

CONTAINERS = 50
WARMUP = 5
CALLS = 40
TARGET_RATIO = 2.0
SETTLE = 0.05  # seconds between calls


async def measure(bench: Bench) -> list[Row]:
    ids = await bench.engine.create_many(CONTAINERS, "bench-export", labels={"app": "shop", "tier": "web"})
    body = {"container_ids": ids, "stack_name": "bench"}  # the ids the direct inspects use

    async def export() -> tuple[float, str]:
        begin = time.perf_counter()
        async with bench.http.post("/api/v1/containers/batch/export/preview", json=body) as resp:
            result = await resp.json()
            elapsed = time.perf_counter() - begin
        assert resp.status == 200, result
        return elapsed, str(result["content"])

    async def inspect_all() -> float:
        begin = time.perf_counter()
        await asyncio.gather(
            *(bench.engine._call("GET", f"/containers/{cid}/json", ok=(200,)) for cid in ids)
        )
        return time.perf_counter() - begin

    exports: list[float] = []
    inspects: list[float] = []
    content = ""
    for i in range(WARMUP + CALLS):
        order = ("export", "inspect") if i % 2 else ("inspect", "export")
        for kind in order:
            # Each call starts on a quiet daemon (as an export from a client would), not in the
            # wake of the previous burst of 50 requests.
            await asyncio.sleep(SETTLE)
            if kind == "export":
                seconds, content = await export()
                if i >= WARMUP:
                    exports.append(seconds)
            else:
                seconds = await inspect_all()
                if i >= WARMUP:
                    inspects.append(seconds)

    e50, i50 = percentile(exports, 50), percentile(inspects, 50)
    return [
        Row("services in the exported stack", len(yaml.safe_load(content)["services"])),
        Row(f"{CONTAINERS} concurrent direct inspects, median ({CALLS} rounds)", ms(i50), "ms"),
        Row("direct inspects p90", ms(percentile(inspects, 90)), "ms"),
        Row(f"batch export of {CONTAINERS}, median ({CALLS} calls)", ms(e50), "ms"),
        Row("batch export p90", ms(percentile(exports, 90)), "ms"),
        Row("export median / inspect median", e50 / i50, "×", TARGET_RATIO),
    ]


if __name__ == "__main__":
    run_script(f"batch export of {CONTAINERS} containers vs {CONTAINERS} concurrent inspects", measure)
