"""Resident memory of an idle gateway: started, warmed by a few requests, then left alone ~5 s.

Read from /proc/PID/status (VmRSS), which is what ``ps``/``top`` and container limits see; the
anonymous/file split says how much is the heap versus mapped libraries. Target: ≤ 80 MiB.
"""

from __future__ import annotations

import asyncio

from bench._harness import Bench, Row, proc_status_mib, run_script

IDLE_SECONDS = 5.0
TARGET_MIB = 80.0
WARMUP_PATHS = ("/healthz", "/readyz", "/api/v1/health", "/api/v1/containers?all=true", "/api/v1/containers")


async def measure(bench: Bench) -> list[Row]:
    for _ in range(3):
        for path in WARMUP_PATHS:
            async with bench.http.get(path) as resp:
                await resp.read()
                resp.raise_for_status()
    await asyncio.sleep(IDLE_SECONDS)
    mem = proc_status_mib(bench.gateway.pid)
    return [
        Row("peak resident (VmHWM)", mem["VmHWM"], "MiB"),
        Row("resident anonymous (RssAnon: heap, stacks)", mem["RssAnon"], "MiB"),
        Row("resident file-backed (RssFile: code, libraries)", mem["RssFile"], "MiB"),
        Row("resident in MB (10⁶ bytes)", mem["VmRSS"] * 1.048576, "MB"),
        Row(f"resident memory after {IDLE_SECONDS:.0f} s idle (VmRSS)", mem["VmRSS"], "MiB", TARGET_MIB),
    ]


if __name__ == "__main__":
    run_script("idle gateway resident memory", measure)
