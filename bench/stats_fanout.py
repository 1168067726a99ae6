"""Live stats of 50 containers at 1 s to 200 WebSocket clients: what it costs the gateway and the Engine.

50 running containers; 200 connections to ``/api/v1/ws`` held by two client worker processes
(this file run with ``--worker``), each connection sending ``container.stats.subscribe`` for all
50 containers at ``interval: 1`` and counting the ``container.stats`` messages it receives (by
their prefix, not decoded: the clients must not eat the CPU the gateway is measured with).

Two windows of ``WINDOW`` seconds, side by side on one machine:

1. **the Engine alone**: this process holds the 50 containers' ``stats?stream=true`` requests
   itself and reads them (what the gateway's samplers ask of the Engine); the daemon's CPU.
2. **through the gateway**: the 200 clients subscribed; the gateway's CPU (``/proc/PID/stat``),
   the daemon's and the client workers' CPU, and the messages delivered.

The gateway samples each container once however many clients follow it, so the daemon's CPU in
window 2 should be that of window 1 (target: ≤ 1.5×), and the gateway's CPU % is the fan-out's
cost: up to 10,000 messages a second (target: ≤ 50 % of one CPU). Each client should get every
sample the Engine takes: delivered ÷ (200 × the samples a second of window 1) ≥ 0.9 (on a busy
host the Engine's collector takes more than a second a pass, so fewer than 50 a second).
The stats history is turned off (``NEKZUS_STATS__HISTORY_MINUTES=0``) so that only the fan-out
is measured, and the gateway serves plain HTTP with its WebSocket upgrade limit raised.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import aiohttp

from bench._harness import Bench, Row, cpu_seconds, raise_open_files, run_script

CONTAINERS = 50
CLIENTS = 200
CLIENT_PROCESSES = 2
WINDOW = 20.0
SETTLE = 3.0  # seconds after the last subscription before the window opens
TARGET_GATEWAY_CPU_PERCENT = 50.0
TARGET_DAEMON_RATIO = 1.5
TARGET_DELIVERED = 0.9
STATS_PREFIX = '{"type":"container.stats","data"'
GATEWAY_ENV = {
    "NEKZUS_SERVER__TLS__MODE": "off",
    "NEKZUS_STATS__HISTORY_MINUTES": "0",
    "NEKZUS_RATELIMIT__WEBSOCKET__PER_MINUTE": "6000000",
    "NEKZUS_RATELIMIT__WEBSOCKET__BURST": "100000",
}
raise_open_files(2 * CLIENTS + 2048)


# -- the client worker ---------------------------------------------------------------------------


async def _client(
    session: aiohttp.ClientSession, url: str, ids: list[str], counts: list[int], ready: asyncio.Queue[bool]
) -> None:
    index = len(counts)
    counts.append(0)
    async with session.ws_connect(url, max_msg_size=0) as ws:
        await ws.send_json(
            {"type": "container.stats.subscribe", "data": {"containerIds": ids, "interval": 1}}
        )
        subscribed = False
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            if msg.data.startswith(STATS_PREFIX):
                counts[index] += 1
            elif not subscribed and '"container.stats.subscribed"' in msg.data:
                subscribed = True
                ok = len(json.loads(msg.data)["data"]["containerIds"]) == len(ids)
                ready.put_nowait(ok)


async def _worker(url: str, count: int, ids: list[str]) -> None:
    """Hold ``count`` subscribed connections; answer the total received on each line of stdin."""
    counts: list[int] = []
    ready: asyncio.Queue[bool] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = [asyncio.create_task(_client(session, url, ids, counts, ready)) for _ in range(count)]
        subscribed = [await ready.get() for _ in range(count)]
        print(json.dumps({"subscribed": sum(subscribed)}), flush=True)
        while (await loop.run_in_executor(None, sys.stdin.readline)).strip() not in ("close", ""):
            print(json.dumps({"messages": sum(counts)}), flush=True)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Workers:
    """The client worker processes, each asked for its count in turn."""

    def __init__(self, url: str, ids: list[str]) -> None:
        self.url, self.ids = url, ids
        self.procs: list[asyncio.subprocess.Process] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    async def __aenter__(self) -> Workers:
        per = CLIENTS // CLIENT_PROCESSES
        for _ in range(CLIENT_PROCESSES):
            self.procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench.stats_fanout",
                    "--worker",
                    self.url,
                    str(per),
                    *self.ids,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
            )
        for proc in self.procs:
            doc = await self._answer(proc)
            if doc["subscribed"] != per:
                raise AssertionError(
                    f"{doc['subscribed']} of {per} connections subscribed to every container"
                )
        return self

    async def _answer(self, proc: asyncio.subprocess.Process) -> dict[str, Any]:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        if not line:
            raise AssertionError("a client worker died")
        doc: dict[str, Any] = json.loads(line)
        return doc

    async def messages(self) -> int:
        total = 0
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(b"count\n")
            total += (await self._answer(proc))["messages"]
        return total

    async def __aexit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.stdin is not None and proc.returncode is None:
                proc.stdin.write(b"close\n")
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


# -- the measurement -----------------------------------------------------------------------------


async def _read_stream(session: aiohttp.ClientSession, path: str, samples: list[int]) -> None:
    async with session.get(
        path, params={"stream": "true"}, timeout=aiohttp.ClientTimeout(total=None)
    ) as resp:
        async for _ in resp.content:
            samples[0] += 1


async def engine_alone(bench: Bench, ids: list[str], daemon: int | None) -> tuple[float, int]:
    """The daemon's CPU seconds over the window while this process reads the 50 streams; samples read."""
    engine = bench.engine
    samples = [0]
    tasks = [
        asyncio.create_task(_read_stream(engine.session, f"{engine.prefix}/containers/{cid}/stats", samples))
        for cid in ids
    ]
    try:
        await asyncio.sleep(SETTLE)
        before, read = (cpu_seconds(daemon) if daemon else 0.0), samples[0]
        await asyncio.sleep(WINDOW)
        return (cpu_seconds(daemon) - before if daemon else float("nan")), samples[0] - read
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def measure(bench: Bench) -> list[Row]:
    engine = bench.engine
    full_ids = await engine.create_many(CONTAINERS, "bench-stats", start=True)
    ids = [cid[:12] for cid in full_ids]
    daemon = engine.daemon_pid()
    alone_daemon, alone_samples = await engine_alone(bench, ids, daemon)

    url = bench.gateway.url.replace("http", "ws", 1) + "/api/v1/ws"
    async with Workers(url, ids) as workers:
        await asyncio.sleep(SETTLE)
        gateway_before = cpu_seconds(bench.gateway.pid)
        daemon_before = cpu_seconds(daemon) if daemon else 0.0
        workers_before = sum(cpu_seconds(pid) for pid in workers.pids)
        messages_before = await workers.messages()
        began = time.perf_counter()
        await asyncio.sleep(WINDOW)
        messages = await workers.messages() - messages_before
        wall = time.perf_counter() - began
        gateway_cpu = cpu_seconds(bench.gateway.pid) - gateway_before
        daemon_cpu = (cpu_seconds(daemon) - daemon_before) if daemon else float("nan")
        workers_cpu = sum(cpu_seconds(pid) for pid in workers.pids) - workers_before

    # What each client can get is what the Engine samples: on a busy host its collector passes
    # take longer than a second, so the Engine's own rate of window 1 is the reference.
    expected = CLIENTS * alone_samples / WINDOW * wall
    load = os.getloadavg()
    return [
        Row(f"load average over the last minute ({os.cpu_count()} CPUs)", load[0]),
        Row("Engine alone: samples read from the 50 streams per second", alone_samples / WINDOW, "/s"),
        Row("Engine alone: daemon CPU", 100 * alone_daemon / WINDOW, "%"),
        Row("through the gateway: daemon CPU", 100 * daemon_cpu / wall, "%"),
        Row(
            "daemon CPU through the gateway ÷ Engine alone (one stream per container)",
            (daemon_cpu / wall) / (alone_daemon / WINDOW) if alone_daemon else float("nan"),
            "×",
            TARGET_DAEMON_RATIO,
        ),
        Row("client workers' CPU", 100 * workers_cpu / wall, "%"),
        Row("container.stats messages delivered per second", messages / wall, "/s"),
        Row(
            "delivered ÷ (200 clients × the Engine's own samples a second)",
            messages / expected,
            "",
            TARGET_DELIVERED,
            at_least=True,
        ),
        Row(
            "gateway CPU per delivered message",
            1e6 * gateway_cpu / messages if messages else float("nan"),
            "µs",
        ),
        Row(
            f"gateway CPU, {CONTAINERS} containers at 1 s to {CLIENTS} clients",
            100 * gateway_cpu / wall,
            "%",
            TARGET_GATEWAY_CPU_PERCENT,
        ),
        Row(
            "gateway CPU ÷ the daemon's CPU for the 50 streams alone",
            (gateway_cpu / wall) / (alone_daemon / WINDOW) if alone_daemon else float("nan"),
            "×",
        ),
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        asyncio.run(_worker(sys.argv[2], int(sys.argv[3]), sys.argv[4:]))
    else:
        run_script(
            f"live stats: {CONTAINERS} containers at 1 s to {CLIENTS} WebSocket clients", measure, GATEWAY_ENV
        )
