"""Batch stats of 20 running linked containers, against the Engine's own one-shot samples of them.

The gateway samples the batch concurrently and answers each container against its own previous
sample, so a batch costs at most one pass of the Engine's stats collector, like the Engine's own
one-shot samples of the 20 taken at once: target batch max ≤ 1.5× their median. Rounds are 1.5 s
apart, past the gateway's 1 s reuse of a sample, as a dashboard polls.
"""

from __future__ import annotations

import asyncio

from bench._harness import Bench, Row, direct_stats, percentile, run_script, timed_get

CONTAINERS = 20
REPEATS = 5
TARGET_RATIO = 1.5  # against the real limit: the Engine's own one-shot samples of all 20 at once
ROUND_GAP = 1.5  # seconds between rounds: longer than the gateway reuses a sample


async def measure(bench: Bench) -> list[Row]:
    ids = await bench.engine.create_many(
        CONTAINERS, "bench-stats", start=True, labels={"nekzus.enable": "true"}
    )
    expected = {cid[:12] for cid in ids}
    batch: list[float] = []
    single: list[float] = []
    sizes: list[int] = []
    for i in range(REPEATS + 1):  # round 0 warms both up and is not counted
        # Past the gateway's 1 s reuse of a sample, as a dashboard polls: each round samples anew.
        await asyncio.sleep(ROUND_GAP)
        one = ids[i % len(ids)]
        for kind in ("batch", "single") if i % 2 else ("single", "batch"):
            if kind == "batch":
                seconds, body, _ = await timed_get(bench.http, "/api/v1/containers/stats")
                found = {c["containerId"] for c in body["containers"]}
                assert expected <= found, f"batch stats left out {len(expected - found)} of {CONTAINERS}"
                sizes.append(len(found))
                if i:
                    batch.append(seconds)
            else:
                seconds, body, _ = await timed_get(bench.http, f"/api/v1/containers/{one}/stats")
                assert body["containerId"] == one[:12], body
                if i:
                    single.append(seconds)

    direct: list[float] = []
    for _ in range(REPEATS):
        await asyncio.sleep(ROUND_GAP)
        direct.append(max(await asyncio.gather(*(direct_stats(bench, cid) for cid in ids))))
    b50, s50 = percentile(batch, 50), percentile(single, 50)
    return [
        Row("containers in every batch answer", min(sizes)),
        Row(f"single GET /containers/{{id}}/stats median ({REPEATS} calls)", s50, "s"),
        Row("single min", min(single), "s"),
        Row("single max", max(single), "s"),
        Row(f"batch GET /containers/stats median ({REPEATS} calls)", b50, "s"),
        Row("batch min", min(batch), "s"),
        Row("batch median / single median", b50 / s50, "×"),
        Row(
            f"direct Engine one-shot stats of all {CONTAINERS} at once, median ({REPEATS} rounds)",
            percentile(direct, 50),
            "s",
        ),
        Row("batch max", max(batch), "s"),
        Row("batch max ÷ direct Engine median", max(batch) / percentile(direct, 50), "×", TARGET_RATIO),
    ]


if __name__ == "__main__":
    run_script(f"batch stats of {CONTAINERS} running linked containers vs one", measure)
