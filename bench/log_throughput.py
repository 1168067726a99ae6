"""Log throughput: a 1,000,000-line log delivered to one WebSocket client, against reading the same
log straight off the Engine's socket.

One container runs ``seq 1 1000000`` (busybox, no network) and is waited for until it has exited.
Then, in rounds, each reader takes the whole log, one after the other:

- **raw**: the bench process asks ``GET /containers/{id}/logs`` with the gateway's own query
  (stdout, stderr, ``timestamps=1``: the gateway needs each line's time) in HTTP/1.0 on a plain
  unix socket, and counts the newlines of the body in a blocking ``recv_into`` loop: no client
  library, no event loop, the daemon's own speed. The targets are measured against this read;
- **raw, no times**: the same without ``timestamps``, for reference: the daemon formats no times
  and sends a third of the bytes, so this is as fast as the Engine gives a log at all;
- **aiodocker**: ``docker.containers.container(id).log(stdout=True, stderr=True, follow=True)``,
  iterated to the end, counting lines (reference);
- **ws**: one WebSocket client in the bench process subscribes with
  ``{"containerId": id, "since": 0, "follow": false}`` and reads ``container.logs.started``, one
  ``container.logs`` message per line, ``container.logs.ended``;
- **ws batch**: the same with ``"batch": true``: ``container.logs.batch`` messages of many lines.

The WebSocket clients decode every message with ``json.loads``, as a real client does, and each
read must deliver exactly 1,000,000 lines, the last one ``1000000``. Times run from the call (the
request, or the subscribe message) to the last line. Reported: the median lines/s of each reader
over the rounds; the ratios ws / raw (≥ 0.5) and ws batch / raw (≥ 0.95), and those against the
references, each the median over the rounds of that round's ratio (the WebSocket readers run
right after raw, so they see the same load); and the CPU each process used per run (bench process,
gateway, daemon) to show which side is busy.

The gateway serves plain HTTP (``NEKZUS_SERVER__TLS__MODE=off``; ``--gateway-env
NEKZUS_SERVER__TLS__MODE=auto`` measures TLS as shipped, which the client then decrypts too).
On a 2-CPU machine the daemon (it decodes its JSON log file line by line), the gateway and the
reading client share two CPUs during a WebSocket run, while a raw run has only the daemon and a
reader that costs little.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from statistics import median

import aiodocker

from bench._harness import Bench, Row, cpu_seconds, run_script

LINES = 1_000_000
RAW_READ = 1 << 18  # bytes per receive of the raw reader
ROUNDS = 5
TARGET_RATIO = 0.5
TARGET_BATCH_RATIO = 0.95
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


def _read_raw(socket_path: str, path: str, timestamps: bool) -> tuple[int, str]:
    """The log endpoint read as bytes off the Engine's socket in a blocking loop: HTTP/1.0, so the
    body comes unframed up to the connection's end, and no client library or event loop between
    the daemon and the count."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(socket_path)
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
        buf = bytearray(RAW_READ)
        view = memoryview(buf)
        got = sock.recv_into(buf)
        head, _, body = bytes(view[:got]).partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.0 200"):
            raise AssertionError(f"the Engine answered {head[:80]!r}")
        # Every frame header here is stream 1 and a length of 2 to 39 bytes, never a newline
        # byte: the newlines of the raw bytes are the lines, and the last frame follows the last
        # but one.
        lines, tail = body.count(b"\n"), body[-64:]
        while got := sock.recv_into(buf):
            lines += buf.count(b"\n", 0, got)
            tail = (tail + view[:got])[-64:]
    last = tail.rstrip(b"\n").rpartition(b"\n")[2][8:].decode()
    return lines, last.partition(" ")[2] if timestamps else last


async def raw_log(bench: Bench, cid: str, *, timestamps: bool) -> tuple[int, str]:
    query = f"stdout=1&stderr=1&follow=1&timestamps={int(timestamps)}"
    path = f"{bench.engine.prefix}/containers/{cid}/logs?{query}"
    return await asyncio.to_thread(_read_raw, bench.engine.socket, path, timestamps)


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
    async with aiodocker.Docker(url=bench.gateway.docker_host) as docker:
        # Each measured reader right after its reference, so that a ratio compares two runs a few
        # seconds apart on a machine whose load drifts.
        readers = {
            "raw": lambda: raw_log(bench, cid, timestamps=True),
            "ws batch": lambda: _ws(bench, cid, batch=True),
            "ws": lambda: _ws(bench, cid, batch=False),
            "raw, no times": lambda: raw_log(bench, cid, timestamps=False),
            "aiodocker": lambda: _direct(docker, cid),
        }
        runs: dict[str, list[Run]] = {name: [] for name in readers}
        for _ in range(ROUNDS):
            for name, read in readers.items():
                run = await _timed(bench, pids, read)
                runs[name].append(run)
                cpu = ", ".join(f"{who} {seconds:.2f} s" for who, seconds in run.cpu.items())
                print(f"  {name:13}  {LINES / run.seconds:10,.0f} lines/s  {run.seconds:6.2f} s  CPU: {cpu}")

    def ratio(name: str, reference: str) -> float:
        """The median over the rounds of each round's ratio of the two readers' speeds."""
        return median(ref.seconds / run.seconds for run, ref in zip(runs[name], runs[reference], strict=True))

    rows = [Row(f"log lines (seq 1 {LINES}), read {ROUNDS}× by each reader", LINES)]
    for name, rs in runs.items():
        rows.append(
            Row(f"{name}: lines/s (median of {ROUNDS})", median(LINES / r.seconds for r in rs), "lines/s")
        )
        for who in pids:
            rows.append(Row(f"{name}: {who} CPU per run (median)", median(r.cpu[who] for r in rs), "s"))
    rows += [
        Row("ws / aiodocker (reference)", ratio("ws", "aiodocker"), ""),
        Row("ws batch / aiodocker (reference)", ratio("ws batch", "aiodocker"), ""),
        Row("ws / raw, no times (reference)", ratio("ws", "raw, no times"), ""),
        Row("ws batch / raw, no times (reference)", ratio("ws batch", "raw, no times"), ""),
        Row("ws / raw (one container.logs message per line)", ratio("ws", "raw"), "", TARGET_RATIO, True),
        Row("ws batch / raw (container.logs.batch)", ratio("ws batch", "raw"), "", TARGET_BATCH_RATIO, True),
    ]
    return rows


if __name__ == "__main__":
    run_script(f"log throughput, {LINES:,} lines to one WebSocket client", measure, GATEWAY_ENV)
