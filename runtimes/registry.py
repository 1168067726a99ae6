"""Picks a runtime backend by name; the primary one answers when a request names none."""

from __future__ import annotations

from collections.abc import Iterator

from .base import ContainerRuntime


class UnknownRuntime(LookupError):
    """A request named a runtime that is not configured (or does not exist)."""


class NoRuntime(LookupError):
    """No runtime is configured at all."""


class NotNamespaced(LookupError):
    """A request names a namespace, and the runtime it addresses keeps its containers in none."""


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

    def namespaced(self) -> ContainerRuntime | None:
        """The enabled runtime whose containers live in namespaces, which a namespace implies."""
        return next((runtime for runtime in self._runtimes.values() if runtime.namespaced), None)

    def addressed(self, name: str | None, namespace: str = "") -> ContainerRuntime:
        """The runtime a request means: the one ``name``d, else the namespaced one when it names a
        ``namespace``, else the primary. A namespace with a runtime that has none is NotNamespaced."""
        if not namespace:
            return self.get(name)
        if not self._runtimes:
            raise NoRuntime("no container runtime is configured")
        runtime = self.get(name) if name else self.namespaced()
        if runtime is None:
            raise NotNamespaced("A namespace names pods, and no enabled runtime has them")
        if not runtime.namespaced:
            raise NotNamespaced(f"A namespace names pods; {runtime.name!r} has none")
        return runtime

    def select(self, name: str | None, namespace: str = "") -> list[ContainerRuntime]:
        """All runtimes when the request names neither a runtime nor a namespace (a merged view),
        else the one it addresses."""
        if not name and not namespace:
            if not self._runtimes:
                raise NoRuntime("no container runtime is configured")
            return list(self._runtimes.values())
        return [self.addressed(name, namespace)]

    def __iter__(self) -> Iterator[ContainerRuntime]:
        return iter(list(self._runtimes.values()))

    def __len__(self) -> int:
        return len(self._runtimes)

    async def close(self) -> None:
        for runtime in self:
            await runtime.close()
