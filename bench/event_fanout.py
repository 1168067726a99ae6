"""One event, 1,000 WebSocket clients: how long until every one of them has it, and what it costs.

1,000 connections to ``/api/v1/ws`` are held by a few client worker processes
(``_ws_clients.py``: every message decoded, pings answered), each connection read by its own task.
One container is then started and stopped by the bench directly on the Engine, one step after the
other: every start and every stop ("die") is one ``container.state`` broadcast to all clients. The
next step is taken once every client has the previous event. 2 warm-up events, then 100 measured.

Measured per event, in one clock (CLOCK_MONOTONIC, shared by the processes of this machine):

- **all clients have it**: the last client's receipt minus the moment the bench read the same event
  from the Engine's own event stream (``GET /events``, held open in the bench process). That
  includes the daemon → gateway delivery, the broadcast and sending 1,000 frames, and the clients'
  reading of them. p99 over the 100 events ≤ 200 ms.
- the same from the event's own ``timeNano`` (the daemon's clock when it emitted the event);
- the first client's receipt, and the spread first → last client.

Gateway CPU: ``/proc/PID/stat`` before the first and after the last measured event; delivered
``container.state`` messages per gateway CPU-second ≥ 50,000. The client workers' and the daemon's
CPU over the same window are reported too: on a 2-CPU machine the 1,000 clients' own reading
competes with the gateway, and the table says so when the clients used more CPU than the gateway.

The gateway serves plain HTTP (``NEKZUS_SERVER__TLS__MODE=off``; ``--gateway-env
NEKZUS_SERVER__TLS__MODE=auto`` measures TLS as shipped) and its WebSocket rate limit (30 upgrades
a minute, burst 10, per client address) is raised so far that 1,000 upgrades from loopback pass;
everything else is as shipped. The open-file limit is raised for the client workers.
"""

from __future__ import annotations

import os
import time

from bench._harness import (
    Bench,
    EngineEvents,
    Row,
    cpu_seconds,
    cpu_times,
    ms,
    percentile,
    raise_open_files,
    run_script,
)
from bench._ws_clients import WsClients

CLIENTS = 1_000
CLIENT_PROCESSES = 2
WARMUP_EVENTS = 2
EVENTS = 100
TARGET_P99_MS = 200.0
TARGET_PER_CPU_SECOND = 50_000.0
EVENT_TIMEOUT = 30.0  # seconds for one event to reach everyone
GATEWAY_ENV = {
    "NEKZUS_SERVER__TLS__MODE": "off",
    "NEKZUS_RATELIMIT__WEBSOCKET__PER_MINUTE": "6000000",
    "NEKZUS_RATELIMIT__WEBSOCKET__BURST": "100000",
}
EXPECTED = {"start": "running", "die": "exited"}
raise_open_files(2 * CLIENTS + 2048)  # at import: the gateway and the client workers inherit it


def _cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


