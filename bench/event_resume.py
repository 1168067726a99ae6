"""Resuming the event stream: 5,000 missed events replayed to one client, beside the same 5,000 sent
live, and the replay buffer's memory per 10,000 events.

The gateway runs in this process (``create_app`` on the Docker runtime of ``--docker-host``, served
on a loopback port with plain HTTP) so that its events can be published on its bus directly, as
fast as the bus takes them: the Engine would need minutes of container actions for 5,000 events.
The client is a child process (aiohttp): it connects, takes the ``seq`` of a marker event and
answers ``ready``; for the **live** pass the bench publishes 5,000 events while it reads them; for
the **resume** pass it disconnects, the bench publishes 5,000 events, and the client reconnects
with ``resume`` and reads until ``resumed``. Both passes count every event and check that the
``seq`` goes up by one. Time is from the client's send (of ``resume``; of ``go`` for live) to its
last event; gateway CPU is this process's CPU over the same window (nothing else runs in it then).
``websocket.event_queue`` is raised to 10,000 so the live pass is not closed for overflow.

Memory: ``tracemalloc`` over 10,000 ``container.state`` events broadcast through a ``Hub`` with no
connection: the buffer's own entries and ring, and the message texts it keeps (the same strings the
hub sends, not copies). Target: ≤ 10 MB per 10,000 events, resume of 5,000 ≤ 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import time
import tracemalloc
from typing import Any

import aiohttp
from aiohttp import web

from bench._harness import Row, all_passed, free_port, print_table
from nekzus.config import Config
from nekzus.http.app import create_app
from nekzus.keys import EVENT_BUS
from nekzus.realtime.events import Event
from nekzus.realtime.hub import Hub

EVENTS = 5_000
MEMORY_EVENTS = 10_000
TARGET_RESUME_S = 2.0
TARGET_MEMORY_MB = 10.0
STATE = {
    "containerId": "4f2a9c1e7b3d",
    "name": "bench-web-frontend-1",
    "runtime": "docker",
    "namespace": "",
    "state": "running",
    "previousState": "exited",
    "timestamp": 1767200000,
}


# -- the client (a child process) ----------------------------------------------------------------


async def client(url: str) -> None:
    """Reads commands on stdin (``live``, ``resume``), answers one JSON line per pass on stdout."""
    lines = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(lines), sys.stdin)
    async with aiohttp.ClientSession() as session:
        while command := (await lines.readline()).decode().strip():
            ws = await session.ws_connect(url, max_msg_size=0)
            await _until(ws, "hello")
            marker = await _until(ws, "bench.marker", announce=True)
            epoch, seq = marker["data"]["epoch"], marker["data"]["seq"]
            if command == "resume":
                await ws.close()
                _say({"ready": True})
                await lines.readline()  # the bench has published
                ws = await session.ws_connect(url, max_msg_size=0)
                await _until(ws, "hello")
                started = time.perf_counter()
                await ws.send_json({"type": "resume", "data": {"epoch": epoch, "seq": seq}})
                until = "resumed"
            else:
                _say({"ready": True})
                await lines.readline()
                started = time.perf_counter()
                until = "bench.end"
            count, last = 0, seq
            async for msg in ws:
                message = json.loads(msg.data)
                if message["type"] == until:
                    break
                if message["type"] == "bench.tick":
                    assert message["data"]["seq"] == last + 1, "a gap or a duplicate"
                    count, last = count + 1, message["data"]["seq"]
            _say({"seconds": time.perf_counter() - started, "events": count})
            await ws.close()


async def _until(ws: aiohttp.ClientWebSocketResponse, message_type: str, announce: bool = False) -> Any:
    if announce:
        _say({"connected": True})
    async for msg in ws:
        message = json.loads(msg.data)
        if message["type"] == message_type:
            return message
    raise ConnectionError("closed")


def _say(what: dict[str, Any]) -> None:
    print(json.dumps(what), flush=True)


# -- the bench -----------------------------------------------------------------------------------


async def _read(child: asyncio.subprocess.Process) -> dict[str, Any]:
    assert child.stdout is not None
    line = await asyncio.wait_for(child.stdout.readline(), 120)
    if not line:
        raise RuntimeError("the client process ended")
    answer: dict[str, Any] = json.loads(line)
    return answer


async def _tell(child: asyncio.subprocess.Process, text: str) -> None:
    assert child.stdin is not None
    child.stdin.write(f"{text}\n".encode())
    await child.stdin.drain()


async def one_pass(app: web.Application, child: asyncio.subprocess.Process, kind: str) -> tuple[float, float]:
    """(client seconds, gateway CPU seconds) of one pass."""
    bus = app[EVENT_BUS]
    await _tell(child, kind)
    await _read(child)  # connected
    bus.publish("bench.marker", {})
    await _read(child)  # ready
    if kind == "resume":
        for i in range(EVENTS):
            bus.publish("bench.tick", {**STATE, "n": i})
    cpu = time.process_time()
    await _tell(child, "go")
    if kind == "live":
        for i in range(EVENTS):
            bus.publish("bench.tick", {**STATE, "n": i})
            if i % 100 == 99:
                await asyncio.sleep(0)  # the writers run between bits, as between real events
        bus.publish("bench.end", {})
    result = await _read(child)
    cpu = time.process_time() - cpu
    if result["events"] != EVENTS:
        raise AssertionError(f"{kind}: {result['events']} of {EVENTS} events")
    return float(result["seconds"]), cpu


def buffer_memory() -> tuple[float, float]:
    """Bytes per event held by a replay buffer of 10,000 events: in all, and without the texts."""
    hub = Hub(event_limit=256, log_limit=512, replay_events=MEMORY_EVENTS, replay_seconds=900)
    events = [Event("container.state", {**STATE, "n": i}) for i in range(MEMORY_EVENTS)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for event in events:
        hub.broadcast(event)
    gc.collect()
    total = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    texts = sum(sys.getsizeof(e.text) for e in hub.replay.since(0))
    return total / MEMORY_EVENTS, (total - texts) / MEMORY_EVENTS


async def measure(docker_host: str) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="nekzus-bench-resume-") as data_dir:
        return await _measure(docker_host, data_dir)


async def _measure(docker_host: str, data_dir: str) -> list[Row]:
    port = free_port()
    config = Config(
        server={"tls": {"mode": "off"}, "data_dir": data_dir},
        runtimes={"docker": {"host": docker_host}},
        websocket={"event_queue": 10_000},
        ratelimit={"enabled": False},
    )
    app = create_app(config)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.event_resume", "--client", f"http://127.0.0.1:{port}/api/v1/ws",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await one_pass(app, child, "live")  # warm-up
        live_s, live_cpu = await one_pass(app, child, "live")
        resume_s, resume_cpu = await one_pass(app, child, "resume")
    finally:
        assert child.stdin is not None
        child.stdin.close()
        await child.wait()
        await runner.cleanup()
    per_event, own = buffer_memory()
    return [
        Row(f"live: {EVENTS} events published, client has them all", live_s, "s"),
        Row("live: gateway CPU", live_cpu, "s"),
        Row(
            f"resume: {EVENTS} missed events, resume sent → client has them all",
            resume_s,
            "s",
            TARGET_RESUME_S,
        ),
        Row("resume: gateway CPU", resume_cpu, "s"),
        Row("resume ÷ live, time", resume_s / live_s, "×"),
        Row("resume ÷ live, gateway CPU", resume_cpu / live_cpu if live_cpu else float("nan"), "×"),
        Row(
            f"replay buffer, {MEMORY_EVENTS:,} container.state events",
            per_event * MEMORY_EVENTS / 1e6,
            "MB",
            TARGET_MEMORY_MB,
        ),
        Row("  per event (entry, ring slot and message text)", per_event, "B"),
        Row("  per event without the text (shared with the sends)", own, "B"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description="resume of 5,000 missed events; replay buffer memory")
    parser.add_argument("--docker-host", default="unix:///var/run/docker.sock")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        asyncio.run(client(args.client))
        return
    title = "resuming the event stream"
    rows = asyncio.run(measure(args.docker_host))
    print_table(title, rows)
    sys.exit(0 if all_passed(rows) else 1)


if __name__ == "__main__":
    main()
