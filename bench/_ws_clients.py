"""WebSocket clients of the gateway in worker processes, for benchmarks that need many of them.

A worker (this file run as a script: ``_ws_clients.py URL [--cafile F] [--compress BITS]``) holds
connections to ``URL/api/v1/ws``, each with its own reader task that decodes every message
(``json.loads``) as a real client does and answers the server's pings. ``--compress 15`` offers
permessage-deflate, as browsers do; by default (aiohttp's) the client does not. It takes one JSON
command per line on stdin and answers one JSON line on stdout:

- ``{"cmd": "open", "count": N}``: N more connections, each read until its ``hello``; answers
  ``{"open": total, "failed": k, "seconds": s}``.
- ``{"cmd": "watch", "containerId": ID, "states": [...]}``: from now on the n-th
  ``container.state`` of that container with one of those states on a connection is event n
  (a late ``created`` from before the run is not one of them); once every open connection has
  it, the worker writes ``{"event": n, "state": …, "times": [perf_counter() of each receipt]}``
  by itself.
- ``{"cmd": "status"}``: ``{"open": n, "closed": k, "closeCodes": {...}, "messages": m}``.
- ``{"cmd": "close"}``: closes every connection, answers ``{"closed": n}`` and exits.

Receipt times are ``time.perf_counter()``, which on Linux is CLOCK_MONOTONIC and so comparable
between processes of one machine; the parent checks that before relying on it.
``WsClients`` is the parent's side: it spreads the connections over a few workers and merges
their answers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import ssl
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp

OPEN_CONCURRENCY = 64  # handshakes in flight per worker (the gateway's listen backlog is 128)
HELLO_TIMEOUT = 30.0
MONOTONIC = "clock_gettime(CLOCK_MONOTONIC)"


# -- the worker ---------------------------------------------------------------------------------


class _Worker:
    def __init__(self, url: str, cafile: str | None, compress: int) -> None:
        self.url = url + "/api/v1/ws"
        self.compress = compress
        context: ssl.SSLContext | bool = ssl.create_default_context(cafile=cafile) if cafile else True
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ssl=context))
        self.connections: list[aiohttp.ClientWebSocketResponse] = []
        self.readers: list[asyncio.Task[None]] = []
        self.closed = 0
        self.close_codes: dict[str, int] = defaultdict(int)
        self.messages = 0
        self.watch: str | None = None
        self.watch_states: frozenset[str] = frozenset()
        self.arrivals: dict[int, list[float]] = defaultdict(list)
        self.states: dict[int, str] = {}

    def answer(self, doc: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(doc, separators=(",", ":")) + "\n")
        sys.stdout.flush()

    async def _connect(self, limit: asyncio.Semaphore) -> bool:
        async with limit:
            try:
                ws = await self.session.ws_connect(
                    self.url, max_msg_size=0, autoping=True, compress=self.compress
                )
            except (aiohttp.ClientError, OSError):
                return False
            try:
                msg = await ws.receive(timeout=HELLO_TIMEOUT)
                hello = json.loads(msg.data) if msg.type is aiohttp.WSMsgType.TEXT else {}
            except (TimeoutError, ValueError):
                hello = {}
            if hello.get("type") != "hello":
                await ws.close()
                return False
        self.connections.append(ws)
        self.readers.append(asyncio.create_task(self._read(ws)))
        return True

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        seen = 0
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            doc = json.loads(msg.data)
            arrived = time.perf_counter()
            self.messages += 1
            if doc["type"] != "container.state" or doc["data"].get("containerId") != self.watch:
                continue
            if doc["data"]["state"] not in self.watch_states:
                continue
            arrivals = self.arrivals[seen]
            arrivals.append(arrived)
            self.states.setdefault(seen, doc["data"]["state"])
            if len(arrivals) == len(self.connections):
                self.answer({"event": seen, "state": self.states.pop(seen), "times": arrivals})
                del self.arrivals[seen]
            seen += 1
        self.closed += 1
        self.close_codes[str(ws.close_code)] += 1

    async def command(self, doc: dict[str, Any]) -> bool:
        """Run one command; False once the worker should exit."""
        cmd = doc.get("cmd")
        if cmd == "open":
            began = time.perf_counter()
            limit = asyncio.Semaphore(OPEN_CONCURRENCY)
            results = await asyncio.gather(*(self._connect(limit) for _ in range(int(doc["count"]))))
            self.answer(
                {
                    "open": len(self.connections) - self.closed,
                    "failed": results.count(False),
                    "seconds": time.perf_counter() - began,
                }
            )
        elif cmd == "watch":
            self.watch = str(doc["containerId"])
            self.watch_states = frozenset(doc["states"])
            self.answer({"watching": self.watch})
        elif cmd == "status":
            self.answer(
                {
                    "open": len(self.connections) - self.closed,
                    "closed": self.closed,
                    "closeCodes": self.close_codes,
                    "messages": self.messages,
                }
            )
        elif cmd == "close":
            await asyncio.gather(*(ws.close() for ws in self.connections), return_exceptions=True)
            await asyncio.gather(*self.readers, return_exceptions=True)
            await self.session.close()
            self.answer({"closed": len(self.connections)})
            return False
        else:
            self.answer({"error": f"unknown command {cmd!r}"})
        return True


async def _worker_main(url: str, cafile: str | None, compress: int) -> None:
    worker = _Worker(url, cafile, compress)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while line := await stdin.readline():
        if not await worker.command(json.loads(line)):
            return
    # The parent went away without "close": end quietly.
    await worker.command({"cmd": "close"})


# -- the parent's side --------------------------------------------------------------------------


class WsClients:
    """``processes`` workers holding WebSocket connections to one gateway."""

    def __init__(self, url: str, cafile: Path | None, processes: int, *, compress: int = 0) -> None:
        if time.get_clock_info("perf_counter").implementation != MONOTONIC:
            raise RuntimeError("perf_counter() is not CLOCK_MONOTONIC: times of processes do not compare")
        self.argv = [sys.executable, str(Path(__file__).resolve()), url, "--compress", str(compress)]
        if cafile is not None:
            self.argv += ["--cafile", str(cafile)]
        self.count = processes
        self.procs: list[asyncio.subprocess.Process] = []
        self._replies: list[asyncio.Queue[dict[str, Any]]] = []
        self._readers: list[asyncio.Task[None]] = []
        self._events: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self._event_arrived = asyncio.Event()

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    async def __aenter__(self) -> WsClients:
        for _ in range(self.count):
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=1 << 24,  # an event line carries one float per connection
            )
            self.procs.append(proc)
            queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            self._replies.append(queue)
            self._readers.append(asyncio.create_task(self._listen(proc, queue)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._all({"cmd": "close"}), 60)
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)

    async def _listen(self, proc: asyncio.subprocess.Process, replies: asyncio.Queue[dict[str, Any]]) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            doc = json.loads(line)
            if "event" in doc:
                self._events[int(doc["event"])].append(doc)
                self._event_arrived.set()
            else:
                replies.put_nowait(doc)
        replies.put_nowait({"error": f"worker {proc.pid} exited"})

    async def _ask(self, index: int, doc: dict[str, Any]) -> dict[str, Any]:
        stdin = self.procs[index].stdin
        assert stdin is not None
        stdin.write(json.dumps(doc).encode() + b"\n")
        await stdin.drain()
        reply = await self._replies[index].get()
        if "error" in reply:
            raise RuntimeError(f"WebSocket client worker: {reply['error']}")
        return reply

    async def _all(self, doc: dict[str, Any]) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self._ask(i, doc) for i in range(len(self.procs)))))

    async def open(self, count: int) -> tuple[int, int, float]:
        """``count`` more connections, spread evenly; answers (open in all, failed, seconds)."""
        shares = [count // self.count + (i < count % self.count) for i in range(self.count)]
        began = time.perf_counter()
        replies = await asyncio.gather(
            *(self._ask(i, {"cmd": "open", "count": n}) for i, n in enumerate(shares))
        )
        return sum(r["open"] for r in replies), sum(r["failed"] for r in replies), time.perf_counter() - began

    async def watch(self, container_id: str, states: Iterable[str]) -> None:
        await self._all({"cmd": "watch", "containerId": container_id, "states": sorted(states)})

    async def status(self) -> dict[str, Any]:
        replies = await self._all({"cmd": "status"})
        codes: dict[str, int] = defaultdict(int)
        for reply in replies:
            for code, n in reply["closeCodes"].items():
                codes[code] += n
        return {
            "open": sum(r["open"] for r in replies),
            "closed": sum(r["closed"] for r in replies),
            "closeCodes": dict(codes),
            "messages": sum(r["messages"] for r in replies),
        }

    async def event(self, index: int, timeout: float) -> tuple[str, list[float]]:
        """The state of watched event ``index`` and every connection's receipt time of it, once
        every worker has reported it on all its connections."""
        async with asyncio.timeout(timeout):
            while len(self._events.get(index, ())) < len(self.procs):
                self._event_arrived.clear()
                await self._event_arrived.wait()
        parts = self._events.pop(index)
        states = {part["state"] for part in parts}
        if len(states) != 1:
            raise RuntimeError(f"event {index}: workers saw different states {states}")
        return states.pop(), [t for part in parts for t in part["times"]]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="WebSocket client worker (see the module docstring)")
    parser.add_argument("url")
    parser.add_argument("--cafile")
    parser.add_argument("--compress", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(_worker_main(args.url, args.cafile, args.compress))