async def measure(bench: Bench) -> list[Row]:
    engine = bench.engine
    cid = await engine.create("bench-fanout")
    daemon = engine.daemon_pid()
    # Wall clock minus this clock, to place receipts against the daemon's timeNano.
    wall_offset = time.time() - time.perf_counter()

    async with (
        WsClients(bench.gateway.url, bench.gateway.certificate, CLIENT_PROCESSES) as clients,
        EngineEvents(engine, cid, list(EXPECTED), EVENT_TIMEOUT) as events,
    ):
        opened, failed, open_seconds = await clients.open(CLIENTS)
        if opened != CLIENTS:
            raise AssertionError(f"{opened} of {CLIENTS} connections open ({failed} failed)")
        await clients.watch(cid[:12], EXPECTED.values())

        all_have: list[float] = []
        first_has: list[float] = []
        spread: list[float] = []
        from_time_nano: list[float] = []
        engine_to_event: list[float] = []
        delivered = 0
        gateway_cpu = workers_cpu = daemon_cpu = bench_cpu = 0.0
        gateway_user = gateway_system = 0.0
        window = 0.0
        for index in range(WARMUP_EVENTS + EVENTS):
            if index == WARMUP_EVENTS:
                window = time.perf_counter()
                gateway_user, gateway_system = cpu_times(bench.gateway.pid)
                workers_cpu = _cpu(clients.pids)
                daemon_cpu = cpu_seconds(daemon) if daemon else 0.0
                bench_cpu = cpu_seconds(os.getpid())
            action = "start" if index % 2 == 0 else "die"
            called = time.perf_counter()
            await (engine.start(cid) if action == "start" else engine.stop(cid))
            arrived, doc = await events.next(action)
            state, times = await clients.event(index, EVENT_TIMEOUT)
            if state != EXPECTED[action] or len(times) != CLIENTS:
                raise AssertionError(f"event {index}: {len(times)} clients got {state!r} for {action}")
            if index < WARMUP_EVENTS:
                continue
            delivered += len(times)
            last, first = max(times), min(times)
            all_have.append(last - arrived)
            first_has.append(first - arrived)
            spread.append(last - first)
            from_time_nano.append(last + wall_offset - int(doc["timeNano"]) / 1e9)
            engine_to_event.append(arrived - called)
        window = time.perf_counter() - window
        user, system = cpu_times(bench.gateway.pid)
        gateway_user, gateway_system = user - gateway_user, system - gateway_system
        gateway_cpu = gateway_user + gateway_system
        workers_cpu = _cpu(clients.pids) - workers_cpu
        daemon_cpu = (cpu_seconds(daemon) - daemon_cpu) if daemon else float("nan")
        bench_cpu = cpu_seconds(os.getpid()) - bench_cpu
        status = await clients.status()

    if workers_cpu > gateway_cpu:
        print(
            f"NOTE: the {CLIENT_PROCESSES} client processes used more CPU ({workers_cpu:.2f} s) than the "
            f"gateway ({gateway_cpu:.2f} s) over the {EVENTS} events: on this {os.cpu_count()}-CPU machine "
            "the client side is the bottleneck, and the latencies include the clients' own reading.",
            flush=True,
        )
    return [
        Row("connections open", status["open"]),
        Row("connections closed by the gateway meanwhile", status["closed"], target=0),
        Row(f"time to open {CLIENTS} connections (each to its hello)", open_seconds, "s"),
        Row(f"client worker processes (CPUs on this machine: {os.cpu_count()})", CLIENT_PROCESSES),
        Row("container.state messages delivered", delivered),
        Row("Engine call → bench reads the event, p50", ms(percentile(engine_to_event, 50)), "ms"),
        Row("Engine event → first client has it, p50", ms(percentile(first_has, 50)), "ms"),
        Row("first → last client, p50", ms(percentile(spread, 50)), "ms"),
        Row("first → last client, p99", ms(percentile(spread, 99)), "ms"),
        Row("Engine event → all clients have it, p50", ms(percentile(all_have, 50)), "ms"),
        Row("Engine event → all clients have it, max", ms(max(all_have)), "ms"),
        Row("event timeNano → all clients have it, p50", ms(percentile(from_time_nano, 50)), "ms"),
        Row("event timeNano → all clients have it, p99", ms(percentile(from_time_nano, 99)), "ms"),
        Row(
            f"Engine event → all {CLIENTS} clients have it, p99 ({EVENTS} events)",
            ms(percentile(all_have, 99)),
            "ms",
            TARGET_P99_MS,
        ),
        Row(f"wall time of the {EVENTS} events", window, "s"),
        Row("daemon CPU over the events", daemon_cpu, "s"),
        Row("bench process CPU over the events (Engine calls and events)", bench_cpu, "s"),
        Row("client workers' CPU over the events", workers_cpu, "s"),
        Row("client workers' CPU per message", 1e6 * workers_cpu / delivered, "µs"),
        Row("gateway CPU over the events: user", gateway_user, "s"),
        Row("gateway CPU over the events: system (kernel: socket sends)", gateway_system, "s"),
        Row("gateway CPU per delivered message", 1e6 * gateway_cpu / delivered, "µs"),
        Row(
            "delivered messages per gateway CPU-second",
            delivered / gateway_cpu if gateway_cpu else float("inf"),
            "msg/s",
            TARGET_PER_CPU_SECOND,
            at_least=True,
        ),
    ]


if __name__ == "__main__":
    run_script(f"event fan-out to {CLIENTS} WebSocket clients", measure, GATEWAY_ENV)
