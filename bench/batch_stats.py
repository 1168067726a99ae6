"""Batch stats of 20 running linked containers vs the stats of one.

The gateway samples the batch concurrently, and answers each container against its own previous
sample (a recent one answers while the Engine's next collector pass is away), so after the first
round a batch of 20 answers in a fraction of a second, like one container: target ≤ 0.5 s (the
ratio to a single call, a few milliseconds, is informative). Calls are interleaved, batch and
single taking turns at going first.
"""

from __future__ import annotations

from _harness import Bench, Row, percentile, run_script, timed_get

CONTAINERS = 20
REPEATS = 5
TARGET_BATCH = 0.5


async def measure(bench: Bench) -> list[Row]:
    ids = await bench.engine.create_many(
        CONTAINERS, "bench-stats", start=True, labels={"nekzus.enable": "true"}
    )
    expected = {cid[:12] for cid in ids}
    batch: list[float] = []
    single: list[float] = []
    sizes: list[int] = []
    for i in range(REPEATS + 1):  # round 0 warms both up and is not counted
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

    b50, s50 = percentile(batch, 50), percentile(single, 50)
    return [
        Row("containers in every batch answer", min(sizes)),
        Row(f"single GET /containers/{{id}}/stats median ({REPEATS} calls)", s50, "s"),
        Row("single min", min(single), "s"),
        Row("single max", max(single), "s"),
        Row(f"batch GET /containers/stats median ({REPEATS} calls)", b50, "s"),
        Row("batch min", min(batch), "s"),
        Row("batch median / single median", b50 / s50, "×"),
        Row("batch max", max(batch), "s", TARGET_BATCH),
    ]


if __name__ == "__main__":
    run_script(f"batch stats of {CONTAINERS} running linked containers vs one", measure)
