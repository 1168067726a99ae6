"""Memory the rate limiter holds for 1,000 distinct clients, each with a full container bucket.

In-process, no daemon and no gateway: ``nekzus.security.ratelimit.RateLimiter`` with the shipped settings
(container pool 30/min with a burst of 20, ``memory://`` storage). 1,000 client keys as the
gateway makes them (``ip:10.x.y.z`` for most, ``sub:<token subject>`` for some) each hit the
container pool 20 times, round-robin: every bucket ends full, the most the moving window keeps
per client (one timestamp entry per request for 40 s). Two passes, each with a fresh limiter:

- process RSS (VmRSS of /proc/self/status) and the time per hit, with nothing else allocating;
- Python allocations with tracemalloc, the precise figure (tracemalloc slows allocation and keeps
  bookkeeping of its own, so it stays out of the first pass).

Before each baseline a few warm-up keys run through the same path; after the hits the limiter's
timed expiry sweep runs once over every key (nothing has expired yet, so it frees nothing: the
figure is its cost), then ``gc.collect()``. Growth = after − before. Target: ≤ 5 MB (10⁶ bytes)
for each figure.
"""

from __future__ import annotations

import gc
import os
import random
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench._harness import Row, proc_status_mib, run_local_script
from nekzus.config import RateLimitConfig
from nekzus.security.ratelimit import RateLimiter, SweptMemoryStorage

KEYS = 1000
SUBJECTS = 50  # token subjects among the keys; the rest are client addresses
HITS = RateLimitConfig().containers.burst  # 20 hits per key: every bucket ends full
WINDOW = RateLimitConfig().containers.window_seconds  # 40 s: how long each entry is kept
WARMUP_KEYS = 10
POOL = "containers"
TARGET_MB = 5.0
TOP_SITES = 5
MB = 1_000_000


def client_keys(count: int = KEYS, subjects: int = SUBJECTS, seed: int = 1) -> list[str]:
    """Distinct limiter keys as ``ratelimit.client_key`` makes them (addresses drawn from 10/8)."""
    rng = random.Random(seed)
    addresses: set[str] = set()
    while len(addresses) < count - subjects:
        addresses.add(f"ip:10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}")
    return [f"sub:device-{i:04d}" for i in range(subjects)] + sorted(addresses)


def rss_bytes() -> int:
    return round(proc_status_mib(os.getpid())["VmRSS"] * 1024 * 1024)


def _sweep(limiter: RateLimiter) -> float:
    """One pass of the limiter's timed expiry sweep over every key; answers its seconds."""
    storage = limiter._storage
    assert isinstance(storage, SweptMemoryStorage)
    start = time.perf_counter()
    storage.sweep(time.time())
    return time.perf_counter() - start


async def _fill(limiter: RateLimiter, keys: Sequence[str]) -> tuple[float, int]:
    """``HITS`` rounds over ``keys``; answers the seconds taken and how many hits were refused."""
    refused = 0
    start = time.perf_counter()
    for _ in range(HITS):
        for key in keys:
            decision = await limiter.hit(POOL, key)
            refused += not decision.allowed
    return time.perf_counter() - start, refused


@dataclass
class Pass:
    growth: int  # bytes, after − before
    hits_seconds: float
    refused: int
    sweep_seconds: float


async def _one_pass(
    keys: Sequence[str], memory: Callable[[], int], observe: Callable[[], object] = lambda: None
) -> Pass:
    """A fresh limiter, warmed up; ``memory()`` before and after ``keys`` fill their buckets.

    ``observe()`` runs just before the first reading and just after the second, while the limiter
    is alive (a tracemalloc snapshot: the first one then counts in neither reading)."""
    limiter = RateLimiter(RateLimitConfig())
    try:
        await _fill(limiter, [f"ip:192.0.2.{i}" for i in range(WARMUP_KEYS)])
        gc.collect()
        observe()
        before = memory()
        seconds, refused = await _fill(limiter, keys)
        sweep = _sweep(limiter)
        gc.collect()
        after = memory()
        observe()
    finally:
        await limiter.close()
    return Pass(after - before, seconds, refused, sweep)


async def measure() -> list[Row]:
    keys = client_keys()
    assert len(set(keys)) == KEYS
    rss = await _one_pass(keys, rss_bytes)

    snapshots: list[tracemalloc.Snapshot] = []
    tracemalloc.start()
    try:
        traced = await _one_pass(
            keys,
            lambda: tracemalloc.get_traced_memory()[0],
            lambda: snapshots.append(tracemalloc.take_snapshot()),
        )
    finally:
        tracemalloc.stop()
    first, last = snapshots
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    top = last.filter_traces(ignore).compare_to(first.filter_traces(ignore), "lineno")[:TOP_SITES]
    print("largest growth by allocation site (tracemalloc):")
    for stat in top:
        print(f"  {stat}")

    hits = KEYS * HITS
    assert rss.refused == traced.refused == 0, "a bucket refused a hit below its burst"
    return [
        Row(f"client keys ({SUBJECTS} subjects, {KEYS - SUBJECTS} addresses)", KEYS),
        Row(f"hits per key ({POOL} pool: burst {HITS} in {WINDOW} s)", HITS),
        Row("time per hit (mean, back to back)", rss.hits_seconds / hits * 1e6, "µs"),
        Row(f"expiry sweep over {KEYS + WARMUP_KEYS} keys", rss.sweep_seconds * 1000, "ms"),
        Row("Python allocations per key (tracemalloc)", traced.growth / KEYS, "B"),
        Row("Python allocation growth (tracemalloc)", traced.growth / MB, "MB", TARGET_MB),
        Row("process RSS growth (VmRSS)", rss.growth / MB, "MB", TARGET_MB),
    ]


if __name__ == "__main__":
    run_local_script(f"rate limiter memory, {KEYS} client keys with full buckets", measure)
