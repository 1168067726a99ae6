"""Docker's start event to the client's ``container.state`` message.

One WebSocket client, in the bench process, reads ``/api/v1/ws`` (every message decoded); next to
it the bench holds the Engine's own event stream open (``GET /events`` over the unix socket,
container start and die events of the one container used). The container (busybox ``sleep``, not
linked to an app) is started on the Engine, the bench waits for the client's
``container.state`` ``running``, stops it (``t=0``), waits for ``exited``, and so on: 3 warm-up
rounds, then 100 measured.

Latency of a start: the client's receipt of ``container.state`` (running) minus the bench's
receipt of the same start event straight from the Engine, both read with ``perf_counter()`` in the
one event loop of the bench process. The gateway's own path (daemon → its event stream → watcher →
hub → client) is measured against the same daemon → bench path, so the daemon's delivery cancels
out. p99 ≤ 20 ms. Also reported against the event's own ``timeNano`` (the daemon's clock when it
emitted the event), for both receivers, and the same latency for the stop ("die" → ``exited``).
The gateway serves plain HTTP (``NEKZUS_SERVER__TLS__MODE=off``; ``--gateway-env`` overrides it).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from bench._harness import Bench, EngineEvents, Row, ms, percentile, run_script

WARMUP = 3
STARTS = 100
TARGET_P99_MS = 20.0
TIMEOUT = 30.0
GATEWAY_ENV = {"NEKZUS_SERVER__TLS__MODE": "off"}


class StateReader:
    """A WebSocket client's ``container.state`` messages of one container, stamped on receipt."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, cid: str) -> None:
        self._ws = ws
        self._cid = cid[:12]
        self._queue: asyncio.Queue[tuple[float, int, dict[str, Any]]] = asyncio.Queue()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self._ws:
            doc = json.loads(msg.data)
            arrived, wall = time.perf_counter(), time.time_ns()
            data = doc["data"]
            # A late "created" (the container was made just before the client connected) is skipped.
            if (
                doc["type"] == "container.state"
                and data["containerId"] == self._cid
                and data["state"] != "created"
            ):
                self._queue.put_nowait((arrived, wall, data))

    async def next(self, state: str) -> tuple[float, int]:
        async with asyncio.timeout(TIMEOUT):
            arrived, wall, data = await self._queue.get()
        if data["state"] != state:
            raise AssertionError(f"expected container.state {state}, got {data}")
        return arrived, wall


async def measure(bench: Bench) -> list[Row]:
    engine = bench.engine
    cid = await engine.create("bench-event-latency")
    start_latency: list[float] = []
    die_latency: list[float] = []
    ws_from_nano: list[float] = []
    direct_from_nano: list[float] = []
    # The wall clock at a perf_counter() reading, to compare the Engine's receipt with timeNano.
    wall_offset = time.time() - time.perf_counter()

    async with (
        bench.http.ws_connect("/api/v1/ws") as ws,
        EngineEvents(engine, cid, ("start", "die"), TIMEOUT) as events,
    ):
        hello = json.loads((await ws.receive()).data)
        if hello["type"] != "hello":
            raise AssertionError(f"expected hello, got {hello}")
        states = StateReader(ws, cid)
        try:
            for index in range(WARMUP + STARTS):
                await engine.start(cid)
                direct, doc = await events.next("start")
                received, received_wall = await states.next("running")
                await engine.stop(cid)
                direct_die, _ = await events.next("die")
                received_die, _ = await states.next("exited")
                if index < WARMUP:
                    continue
                start_latency.append(received - direct)
                die_latency.append(received_die - direct_die)
                ws_from_nano.append((received_wall - int(doc["timeNano"])) / 1e9)
                direct_from_nano.append(direct + wall_offset - int(doc["timeNano"]) / 1e9)
        finally:
            states.task.cancel()

    return [
        Row("starts measured", len(start_latency)),
        Row("Engine timeNano → bench reads the start event, p50", ms(percentile(direct_from_nano, 50)), "ms"),
        Row("Engine timeNano → bench reads the start event, p99", ms(percentile(direct_from_nano, 99)), "ms"),
        Row("Engine timeNano → client's container.state, p50", ms(percentile(ws_from_nano, 50)), "ms"),
        Row("Engine timeNano → client's container.state, p99", ms(percentile(ws_from_nano, 99)), "ms"),
        Row("die event → client's container.state exited, p50", ms(percentile(die_latency, 50)), "ms"),
        Row("die event → client's container.state exited, p99", ms(percentile(die_latency, 99)), "ms"),
        Row("start event → client's container.state running, min", ms(min(start_latency)), "ms"),
        Row("start event → client's container.state running, p50", ms(percentile(start_latency, 50)), "ms"),
        Row("start event → client's container.state running, max", ms(max(start_latency)), "ms"),
        Row(
            f"start event → client's container.state running, p99 ({STARTS} starts)",
            ms(percentile(start_latency, 99)),
            "ms",
            TARGET_P99_MS,
        ),
    ]


if __name__ == "__main__":
    run_script("Docker start event → WebSocket container.state", measure, GATEWAY_ENV)
