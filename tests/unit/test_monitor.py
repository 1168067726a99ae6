"""The runtime monitor's probe loop ends when it is cancelled, whatever its probe was doing."""

from __future__ import annotations

import asyncio

from nekzus.realtime.monitor import RuntimeMonitor
from runtimes import RuntimeInfo
from tests.support.fakes import FakeRuntime, registry_of


class HeldPing(FakeRuntime):
    """A runtime whose ping answers only when the test lets it."""

    def __init__(self) -> None:
        super().__init__([])
        self.asked = asyncio.Event()
        self.answer: asyncio.Future[RuntimeInfo] = asyncio.get_running_loop().create_future()

    async def ping(self) -> RuntimeInfo:
        self.asked.set()
        return await self.answer


async def test_a_probe_answered_as_the_monitor_is_cancelled_still_ends_it() -> None:
    """Shutdown cancels the monitor; a ping that answers in that same moment must not swallow the
    cancellation (the loop would go on probing, and the shutdown would wait for it for ever)."""
    runtime = HeldPing()
    monitor = RuntimeMonitor(registry_of(runtime), interval=0.05)
    task = asyncio.create_task(monitor.run())
    async with asyncio.timeout(5):
        await runtime.asked.wait()
    runtime.answer.set_result(RuntimeInfo("docker", "1.0", "1.0"))
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert task in done and task.cancelled()
