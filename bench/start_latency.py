"""How fast ``POST /api/v1/containers/{id}/start`` answers 202.

The answer waits only for the synchronous pre-check (from the gateway's state model when it is
warm, else one inspect); the start itself runs in the background. 200 stopped containers are each
started once, one call after the other, and the p99 of the time to the 202 must stay within 15 ms.
The operations are then awaited so the table also says whether every start really happened.

Right before each start the same container is inspected directly on the Engine: that is the
pre-check's own daemon call, timed under the same load, so the table shows how much of the 202
latency is the daemon's and how much the gateway's.
"""

from __future__ import annotations

import asyncio
import time

from bench._harness import Bench, Row, gateway_caught_up, ms, percentile, run_script

CONTAINERS = 200
TARGET_P99_MS = 15.0
SETTLE_TIMEOUT = 180.0


async def _start(bench: Bench, cid: str) -> tuple[float, str]:
    """Seconds to the 202 and the operation id."""
    begin = time.perf_counter()
    async with bench.http.post(f"/api/v1/containers/{cid}/start") as resp:
        body = await resp.json()
        elapsed = time.perf_counter() - begin
        if resp.status != 202:
            raise AssertionError(f"start of {cid[:12]} answered {resp.status}: {body}")
    return elapsed, str(body["operationId"])


async def _settle(bench: Bench, operation_ids: list[str]) -> dict[str, int]:
    """Poll every operation until none is pending; answers how many ended in each state."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    pending = list(operation_ids)
    states: dict[str, int] = {}
    while pending and time.monotonic() < deadline:
        still = []
        for op_id in pending:
            async with bench.http.get(f"/api/v1/operations/{op_id}") as resp:
                state = (await resp.json())["state"]
            if state == "pending":
                still.append(op_id)
            else:
                states[state] = states.get(state, 0) + 1
        pending = still
        if pending:
            await asyncio.sleep(0.5)
    states["pending"] = len(pending)
    return states


async def _inspect_direct(bench: Bench, cid: str) -> float:
    begin = time.perf_counter()
    async with bench.engine.session.get(f"{bench.engine.prefix}/containers/{cid}/json") as resp:
        await resp.read()
        resp.raise_for_status()
    return time.perf_counter() - begin


async def measure(bench: Bench) -> list[Row]:
    ids = await bench.engine.create_many(CONTAINERS, "bench-start")
    # Steady state: the gateway has followed the creates (its pre-checks read its state model).
    caught_up = await gateway_caught_up(bench, ids)
    # One warm-up request (connection set-up, first-request imports) on a container we leave alone.
    async with bench.http.get(f"/api/v1/containers/{ids[0]}") as resp:
        resp.raise_for_status()

    began = time.monotonic()
    latencies: list[float] = []
    direct: list[float] = []
    operations: list[str] = []
    for cid in ids:
        direct.append(await _inspect_direct(bench, cid))
        elapsed, op_id = await _start(bench, cid)
        latencies.append(elapsed)
        operations.append(op_id)
    accepted_in = time.monotonic() - began
    states = await _settle(bench, operations)
    settled_in = time.monotonic() - began

    return [
        Row("gateway's list caught up with the creates", caught_up, "s"),
        Row("start calls answered 202", len(latencies)),
        Row("time for the start loop (202s + direct inspects)", accepted_in, "s"),
        Row("operations completed", states.get("completed", 0)),
        Row("operations failed / still pending", states.get("failed", 0) + states["pending"], target=0),
        Row("time until every operation ended", settled_in, "s"),
        Row("direct Engine inspect p50 (same load)", ms(percentile(direct, 50)), "ms"),
        Row("direct Engine inspect p99 (same load)", ms(percentile(direct, 99)), "ms"),
        Row("202 latency p50", ms(percentile(latencies, 50)), "ms"),
        Row("202 latency p90", ms(percentile(latencies, 90)), "ms"),
        Row("202 latency max", ms(max(latencies)), "ms"),
        Row(f"202 latency p99 ({CONTAINERS} calls)", ms(percentile(latencies, 99)), "ms", TARGET_P99_MS),
    ]


if __name__ == "__main__":
    run_script(f"POST start → 202, {CONTAINERS} sequential calls", measure)
