"""Picks a runtime backend by name; the primary one answers when a request names none."""

from __future__ import annotations

from collections.abc import Iterator

from .base import ContainerRuntime


class UnknownRuntime(LookupError):
    """A request named a runtime that is not configured (or does not exist)."""


class NoRuntime(LookupError):
    """No runtime is configured at all."""


class RuntimeRegistry:
    def __init__(self, primary: str) -> None:
        self._primary = primary
        self._runtimes: dict[str, ContainerRuntime] = {}

    def add(self, runtime: ContainerRuntime) -> None:
        self._runtimes[runtime.name] = runtime

    @property
    def primary_name(self) -> str:
        return self._primary

    def get(self, name: str | None = None) -> ContainerRuntime:
        """The runtime called ``name``, or the primary one when ``name`` is None or empty."""
        if not self._runtimes:
            raise NoRuntime("no container runtime is configured")
        if not name:
            runtime = self._runtimes.get(self._primary)
            if runtime is None:
                # The primary is disabled: fall back to the first enabled runtime.
                return next(iter(self._runtimes.values()))
            return runtime
        try:
            return self._runtimes[name]
        except KeyError:
            raise UnknownRuntime(name) from None

    def select(self, name: str | None) -> list[ContainerRuntime]:
        """All runtimes when ``name`` is empty (a merged view), else the one named."""
        if not name:
            if not self._runtimes:
                raise NoRuntime("no container runtime is configured")
            return list(self._runtimes.values())
        return [self.get(name)]

    def __iter__(self) -> Iterator[ContainerRuntime]:
        return iter(list(self._runtimes.values()))

    def __len__(self) -> int:
        return len(self._runtimes)

    async def close(self) -> None:
        for runtime in self:
            await runtime.close()
