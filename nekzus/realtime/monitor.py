"""Probes each runtime's readiness, says so in the log when it changes, and keeps the verdict.

Each probe is the runtime's own ``ping``: for Docker the Engine's ping, for Kubernetes the
apiserver's /readyz (which needs etcd) and its pod watch. A runtime that probes as down is probed
again every second instead of every ``interval``, so it is seen back within a second: the
Kubernetes runtime answers its calls with 503 at once while its probe fails, and needs the probe
to pass again. ``/readyz`` and ``/api/v1/health`` probe on each request and show the verdicts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from runtimes import ContainerRuntime, RuntimeFailure, RuntimeInfo, RuntimeRegistry

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 5.0
DOWN_INTERVAL = 1.0


class RuntimeMonitor:
    def __init__(self, registry: RuntimeRegistry, *, interval: float) -> None:
        self._registry = registry
        self._interval = interval
        self.available: dict[str, bool | None] = {rt.name: None for rt in registry}
        # Why each runtime is down, in the runtime's client-facing words when it gave some.
        self.reasons: dict[str, str] = {}
        # Set when a check (a probe request's too) finds a runtime down: its probe loop wakes.
        self._went_down = {rt.name: asyncio.Event() for rt in registry}

    async def check(self, runtime: ContainerRuntime) -> RuntimeInfo | None:
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation that
            # arrives as the ping answers, and the probe loop would then never end.
            async with asyncio.timeout(PROBE_TIMEOUT):
                info = await runtime.ping()
        except (RuntimeFailure, TimeoutError) as exc:
            if isinstance(exc, RuntimeFailure):
                reason = exc.detail or "It answered its probe with an error"
            else:
                reason = f"It did not answer within {PROBE_TIMEOUT:g} s"
            if self.available.get(runtime.name) is not False:
                log.error(
                    "%s runtime is unavailable (%s); its requests answer 503 RUNTIME_UNAVAILABLE "
                    "until it is back",
                    runtime.name,
                    exc or f"no answer within {PROBE_TIMEOUT:g} s",
                )
            self.available[runtime.name] = False
            if runtime.name in self._went_down:
                self._went_down[runtime.name].set()
            self.reasons[runtime.name] = reason
            return None
        previous = self.available.get(runtime.name)
        if previous is not True:
            log.info(
                "%s runtime %s: version %s, API %s",
                runtime.name,
                "is available again" if previous is False else "is available",
                info.version,
                info.api_version,
            )
        self.available[runtime.name] = True
        self.reasons.pop(runtime.name, None)
        return info

    async def run(self) -> None:
        await asyncio.gather(*(self._probe(rt) for rt in self._registry))

    async def _probe(self, runtime: ContainerRuntime) -> None:
        went_down = self._went_down[runtime.name]
        while True:
            went_down.clear()
            await self.check(runtime)
            if self.available.get(runtime.name) is False:
                await asyncio.sleep(min(self._interval, DOWN_INTERVAL))
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await went_down.wait()
