"""Log throughput: a 1,000,000-line log delivered to one WebSocket client, against reading the same
log straight from the Engine API with aiodocker.

One container runs ``seq 1 1000000`` (busybox, no network) and is waited for until it has exited.
Then, in rounds, each of three readers takes the whole log, one after the other:

- **direct**: ``aiodocker`` in the bench process,
  ``docker.containers.container(id).log(stdout=True, stderr=True, follow=True)``, iterated to the
  end, counting lines;
- **ws**: one WebSocket client in the bench process subscribes with
  ``{"containerId": id, "since": 0, "follow": false}`` and reads ``container.logs.started``, one
  ``container.logs`` message per line, ``container.logs.ended``;
- **ws batch**: the same with ``"batch": true``: ``container.logs.batch`` messages of many lines.

The WebSocket clients decode every message with ``json.loads``, as a real client does, and each
read must deliver exactly 1,000,000 lines, the last one ``1000000``. Times run from the call (the
subscribe message) to the last line (``container.logs.ended``). Reported: the median lines/s of
each reader over the rounds, the ratios ws / direct (≥ 0.5) and ws batch / direct (≥ 0.9), and
the CPU each process used per run (bench process, gateway, daemon) to show which side is busy.

The gateway serves plain HTTP (``NEKZUS_SERVER__TLS__MODE=off``; ``--gateway-env
NEKZUS_SERVER__TLS__MODE=auto`` measures TLS as shipped, which the client then decrypts too).
On the 2-CPU machine this was written on, the daemon (it decodes its JSON log file line by line),
the gateway and the reading client share two CPUs during a WebSocket run, while a direct run has
only the daemon and the client.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from statistics import median

import aiodocker

from bench._harness import Bench, Row, cpu_seconds, run_script

LINES = 1_000_000
ROUNDS = 3
TARGET_RATIO = 0.5
TARGET_BATCH_RATIO = 0.9
GATEWAY_ENV = {"NEKZUS_SERVER__TLS__MODE": "off"}


@dataclass
class Run:
    seconds: float
    lines: int
    last: str
    cpu: dict[str, float]  # CPU seconds each process used during the run


async def _direct(docker: aiodocker.Docker, cid: str) -> tuple[int, str]:
    lines, last = 0, ""
    async for item in docker.containers.container(cid).log(stdout=True, stderr=True, follow=True):
        lines += item.count("\n")
        last = item
    return lines, last.rstrip("\n").rpartition("\n")[2]


async def _ws(bench: Bench, cid: str, batch: bool) -> tuple[int, str]:
    async with bench.http.ws_connect("/api/v1/ws", max_msg_size=0) as ws:
        hello = json.loads((await ws.receive()).data)
        if hello["type"] != "hello":
            raise AssertionError(f"expected hello, got {hello}")
        subscribe = {"containerId": cid, "since": 0, "follow": False, **({"batch": True} if batch else {})}
        await ws.send_str(json.dumps({"type": "container.logs.subscribe", "data": subscribe}))
        lines, last = 0, ""
        async for msg in ws:
            doc = json.loads(msg.data)
            kind = doc["type"]
            if kind == "container.logs":
                lines += 1
                last = doc["data"]["message"]
            elif kind == "container.logs.batch":
                batch_lines = doc["data"]["lines"]
                lines += len(batch_lines)
                last = batch_lines[-1] if batch_lines else last
            elif kind == "container.logs.ended":
                return lines, last
            elif kind == "container.logs.error":
                raise AssertionError(f"log stream failed: {doc['data']}")
    raise AssertionError("the WebSocket closed before container.logs.ended")


async def _timed(bench: Bench, pids: dict[str, int], read: Callable[[], Awaitable[tuple[int, str]]]) -> Run:
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    began = time.perf_counter()
    lines, last = await read()
    seconds = time.perf_counter() - began
    cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    if lines != LINES or last != str(LINES):
        raise AssertionError(f"read {lines} lines, the last {last[:40]!r}; expected {LINES}, last {LINES}")
    return Run(seconds, lines, last, cpu)


async def measure(bench: Bench) -> list[Row]:
    cid = await bench.engine.create("bench-logs", cmd=("seq", "1", str(LINES)))
    await bench.engine.start(cid)
    if (code := await bench.engine.wait(cid)) != 0:
        raise AssertionError(f"seq exited {code}")
    pids = {"bench": os.getpid(), "gateway": bench.gateway.pid}
    if (daemon := bench.engine.daemon_pid()) is not None:
        pids["daemon"] = daemon

    readers: dict[str, Callable[[], Awaitable[tuple[int, str]]]]
    runs: dict[str, list[Run]] = {"direct": [], "ws": [], "ws batch": []}
    async with aiodocker.Docker(url=bench.gateway.docker_host) as docker:
        readers = {
            "direct": lambda: _direct(docker, cid),
            "ws": lambda: _ws(bench, cid, batch=False),
            "ws batch": lambda: _ws(bench, cid, batch=True),
        }
        for _ in range(ROUNDS):
            for name, read in readers.items():
                run = await _timed(bench, pids, read)
                runs[name].append(run)
                cpu = ", ".join(f"{who} {seconds:.2f} s" for who, seconds in run.cpu.items())
                print(f"  {name:8}  {LINES / run.seconds:10,.0f} lines/s  {run.seconds:6.2f} s  CPU: {cpu}")

    rate = {name: median(LINES / r.seconds for r in rs) for name, rs in runs.items()}
    rows = [Row(f"log lines (seq 1 {LINES}), read {ROUNDS}× by each reader", LINES)]
    for name, rs in runs.items():
        rows.append(Row(f"{name}: lines/s (median of {ROUNDS})", rate[name], "lines/s"))
        for who in pids:
            rows.append(Row(f"{name}: {who} CPU per run (median)", median(r.cpu[who] for r in rs), "s"))
    rows += [
        Row(
            "ws / direct (one container.logs message per line)",
            rate["ws"] / rate["direct"],
            "",
            TARGET_RATIO,
            True,
        ),
        Row(
            "ws batch / direct (container.logs.batch)",
            rate["ws batch"] / rate["direct"],
            "",
            TARGET_BATCH_RATIO,
            True,
        ),
    ]
    return rows


if __name__ == "__main__":
    run_script(f"log throughput, {LINES:,} lines to one WebSocket client", measure, GATEWAY_ENV)
