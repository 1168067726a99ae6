"""Log alerts: the lines per second one log-pattern rule's follower keeps up with, for one container
writing as fast as it can, against the Engine's own log endpoint read raw.

The gateway runs with one log rule (``pattern: "^done [0-9]+$"``, on a bench label), so its one
follower per container strips each line's time stamp and runs the RE2 program over every block.
In rounds, two fresh containers each run ``seq 1 1000000; echo done 1`` (busybox, no network):

- **follower**: the container is started and the time runs until the gateway's ``alert.firing``
  for it reaches a WebSocket client in the bench process: the follower opened its stream on the
  container's start event, read every line behind the writer, and matched the last one;
- **raw**: the container is started and the bench process reads its log endpoint with the
  follower's query (stdout, stderr, ``follow=1``, ``timestamps=1``) in HTTP/1.0 on a plain unix
  socket, counting newlines in a blocking loop, to the stream's end when the container exits
  (bench/log_throughput.py's reader): the daemon's own speed.

Both include the writer's time: ``seq`` into the Engine's log file is the upper bound either can
reach, so a ratio near 1 says the follower keeps up with the fastest writer. Reported: the median
lines/s of each over the rounds (target for the follower ≥ 20,000), their ratio, and the
gateway's and daemon's CPU per run.
"""

from __future__ import annotations

import asyncio
import json
import time
from statistics import median

from bench._harness import Bench, Row, cpu_seconds, run_script
from bench.log_throughput import raw_log

LINES = 1_000_000
ROUNDS = 3
TARGET = 20_000  # lines/s
LABEL = "nekzus.bench.log-alerts"
RULE = {"name": "bench-log", "when": {"condition": "log", "labels": {LABEL: "1"}, "pattern": "^done [0-9]+$"}}
GATEWAY_ENV = {"NEKZUS_SERVER__TLS__MODE": "off", "NEKZUS_ALERTS": json.dumps([RULE])}
COMMAND = ("sh", "-c", f"seq 1 {LINES}; echo done 1")


async def _follower(bench: Bench, cid: str) -> float:
    """Seconds from the start call to the gateway's alert.firing of the container."""
    async with bench.http.ws_connect("/api/v1/ws", max_msg_size=0) as ws:
        hello = json.loads((await ws.receive()).data)
        if hello["type"] != "hello":
            raise AssertionError(f"expected hello, got {hello}")
        began = time.perf_counter()
        await bench.engine.start(cid)
        async with asyncio.timeout(300):
            async for msg in ws:
                doc = json.loads(msg.data)
                if doc["type"] == "alert.firing" and doc["data"]["containerId"] == cid[:12]:
                    if doc["data"]["message"] != f"{doc['data']['name']} logged: done 1":
                        raise AssertionError(f"unexpected alert {doc['data']}")
                    return time.perf_counter() - began
    raise AssertionError("the WebSocket closed before the alert fired")


async def _raw_read(bench: Bench, cid: str) -> float:
    began = time.perf_counter()
    await bench.engine.start(cid)
    lines, last = await raw_log(bench, cid, timestamps=True)
    if lines != LINES + 1 or last != "done 1":
        raise AssertionError(f"read {lines} lines, the last {last[:40]!r}")
    return time.perf_counter() - began


async def measure(bench: Bench) -> list[Row]:
    pids = {"gateway": bench.gateway.pid}
    if (daemon := bench.engine.daemon_pid()) is not None:
        pids["daemon"] = daemon
    seconds: dict[str, list[float]] = {"raw": [], "follower": []}
    cpu: dict[str, list[float]] = {f"{reader} {who}": [] for reader in seconds for who in pids}
    for round_ in range(ROUNDS):
        # The raw read first, then the follower, so each ratio compares two runs seconds apart.
        for reader, run in (("raw", _raw_read), ("follower", _follower)):
            # Only the follower's container carries the rule's label: the raw read runs alone.
            labels = {LABEL: "1"} if reader == "follower" else {}
            cid = await bench.engine.create(f"bench-log-alerts-{reader}-{round_}", COMMAND, labels)
            before = {who: cpu_seconds(pid) for who, pid in pids.items()}
            took = await run(bench, cid)
            seconds[reader].append(took)
            for who, pid in pids.items():
                cpu[f"{reader} {who}"].append(cpu_seconds(pid) - before[who])
            used = ", ".join(f"{who} {cpu[f'{reader} {who}'][-1]:.2f} s" for who in pids)
            print(f"  {reader:8}  {(LINES + 1) / took:10,.0f} lines/s  {took:6.2f} s  CPU: {used}")
            await bench.engine.wait(cid)
    ratio = median(r / f for r, f in zip(seconds["raw"], seconds["follower"], strict=True))
    rows = [Row(f"log lines (seq 1 {LINES} and a matching last line), {ROUNDS} rounds", LINES + 1)]
    rows.append(
        Row("raw read, writer included: lines/s (median)", median((LINES + 1) / s for s in seconds["raw"]))
    )
    for name, values in cpu.items():
        rows.append(Row(f"{name} CPU per run (median)", median(values), "s"))
    rows += [
        Row("follower / raw (median of the rounds' ratios)", ratio, ""),
        Row(
            "follower: lines/s one log rule keeps up with (median)",
            median((LINES + 1) / s for s in seconds["follower"]),
            "lines/s",
            TARGET,
            True,
        ),
    ]
    return rows


if __name__ == "__main__":
    run_script(f"log alerts, {LINES:,} lines past one log-pattern rule", measure, GATEWAY_ENV)
