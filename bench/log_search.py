"""Log search: the gateway's ``GET /api/v1/containers/{id}/logs?search=`` over a 1,000,000-line log,
against ``docker logs <id> | grep -c TERM`` (the Docker CLI on the same daemon, in a shell pipe).

One container (busybox, no network) writes ``seq 1 1000000`` with every hundredth line ``N TERM``
and the others ``N x``: exactly 10,000 lines hold TERM. It is waited for until it has exited.
Then, in rounds, one after the other:

- **grep**: ``sh -c 'docker -H <socket> logs <id> | grep -c TERM'``, which must print 10000;
- **search**: ``?search=TERM&caseSensitive=true&limit=10000`` (case-sensitive, as grep is): 10,000
  matches fit the limit, so the whole log is read (``scanned`` must be 1,000,000, ``truncated``
  false) and the count must match;
- **regex**: ``?search=^[0-9]+00 TERM$&regex=true&limit=10000``, the same 10,000 lines;
- **invert**: ``?search=x&invert=true&caseSensitive=true&limit=10000``, the lines without "x",
  the same 10,000 again.

Times run from the start of the call to the last byte of its answer. Reported: the median time of
each over the rounds, the speed ratio search / grep (target ≥ 0.5: the search takes at most twice
as long), the gateway's RSS before, at its peak (psutil, sampled every 10 ms during each search)
and after, with its growth (target < 50 MB), and the p99 latency of ``GET /api/v1/containers`` from
a second client, idle and while a search runs (target ≤ 2× idle: a search does not hold up others),
and, to tell the gateway's share from the machine's, while the grep pipeline runs (the daemon just
as busy, the gateway idle).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from statistics import median

import aiohttp
import psutil

from bench._harness import Bench, Row, ms, percentile, run_script

LINES = 1_000_000
MATCHES = 10_000
ROUNDS = 3
TARGET_RATIO = 0.5
TARGET_RSS_MB = 50.0
TARGET_LIST_SLOWDOWN = 2.0
LIST_SAMPLES = 200
GATEWAY_ENV = {"NEKZUS_SERVER__TLS__MODE": "off"}
WRITER = f'seq 1 {LINES} | awk \'{{ if ($1 % 100 == 0) print $1 " TERM"; else print $1 " x" }}\''
SEARCHES = {
    "search": {"search": "TERM", "caseSensitive": "true"},
    "regex": {"search": "^[0-9]+00 TERM$", "regex": "true"},
    "invert": {"search": "x", "invert": "true", "caseSensitive": "true"},
}


async def _grep(bench: Bench, cid: str) -> float:
    socket = bench.gateway.docker_host
    began = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", f"docker -H {socket} logs {cid} | grep -c TERM", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    seconds = time.perf_counter() - began
    if int(out.decode().strip() or 0) != MATCHES:
        raise AssertionError(f"grep counted {out.decode().strip()!r} lines; expected {MATCHES}")
    return seconds


async def _search(bench: Bench, cid: str, params: dict[str, str]) -> float:
    began = time.perf_counter()
    query = {**params, "limit": str(MATCHES)}
    async with bench.http.get(f"/api/v1/containers/{cid[:12]}/logs", params=query) as resp:
        body = await resp.json()
    seconds = time.perf_counter() - began
    if resp.status != 200:
        raise AssertionError(f"search {params} answered {resp.status}: {body}")
    found = body["matches"]
    if (len(found), body["scanned"], body["truncated"]) != (MATCHES, LINES, False):
        raise AssertionError(
            f"search {params}: {len(found)} matches of {body['scanned']} lines, truncated "
            f"{body['truncated']}; expected {MATCHES} of {LINES}, not truncated"
        )
    if found[-1]["line"] != f"{LINES} TERM" or found[-1]["lineNumber"] != LINES:
        raise AssertionError(f"search {params}: the last match is {found[-1]}")
    return seconds


async def _sampled(pid: int, work: Callable[[], Awaitable[float]]) -> tuple[float, int]:
    """(seconds the work took, peak RSS in bytes of ``pid`` while it ran, sampled every 10 ms)."""
    process = psutil.Process(pid)
    peak = process.memory_info().rss
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    try:
        seconds = await work()
    finally:
        done.set()
        await sampler
    return seconds, max(peak, process.memory_info().rss)


async def _list_latencies(
    session: aiohttp.ClientSession, enough: Callable[[list[float]], bool]
) -> list[float]:
    """Times of ``GET /api/v1/containers``, one after the other, until ``enough(times)`` (at least 20)."""
    times: list[float] = []
    while len(times) < 20 or not enough(times):
        began = time.perf_counter()
        async with session.get("/api/v1/containers") as resp:
            await resp.read()
            if resp.status != 200:
                raise AssertionError(f"the list answered {resp.status}")
        times.append(time.perf_counter() - began)
    return times


async def measure(bench: Bench) -> list[Row]:
    cid = await bench.engine.create("bench-log-search", cmd=("sh", "-c", WRITER))
    await bench.engine.start(cid)
    if (code := await bench.engine.wait(cid)) != 0:
        raise AssertionError(f"the log writer exited {code}")
    pid = bench.gateway.pid
    gateway = psutil.Process(pid)
    # One search first, so the RSS before is that of a gateway that has served one.
    await _search(bench, cid, SEARCHES["search"])
    rss_before = gateway.memory_info().rss
    times: dict[str, list[float]] = {"grep": [], **{name: [] for name in SEARCHES}}
    peak = float(rss_before)
    for _ in range(ROUNDS):
        times["grep"].append(await _grep(bench, cid))
        for name, params in SEARCHES.items():
            took, top = await _sampled(pid, functools.partial(_search, bench, cid, params))
            times[name].append(took)
            peak = max(peak, top)
        print("  " + "  ".join(f"{name} {ts[-1]:.2f} s" for name, ts in times.items()), flush=True)
    rss_after = gateway.memory_info().rss

    async with bench.gateway.session() as other:
        idle = await _list_latencies(other, lambda times: len(times) >= LIST_SAMPLES)
        # The daemon as busy as during a search, the gateway idle: what the CPU they share costs.
        grep = asyncio.create_task(_grep(bench, cid))
        daemon_busy = await _list_latencies(other, lambda _: grep.done())
        await grep
        search = asyncio.create_task(_search(bench, cid, SEARCHES["search"]))
        busy = await _list_latencies(other, lambda _: search.done())
        await search

    seconds = {name: median(ts) for name, ts in times.items()}
    mib = 1 << 20
    rows = [
        Row(f"log lines ({MATCHES:,} hold TERM), each search {ROUNDS}× (median)", LINES),
        Row("docker logs | grep -c TERM", seconds["grep"], "s"),
    ]
    rows += [Row(f"gateway {name}: {SEARCHES[name]}", seconds[name], "s") for name in SEARCHES]
    rows += [
        Row("search speed / grep speed", seconds["grep"] / seconds["search"], "", TARGET_RATIO, True),
        Row("regex speed / grep speed", seconds["grep"] / seconds["regex"], ""),
        Row("invert speed / grep speed", seconds["grep"] / seconds["invert"], ""),
        Row("gateway RSS before", rss_before / mib, "MiB"),
        Row("gateway RSS peak during the searches", peak / mib, "MiB"),
        Row("gateway RSS after", rss_after / mib, "MiB"),
        Row("gateway RSS growth (peak - before)", (peak - rss_before) / 1e6, "MB", TARGET_RSS_MB),
        Row("GET /containers p99, idle", ms(percentile(idle, 99)), "ms"),
        Row(
            f"GET /containers p99, during docker logs | grep ({len(daemon_busy)} requests)",
            ms(percentile(daemon_busy, 99)),
            "ms",
        ),
        Row(f"GET /containers p99, during a search ({len(busy)} requests)", ms(percentile(busy, 99)), "ms"),
        Row("GET /containers p50, idle", ms(percentile(idle, 50)), "ms"),
        Row("GET /containers p50, during a search", ms(percentile(busy, 50)), "ms"),
        Row(
            "GET /containers p99 during a search / idle",
            percentile(busy, 99) / percentile(idle, 99),
            "",
            TARGET_LIST_SLOWDOWN,
        ),
    ]
    return rows


if __name__ == "__main__":
    run_script(f"log search over {LINES:,} lines against docker logs | grep -c", measure, GATEWAY_ENV)
