"""Image pulls and prunes do not slow other clients down.

A pull only relays the Engine's progress lines and a prune only waits for the Engine, so neither
may hold the gateway's event loop. One client pulls an image from a local registry (a fresh
download each time) and prunes it again, round after round, while another lists 50 containers back
to back; the list's p99 must stay within 2× its p99 with nothing else going on. Quiet spells and
busy ones alternate, four times, so that a change in the machine's other load hits both alike.

On a small machine the Engine's own work (download, checksum, extraction, deletion) takes CPU from
the gateway whoever asked for it, so the same rounds are also run straight on the Engine, not
through the gateway, while the list is sampled: the difference between the two is the gateway's.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path

from bench._harness import RUN_LABEL, Bench, Row, gateway_caught_up, ms, percentile, run_script, timed_get
from tests.support.registry import LocalRegistry

CONTAINERS = 50
CYCLES = 4
IDLE_SAMPLES = 150  # per quiet spell
ROUNDS = 3  # pull + prune rounds per busy spell
TARGET_RATIO = 2.0
LIST = "/api/v1/containers?all=true"
OPERATION_TIMEOUT = 120.0


async def _wait_operation(bench: Bench, operation_id: str) -> str:
    """Poll the operation (as a client without a WebSocket would) until it ends; its state."""
    async with asyncio.timeout(OPERATION_TIMEOUT):
        while True:
            async with bench.http.get(f"/api/v1/operations/{operation_id}") as resp:
                state = str((await resp.json())["state"])
            if state != "pending":
                return state
            await asyncio.sleep(0.1)


async def _pull_and_prune(bench: Bench, reference: str, label: str) -> list[float]:
    """ROUNDS of pull then prune of the pulled image; each round's seconds."""
    rounds: list[float] = []
    for _ in range(ROUNDS):
        began = time.perf_counter()
        async with bench.http.post("/api/v1/images/pull", json={"image": reference}) as resp:
            if resp.status != 202:
                raise AssertionError(f"pull answered {resp.status}: {await resp.text()}")
            operation_id = (await resp.json())["operationId"]
        if (state := await _wait_operation(bench, operation_id)) != "completed":
            raise AssertionError(f"pull of {reference} ended {state}")
        async with bench.http.post(f"/api/v1/images/prune?all=true&label={label}") as resp:
            deleted = (await resp.json())["deleted"]
            if resp.status != 200 or len(deleted) != 1:
                raise AssertionError(f"prune answered {resp.status}: {deleted}")
        rounds.append(time.perf_counter() - began)
    return rounds


async def _pull_and_prune_direct(bench: Bench, reference: str, label: str) -> list[float]:
    """The same rounds asked of the Engine itself: what the Engine's work costs the machine."""
    engine, rounds = bench.engine, []
    repository, _, tag = reference.rpartition(":")
    for _ in range(ROUNDS):
        began = time.perf_counter()
        params = {"fromImage": repository, "tag": tag}
        async with engine.session.post(f"{engine.prefix}/images/create", params=params) as resp:
            async for _line in resp.content:
                pass
            resp.raise_for_status()
        filters = json.dumps({"dangling": ["false"], "label": [label]})
        async with engine.session.post(f"{engine.prefix}/images/prune", params={"filters": filters}) as resp:
            resp.raise_for_status()
        rounds.append(time.perf_counter() - began)
    return rounds


async def _sampled(bench: Bench, load: Awaitable[list[float]]) -> tuple[list[float], list[float]]:
    """List latencies for as long as ``load`` runs, and what it answered."""
    task = asyncio.ensure_future(load)
    busy: list[float] = []
    while not task.done():
        busy.append((await timed_get(bench.http, LIST))[0])
    return busy, await task


async def measure(bench: Bench) -> list[Row]:
    ids = await bench.engine.create_many(CONTAINERS, "bench-images")
    await gateway_caught_up(bench, ids)
    run = uuid.uuid4().hex[:12]
    label = f"{RUN_LABEL}={run}"
    with tempfile.TemporaryDirectory(prefix="nekzus-bench-registry-") as directory:
        registry = LocalRegistry(Path(directory), bench.gateway.docker_host)
        await asyncio.to_thread(registry.start)
        try:
            reference = registry.reference(f"nekzus/bench-{run}", "1")
            await asyncio.to_thread(registry.push_changed, reference, labels={RUN_LABEL: run})
            for _ in range(20):  # warm-up: connection, first-request imports
                await timed_get(bench.http, LIST)
            idle: list[float] = []
            busy: list[float] = []
            rounds: list[float] = []
            engine_busy: list[float] = []
            engine_rounds: list[float] = []
            for _ in range(CYCLES):
                idle += [(await timed_get(bench.http, LIST))[0] for _ in range(IDLE_SAMPLES)]
                for samples, times, load in (
                    (busy, rounds, _pull_and_prune(bench, reference, label)),
                    (engine_busy, engine_rounds, _pull_and_prune_direct(bench, reference, label)),
                ):
                    sampled, took = await _sampled(bench, load)
                    samples += sampled
                    times += took
        finally:
            await asyncio.to_thread(registry.stop)
            await asyncio.to_thread(registry.remove_local, reference)
    idle99, busy99, engine99 = percentile(idle, 99), percentile(busy, 99), percentile(engine_busy, 99)
    return [
        Row("containers listed", CONTAINERS),
        Row("pull + prune rounds through the gateway (fresh download of a 1 MB layer each)", len(rounds)),
        Row("round through the gateway, median", ms(percentile(rounds, 50)), "ms"),
        Row("round straight on the Engine, median", ms(percentile(engine_rounds, 50)), "ms"),
        Row(f"list p50, idle ({len(idle)} calls)", ms(percentile(idle, 50)), "ms"),
        Row("list p99, idle", ms(idle99), "ms"),
        Row(f"list p50, the gateway pulling and pruning ({len(busy)} calls)", ms(percentile(busy, 50)), "ms"),
        Row("list p99, the gateway pulling and pruning", ms(busy99), "ms"),
        Row(
            f"list p99, the Engine pulling and pruning for another client ({len(engine_busy)} calls)",
            ms(engine99),
            "ms",
        ),
        Row("list p99 through-the-gateway load ÷ same load on the Engine", busy99 / engine99, "×"),
        Row("list p99 busy ÷ idle", busy99 / idle99, "×", TARGET_RATIO),
    ]


if __name__ == "__main__":
    run_script(f"GET /api/v1/containers ({CONTAINERS}) while images are pulled and pruned", measure)
