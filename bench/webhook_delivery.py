"""Webhook deliveries: throughput to a local receiver, and the latency a delivery adds to an event.

The gateway's app runs in the bench process (``create_app`` with no container runtime, its
webhooks store in a temporary data_dir); events are published on its event bus, as the
operations and the state watcher publish them, so they go through the hub to the webhooks. The
receiver is an aiohttp server in a process of its own on loopback (allowed with
``webhook_delivery.allow_networks``), answering 204 and printing, for every request, the
``CLOCK_MONOTONIC`` nanoseconds it read the body at and those the event carries from its
publication (one clock for both processes).

- Latency: 500 events one after another (20 warm-up), each published once the previous one was
  received: publication → the receiver has the whole request. p99 ≤ 50 ms (idle machine).
- Throughput: 5,000 events published at once to one webhook (one request at a time, strict
  order), and to four webhooks at once (the same receiver): events received per second, from
  the first publication to the last request received. Informative.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from bench._harness import Row, free_port, ms, percentile, run_local_script
from nekzus.config import Config
from nekzus.http.app import create_app
from nekzus.keys import EVENT_BUS
from runtimes import RuntimeRegistry

WARMUP = 20
ROUNDS = 500
BURST = 5000
PARALLEL_WEBHOOKS = 4
TARGET_P99_MS = 50.0
TIMEOUT = 60.0

RECEIVER = """
import sys, time, json
from aiohttp import web

async def hook(request):
    body = await request.read()
    arrived = time.monotonic_ns()
    sys.stdout.write(f"{arrived} {json.loads(body)['data']['sent']}\\n")
    sys.stdout.flush()
    return web.Response(status=204)

app = web.Application()
app.router.add_post("/hook", hook)
print("ready", flush=True)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


class Receiver:
    """The receiver process and the latency (seconds) of each request it reports."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, port: int) -> Receiver:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", RECEIVER, str(port), stdout=asyncio.subprocess.PIPE
        )
        receiver = cls(process)
        assert await receiver._line() == "ready"
        return receiver

    async def _line(self) -> str:
        assert self.process.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            return (await self.process.stdout.readline()).decode().strip()

    async def next(self) -> tuple[int, float]:
        """When the next request arrived (monotonic ns) and how long after its event's publication."""
        arrived, sent = map(int, (await self._line()).split())
        return arrived, (arrived - sent) / 1e9

    async def stop(self) -> None:
        self.process.terminate()
        await self.process.wait()


def config(data_dir: Path, url: str, webhooks: int) -> Config:
    return Config(
        server={"data_dir": str(data_dir), "tls": {"mode": "off"}},
        webhooks=[
            {"name": f"bench-{n}", "url": url, "events": ["bench.*"], "secret": "whsec_" + "A" * 32}
            for n in range(webhooks)
        ],
        webhook_delivery={"allow_networks": ["127.0.0.0/8"], "max_pending": BURST * 2},
        logging={"access_log": False},
    )


async def with_gateway(url: str, webhooks: int, run: Any) -> Any:
    """``run(publish)`` against a gateway app with ``webhooks`` webhooks pointed at ``url``."""
    with tempfile.TemporaryDirectory(prefix="nekzus-bench-webhooks-") as data_dir:
        app = create_app(config(Path(data_dir), url, webhooks), runtimes=RuntimeRegistry("docker"))
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            bus = app[EVENT_BUS]

            def publish(n: int) -> None:
                data = {"n": n, "sent": time.monotonic_ns(), "timestamp": int(time.time())}
                bus.publish("bench.tick", data)

            return await run(publish)
        finally:
            await runner.cleanup()


async def measure() -> list[Row]:
    port = free_port()
    receiver = await Receiver.start(port)
    url = f"http://127.0.0.1:{port}/hook"
    rows: list[Row] = []
    try:

        async def latency(publish: Any) -> list[float]:
            samples = []
            for n in range(WARMUP + ROUNDS):
                publish(n)
                _, took = await receiver.next()
                if n >= WARMUP:
                    samples.append(took)
            return samples

        samples = await with_gateway(url, 1, latency)
        rows.append(Row("event → receiver, p50", ms(percentile(samples, 50)), "ms"))
        rows.append(Row("event → receiver, p99", ms(percentile(samples, 99)), "ms", TARGET_P99_MS))
        rows.append(Row("event → receiver, max", ms(max(samples)), "ms"))

        for webhooks in (1, PARALLEL_WEBHOOKS):

            async def burst(publish: Any, webhooks: int = webhooks) -> float:
                started = time.monotonic_ns()
                for n in range(BURST):
                    publish(n)
                last = started
                for _ in range(BURST * webhooks):
                    last, _took = await receiver.next()
                return BURST * webhooks / ((last - started) / 1e9)

            rate = await with_gateway(url, webhooks, burst)
            rows.append(Row(f"throughput, {BURST} events to {webhooks} webhook(s)", rate, "events/s"))
    finally:
        await receiver.stop()
    return rows


if __name__ == "__main__":
    run_local_script("webhook delivery", measure)
