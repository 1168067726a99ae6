"""Watches each runtime's reachability and says so in the log when it changes.

Requests never wait for this: each one talks to the runtime directly, so the gateway recovers the
moment a daemon is back. The monitor exists so operators see "unavailable" and "available again"
once, clearly, instead of a 503 per request.
"""

from __future__ import annotations

import asyncio
import logging

from runtimes import ContainerRuntime, RuntimeFailure, RuntimeInfo, RuntimeRegistry

log = logging.getLogger(__name__)


class RuntimeMonitor:
    def __init__(self, registry: RuntimeRegistry, *, interval: float) -> None:
        self._registry = registry
        self._interval = interval
        self.available: dict[str, bool | None] = {rt.name: None for rt in registry}

    async def check(self, runtime: ContainerRuntime) -> RuntimeInfo | None:
        try:
            info = await asyncio.wait_for(runtime.ping(), timeout=5)
        except (RuntimeFailure, TimeoutError) as exc:
            if self.available.get(runtime.name) is not False:
                log.error(
                    "%s runtime is unavailable (%s); its requests answer 503 RUNTIME_UNAVAILABLE "
                    "until it is back",
                    runtime.name,
                    exc,
                )
            self.available[runtime.name] = False
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
        return info

    async def run(self) -> None:
        while True:
            await asyncio.gather(*(self.check(rt) for rt in self._registry))
            await asyncio.sleep(self._interval)
